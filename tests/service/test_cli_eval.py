"""Tests of `hindsight eval`: metrics of a small root in table, CSV and JSON; bad flags are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.metrics import Cohort, MetricsQuery, evaluate
from tests.ingest.file_logs import run_cli
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions

POLICY = """[[policies]]
service_id = "fraud"
endpoint_id = "score"
join_on = "context.transaction_id"
window = "90d"
positive = "FRAUD"
"""


def scored(record_id: str, day: float, tx: str, fraud: float, generation: str = "g1") -> dict[str, object]:
    return prediction(
        record_id,
        at(day),
        context={"transaction_id": tx},
        probas={"FRAUD": fraud, "OK": 1 - fraud},
        prediction="FRAUD" if fraud > 0.5 else "OK",
        generation=generation,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("eval") / "root"
    base.mkdir()
    (base / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    write_predictions(
        base,
        [
            scored("r1", 0, "t1", 0.9),
            scored("r2", 0, "t2", 0.2),
            scored("r3", 0, "t3", 0.7),
            scored("r4", 0, "t4", 0.1),  # never labelled: pending
            scored("r5", 1, "t5", 0.6, generation="g2"),
            prediction(
                "c1", at(0), service_id="churn", endpoint_id="value", prediction="10", prediction_value=10.0
            ),
            prediction(
                "c2", at(0), service_id="churn", endpoint_id="value", prediction="4", prediction_value=4.0
            ),
        ],
    )
    write_outcomes(
        base,
        [
            outcome("o1", "FRAUD", at(2), key={"context.transaction_id": "t1"}),
            outcome("o2", "OK", at(2), key={"context.transaction_id": "t2"}),
            outcome("o3", "OK", at(2), key={"context.transaction_id": "t3"}, received_at=at(20)),
            outcome("o5", "FRAUD", at(3), key={"context.transaction_id": "t5"}),
            outcome("c1", 12, at(1), record_id="c1"),
            outcome("c2", 4, at(1), record_id="c2"),
        ],
    )
    return base


def test_json_has_the_hand_computed_metrics(root: Path) -> None:
    result = run_cli(root, "eval", "--endpoint", "fraud/score", "--by", "day", "--format", "json")
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert {k: first[k] for k in ("cohort", "task", "n", "n_labelled", "n_pending", "immature")} == {
        "cohort": "2026-01-01",
        "task": "binary",
        "n": 4,
        "n_labelled": 3,
        "n_pending": 1,
        "immature": False,
    }
    # labels FRAUD, OK, OK for scores 0.9, 0.2, 0.7; predictions FRAUD, OK, FRAUD
    assert (first["accuracy"], first["precision"], first["recall"], first["roc_auc"]) == (
        2 / 3,
        0.5,
        1.0,
        1.0,
    )
    assert [(b["bin"], b["count"]) for b in first["calibration"]] == [(1, 1), (6, 1), (8, 1)]
    assert (second["cohort"], second["n"], second["roc_auc"]) == ("2026-01-02", 1, None)  # one class


def test_json_is_the_library_result(root: Path) -> None:
    result = run_cli(root, "eval", "--by", "none", "--format", "json")
    expected = evaluate(root, MetricsQuery(by=Cohort.none))
    assert json.loads(result.stdout) == json.loads(json.dumps(expected))
    assert [(r["service_id"], r["task"]) for r in expected] == [("churn", "regression"), ("fraud", "binary")]
    churn = expected[0]
    assert (churn["mae"], churn["rmse"]) == (1.0, 2**0.5)


def test_as_of_ignores_outcomes_received_later(root: Path) -> None:
    result = run_cli(
        root, "eval", "--endpoint", "fraud/score", "--by", "none", "--as-of", "2026-01-10", "--format", "json"
    )
    [row] = json.loads(result.stdout)
    assert (row["n"], row["n_labelled"], row["n_pending"]) == (5, 3, 2)


def test_by_generation_and_date_range(root: Path) -> None:
    result = run_cli(
        root,
        "eval",
        "--endpoint",
        "fraud/score",
        "--by",
        "generation",
        "--from",
        "2026-01-02",
        "--format",
        "json",
    )
    assert [(r["cohort"], r["n"]) for r in json.loads(result.stdout)] == [("g2", 1)]


def test_csv_and_table(root: Path) -> None:
    csv_out = run_cli(root, "eval", "--endpoint", "churn/value", "--by", "none", "--format", "csv").stdout
    header, row = csv_out.splitlines()
    assert header.split(",")[:6] == ["service_id", "endpoint_id", "outcome_type", "cohort", "task", "n"]
    assert header.split(",")[-4:] == ["mae", "rmse", "mape", "r2"]
    assert row.startswith("churn,value,label,all,regression,2,")
    # floats in full, as in the JSON and the API's CSV: rmse = sqrt(((12 - 10)^2 + 0) / 2)
    assert row.split(",")[-4:] == ["1.0", repr(2**0.5), repr(2 / 12 / 2), "0.875"]
    table = run_cli(root, "eval", "--endpoint", "churn/value", "--by", "none", env={"COLUMNS": "200"}).stdout
    lines = table.splitlines()
    assert [c.strip() for c in lines[2].split("┃")[1:-1]] == [
        "endpoint",
        "outcome_type",
        "cohort",
        "n",
        "n_labelled",
        "coverage",
        "immature",
        "mae",
        "rmse",
        "mape",
        "r2",
    ]
    assert [c.strip() for c in lines[4].split("│")[1:5]] == ["churn/value", "label", "all", "2"]
    assert [c.strip() for c in lines[4].split("│")[-5:-1]] == ["1", "1.41421", "0.0833333", "0.875"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoint", "fraud"], "error: endpoint must be SERVICE/ENDPOINT, got 'fraud'"),
        (["--by", "month"], "error: --by must be one of day, week, generation, none; got 'month'"),
        (["--as-of", "yesterday"], "error: --as-of 'yesterday' is not an ISO 8601 timestamp"),
        (
            ["--from", "2026-02-01", "--to", "2026-01-01"],
            "error: the from date 2026-02-01 is after the to date 2026-01-01",
        ),
        (["--from", "01/02/2026"], "error: --from '01/02/2026' is not a date (YYYY-MM-DD)"),
        (["--as-of", "2999-01-01"], "error: as-of time 2999-01-01T00:00:00+00:00 is in the future (now is "),
        (
            ["--endpoint", "nope/x"],
            "error: unknown endpoint nope/x: no prediction and no policy names it "
            "(known: churn/value, fraud/score)\n",
        ),
    ],
)
def test_bad_flags_are_one_error_line(root: Path, args: list[str], message: str) -> None:
    result = run_cli(root, "eval", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_a_known_endpoint_without_predictions_in_the_days_asked_has_no_cohorts(root: Path) -> None:
    result = run_cli(root, "eval", "--endpoint", "fraud/score", "--from", "2027-01-01", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_an_endpoint_with_a_policy_but_no_predictions_yet_has_no_cohorts(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    result = run_cli(tmp_path, "eval", "--endpoint", "fraud/score", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_a_bad_policy_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "a"\nendpoint_id = "b"\nwindow = "forever"\n', encoding="utf-8"
    )
    result = run_cli(tmp_path, "eval")
    assert result.returncode == 2
    assert (
        result.stderr == "error: policies[0] (a/b): window='forever' is not a duration: "
        "write a number and a unit s, m, h, d or w (e.g. 90d)\n"
    )


def test_an_empty_root_has_no_cohorts(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "fresh", "eval", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_an_endpoints_task_depends_on_the_as_of_time_not_on_the_days_asked(tmp_path: Path) -> None:
    import datetime as dt

    ab = {"A": 0.7, "B": 0.3}
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), service_id="m", endpoint_id="e", probas=ab, prediction="A"),
            prediction("r2", at(1), service_id="m", endpoint_id="e", probas=ab, prediction="A"),
            prediction(
                "r3", at(31), service_id="m", endpoint_id="e", probas={**ab, "C": 0.0}, prediction="A"
            ),
        ],
    )
    write_outcomes(
        tmp_path, [outcome("o1", "A", at(2), record_id="r1"), outcome("o2", "B", at(2), record_id="r2")]
    )

    def task(**query: object) -> set[str]:
        rows = evaluate(tmp_path, MetricsQuery(by=Cohort.none, **query), policies=[])  # type: ignore[arg-type]
        return {row["task"] for row in rows}

    # three classes were logged by Feb 1st: multiclass, also when only January is asked (was binary)
    assert task() == task(date_to=at(30).date()) == {"multiclass"}
    # on Jan 15th only two classes had been logged: binary (was multiclass, from a later prediction)
    assert task(as_of=dt.datetime(2026, 1, 15, tzinfo=dt.UTC)) == {"binary"}


def test_a_policy_that_matches_no_prediction_is_warned_about(tmp_path: Path) -> None:
    # `service_id = "Fraud"` labelled nothing, and fraud/score fell back to the default policy, exit 0
    (tmp_path / "hindsight.toml").write_text(POLICY.replace('"fraud"', '"Fraud"'), encoding="utf-8")
    write_predictions(tmp_path, [scored("r1", 0, "t1", 0.9)])
    result = run_cli(tmp_path, "eval", "--format", "json")
    assert result.returncode == 0
    assert [row["endpoint_id"] for row in json.loads(result.stdout)] == ["score"]
    assert result.stderr.startswith(
        "warning: the policy for Fraud/score (label) matches no prediction made up"
    )
    (tmp_path / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    assert run_cli(tmp_path, "eval", "--format", "json").stderr == ""
