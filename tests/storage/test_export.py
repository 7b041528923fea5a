"""Tests of labelled exports: columns, formats, filters, the manifest, replays (time travel), refusals."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from service.errors import InputError, QueryError, StorageError
from storage.export import (
    ExportFormat,
    ExportRequest,
    FeatureLayout,
    export_labelled,
    file_sha256,
    manifest_path_for,
    read_manifest,
    replay_export,
)
from storage.layout import Layout
from storage.policies import Policy, policies_from_config
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions

TX = "context.transaction_id"
FRAUD = "fraud", "score"


def policies(**overrides: Any) -> list[Policy]:
    raw = {
        "service_id": "fraud",
        "endpoint_id": "score",
        "join_on": TX,
        "window": "90d",
        "positive": "FRAUD",
        "maturity": "30d",
        "implicit_value": "OK",
    }
    raw.update(overrides)
    return policies_from_config([raw])


def scored(record_id: str, day: float, tx: str, **features: Any) -> dict[str, Any]:
    return prediction(
        record_id,
        at(day),
        context={"transaction_id": tx},
        features=features or None,
        probas={"FRAUD": 0.8, "OK": 0.2},
        prediction="FRAUD",
    )


def seed(root: Path) -> None:
    write_predictions(
        root,
        [
            scored("r1", 0, "t1", amount=12.5, country="GB", card=True, n=3, extra={"a": 1}),
            scored("r2", 1, "t2", amount=7, country="FR", card=False, n=4),
            scored("r3", 50, "t3", amount=1.25, country=None, n=5),  # recent: pending at at(60)
            scored("r4", 2, "t4", amount=3.0, country="DE", card=True, n=6),  # no outcome: implicit OK
            prediction("x1", at(0), service_id="other", endpoint_id="model"),
        ],
    )
    write_outcomes(
        root,
        [
            outcome("o1", "FRAUD", at(3), key={TX: "t1"}, received_at=at(4)),
            outcome("o2", "OK", at(3), key={TX: "t2"}, received_at=at(5)),
        ],
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def test_an_export_has_the_labelled_rows_and_one_column_per_feature(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "out" / "train.parquet"
    result = export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    rows = read_rows(out)
    assert [(r["record_id"], r["label"], r["label_state"]) for r in rows] == [
        ("r1", "FRAUD", "observed"),
        ("r2", "OK", "observed"),
        ("r4", "OK", "implicit"),  # r3 is pending: left out by default
    ]
    first = rows[0]
    assert (first["amount"], first["country"], first["card"], first["n"]) == (12.5, "GB", True, 3)
    assert json.loads(first["extra"]) == {"a": 1}  # a nested feature stays JSON text
    assert rows[2]["extra"] is None  # a feature a prediction does not have is null
    assert rows[1]["amount"] == 7.0  # integers and floats of one feature share DOUBLE
    assert first["probas"] == [("FRAUD", 0.8), ("OK", 0.2)]
    assert first["label_delay_seconds"] == 4 * 86400
    assert rows[2]["label_delay_seconds"] == 30 * 86400
    assert json.loads(first["context"]) == {"transaction_id": "t1"}
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["rows"] == result.rows == 3
    assert manifest["sha256"] == file_sha256(out)
    assert manifest["tables"] == {"predictions": 0, "outcomes": 0}
    assert manifest["request"]["as_of"] == at(60).isoformat()
    assert manifest["request"]["outcome_type"] == "label"
    assert [c["name"] for c in manifest["columns"]][6:11] == ["amount", "card", "country", "extra", "n"]
    assert not list(out.parent.glob(".*partial*"))


def test_label_states_and_days_filter_the_rows(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "pending.parquet"
    request = ExportRequest(FRAUD, as_of=at(60), label_states=("pending", "observed"), date_from=at(1).date())
    export_labelled(tmp_path, out, request, policies=policies())
    assert [(r["record_id"], r["label_state"]) for r in read_rows(out)] == [
        ("r2", "observed"),
        ("r3", "pending"),
    ]
    out2 = tmp_path / "days.parquet"
    request = ExportRequest(FRAUD, as_of=at(60), date_from=at(1).date(), date_to=at(2).date())
    export_labelled(tmp_path, out2, request, policies=policies())
    assert [r["record_id"] for r in read_rows(out2)] == ["r2", "r4"]  # both ends included


def test_csv_and_jsonl_write_the_same_rows_with_probas_as_json(tmp_path: Path) -> None:
    seed(tmp_path)
    csv_out, jsonl_out = tmp_path / "t.csv", tmp_path / "t.jsonl"
    export_labelled(
        tmp_path, csv_out, ExportRequest(FRAUD, as_of=at(60), fmt=ExportFormat.csv), policies=policies()
    )
    export_labelled(
        tmp_path, jsonl_out, ExportRequest(FRAUD, as_of=at(60), fmt=ExportFormat.jsonl), policies=policies()
    )
    with csv_out.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    lines = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    assert [r["record_id"] for r in table] == [r["record_id"] for r in lines] == ["r1", "r2", "r4"]
    # JSON values are text in CSV and objects in JSONL
    assert json.loads(table[0]["probas"]) == lines[0]["probas"] == {"FRAUD": 0.8, "OK": 0.2}
    assert json.loads(table[0]["context"]) == lines[0]["context"] == {"transaction_id": "t1"}
    assert json.loads(table[0]["extra"]) == lines[0]["extra"] == {"a": 1}
    assert table[0]["amount"] == "12.5" and lines[0]["amount"] == 12.5


def test_features_as_json_keep_one_text_column(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "f.parquet"
    request = ExportRequest(FRAUD, as_of=at(60), features=FeatureLayout.json)
    export_labelled(tmp_path, out, request, policies=policies())
    rows = read_rows(out)
    assert "amount" not in rows[0]
    assert json.loads(rows[0]["features"])["country"] == "GB"


def test_a_replay_gives_the_same_bytes_after_new_outcomes_and_predictions(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    # later: a correction received before the as-of time would change r1 if it were read
    write_outcomes(tmp_path, [outcome("o1b", "OK", at(3.5), key={TX: "t1"}, received_at=at(6))])
    write_predictions(tmp_path, [scored("r5", 0.5, "t5", amount=1.0, country="GB", card=True, n=1)])
    fresh = tmp_path / "fresh.parquet"
    export_labelled(tmp_path, fresh, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert [(r["record_id"], r["label"]) for r in read_rows(fresh)][:3] == [
        ("r1", "OK"),
        ("r5", "OK"),
        ("r2", "OK"),
    ]
    replayed = tmp_path / "replayed.parquet"
    result = replay_export(read_manifest(manifest_path_for(out)), replayed)
    assert replayed.read_bytes() == out.read_bytes()
    assert result.manifest["tables"] == {"predictions": 0, "outcomes": 0}
    assert result.manifest["replay_of"] == str(manifest_path_for(out).resolve())


def test_feature_columns_keep_one_order_whatever_order_the_days_log_them_in(tmp_path: Path) -> None:
    # the order came from json_group_structure, which merges the day files' structures as the threads
    # finish: runs of one export ordered the columns differently and replays failed at random
    for day in range(6):
        features = {"zeta": 1, "amount": 1.5, "country": "FR"} if day % 2 else {"country": "FR", "zeta": 2}
        write_predictions(
            tmp_path, [prediction(f"r{day}-{i}", at(day, i / 4), features=features) for i in range(20)]
        )
    request = ExportRequest(FRAUD, as_of=at(9), fmt=ExportFormat.csv, label_states=("pending",))
    out = tmp_path / "a.csv"
    first = export_labelled(tmp_path, out, request, policies=[])
    assert [c["name"] for c in first.manifest["columns"]][6:9] == ["amount", "country", "zeta"]
    for n in range(6):
        again = export_labelled(tmp_path, tmp_path / "b.csv", request, policies=[], overwrite=True)
        assert again.manifest["sha256"] == first.manifest["sha256"], n
    # a manifest written before (its columns in another order) replays in its own order
    manifest_path = manifest_path_for(out)
    raw = json.loads(manifest_path.read_text())
    old_order = [raw["columns"][i] for i in (0, 1, 2, 3, 4, 5, 8, 6, 7)] + raw["columns"][9:]
    old = tmp_path / "old.csv"
    export_labelled(tmp_path, old, request, policies=[], feature_order=["zeta", "amount", "country"])
    raw.update(columns=old_order, file=old.name, sha256=file_sha256(old))
    old_manifest = manifest_path_for(old)
    old_manifest.write_text(json.dumps(raw))
    replayed = replay_export(read_manifest(old_manifest), tmp_path / "replayed.csv")
    assert (tmp_path / "replayed.csv").read_bytes() == old.read_bytes()
    assert [c["name"] for c in replayed.manifest["columns"]][6:9] == ["zeta", "amount", "country"]


def test_a_replay_uses_the_manifest_policies_not_the_current_ones(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    (tmp_path / "hindsight.toml").write_text('[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\n')
    replay_export(read_manifest(manifest_path_for(out)), tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == out.read_bytes()


def test_a_table_that_did_not_exist_stays_empty_in_a_replay(tmp_path: Path) -> None:
    write_predictions(tmp_path, [scored("r1", 0, "t1", amount=1.0)])
    out = tmp_path / "train.parquet"
    request = ExportRequest(FRAUD, as_of=at(60), label_states=("observed", "implicit", "pending"))
    export_labelled(tmp_path, out, request, policies=policies(maturity="90d"))
    assert json.loads(manifest_path_for(out).read_text())["tables"]["outcomes"] is None
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(1), key={TX: "t1"})])
    replay_export(read_manifest(manifest_path_for(out)), tmp_path / "again.parquet")
    assert [r["label_state"] for r in read_rows(tmp_path / "again.parquet")] == ["pending"]


def test_a_replay_of_a_vacuumed_version_says_which_files_are_gone(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    table = DeltaTable(str(Layout(tmp_path).outcomes))
    table.delete("outcome_id = 'o2'")
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(StorageError, match=r"at version 0 needs 1 data file\(s\) that are gone"):
        replay_export(read_manifest(manifest_path_for(out)), tmp_path / "again.parquet")
    assert not (tmp_path / "again.parquet").exists()


def test_a_manifest_naming_a_version_not_yet_written_is_refused(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    manifest = json.loads(manifest_path_for(out).read_text())
    manifest["tables"]["outcomes"] = 7
    edited = tmp_path / "edited.manifest.json"
    edited.write_text(json.dumps(manifest))
    with pytest.raises(StorageError, match="has no version 7 yet: its latest version is 0"):
        replay_export(read_manifest(edited), tmp_path / "again.parquet")


def test_a_replay_with_other_rows_than_recorded_is_an_error_and_keeps_the_file(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    manifest = json.loads(manifest_path_for(out).read_text())
    manifest["rows"] = 2  # the same bytes, another count: only the SHA-256 was compared
    edited = tmp_path / "edited.manifest.json"
    edited.write_text(json.dumps(manifest))
    with pytest.raises(QueryError, match=r"3 rows \(original 2\).*kept for inspection"):
        replay_export(read_manifest(edited), tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == out.read_bytes()


def test_a_replay_that_differs_is_an_error(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    manifest = json.loads(manifest_path_for(out).read_text())
    manifest["request"]["label_states"] = ["observed"]
    edited = tmp_path / "edited.manifest.json"
    edited.write_text(json.dumps(manifest))
    with pytest.raises(QueryError, match=r"differs from the original: 2 rows \(original 3\)"):
        replay_export(read_manifest(edited), tmp_path / "again.parquet")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(kind="other"), "is not a hindsight export manifest"),
        (lambda m: m.update(manifest_version=2), "manifest_version 2 is not supported"),
        (lambda m: m["request"].pop("as_of"), "is damaged: KeyError: 'as_of'"),
        (lambda m: m["tables"].update(outcomes="3"), "table versions must be integers or null"),
        (lambda m: m.pop("file"), "is damaged: KeyError: 'file'"),
        (lambda m: m["policies"][0].update(window="soon"), "window='soon' is not a duration"),
    ],
)
def test_a_damaged_manifest_is_refused_with_what_is_wrong(tmp_path: Path, edit: Any, message: str) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    manifest = json.loads(manifest_path_for(out).read_text())
    edit(manifest)
    edited = tmp_path / "edited.manifest.json"
    edited.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        read_manifest(edited)


def test_an_export_with_no_rows_writes_the_columns_and_replays(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "none.csv"
    request = ExportRequest(FRAUD, as_of=at(60), date_from=at(100).date(), fmt=ExportFormat.csv)
    result = export_labelled(tmp_path, out, request, policies=policies())
    assert result.rows == 0
    assert out.read_text().startswith("record_id,ts,day,service_id,endpoint_id,generation,context,")
    replay_export(read_manifest(result.manifest_path), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists; pass --force"):
        export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert out.read_bytes() == b"precious"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies(), overwrite=True)
    assert len(read_rows(out)) == 3


def test_a_failed_export_leaves_the_previous_file_and_no_partial(tmp_path: Path) -> None:
    write_predictions(tmp_path, [scored("r1", 0, "t1", big=2**64 - 1), scored("r2", 0, "t2", big=1)])
    write_outcomes(
        tmp_path, [outcome("o1", "OK", at(1), key={TX: "t1"}), outcome("o2", "OK", at(1), key={TX: "t2"})]
    )
    out = tmp_path / "train.parquet"
    out.write_bytes(b"previous")
    with pytest.raises(QueryError, match="--features json"):
        export_labelled(
            tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies(), overwrite=True
        )
    assert out.read_bytes() == b"previous"
    assert not manifest_path_for(out).exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    request = ExportRequest(FRAUD, as_of=at(60), features=FeatureLayout.json)
    export_labelled(tmp_path, out, request, policies=policies(), overwrite=True)
    assert json.loads(read_rows(out)[0]["features"]) == {"big": 2**64 - 1}


@pytest.mark.parametrize(
    "values",
    [
        [12345678901234567890123, 7],  # typed DOUBLE by DuckDB: was 1.2345678901234568e+22, silently
        [9007199254740993, 1.5],  # beyond 2^53 next to a decimal
    ],
)
def test_integers_a_number_column_would_round_are_refused(tmp_path: Path, values: list[Any]) -> None:
    write_predictions(tmp_path, [scored(f"r{i}", 0, f"t{i}", big=v) for i, v in enumerate(values)])
    write_outcomes(tmp_path, [outcome(f"o{i}", "OK", at(1), key={TX: f"t{i}"}) for i in range(len(values))])
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=r"feature\(s\) \['big'\] hold integers too large .*--features json"):
        export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    request = ExportRequest(FRAUD, as_of=at(60), features=FeatureLayout.json)
    export_labelled(tmp_path, out, request, policies=policies())
    assert [json.loads(r["features"])["big"] for r in read_rows(out)] == values


def test_exact_doubles_and_integers_export_as_numbers(tmp_path: Path) -> None:
    write_predictions(tmp_path, [scored("r0", 0, "t0", x=2**64), scored("r1", 0, "t1", x=0.25)])
    write_outcomes(tmp_path, [outcome(f"o{i}", "OK", at(1), key={TX: f"t{i}"}) for i in range(2)])
    out = tmp_path / "t.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert [r["x"] for r in read_rows(out)] == [float(2**64), 0.25]  # 2^64 is a double exactly


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"label": 1}, "the name 'label', as the column 'label'"),
        ({"Day": 1}, "the name 'Day', as the column 'day'"),
        ({"": 1}, "an empty name"),
    ],
)
def test_a_feature_that_cannot_be_a_column_is_refused(
    tmp_path: Path, features: dict[str, Any], message: str
) -> None:
    write_predictions(tmp_path, [scored("r1", 0, "t1", **features)])
    write_outcomes(tmp_path, [outcome("o1", "OK", at(1), key={TX: "t1"})])
    with pytest.raises(InputError, match=message):
        export_labelled(
            tmp_path, tmp_path / "t.parquet", ExportRequest(FRAUD, as_of=at(60)), policies=policies()
        )
    assert not (tmp_path / "t.parquet").exists()


def test_features_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    write_predictions(tmp_path, [scored("r1", 0, "t1", Amount=1), scored("r2", 0, "t2", amount=2)])
    write_outcomes(
        tmp_path, [outcome("o1", "OK", at(1), key={TX: "t1"}), outcome("o2", "OK", at(1), key={TX: "t2"})]
    )
    with pytest.raises(InputError, match="the name 'amount', as the column 'Amount'"):
        export_labelled(
            tmp_path, tmp_path / "t.parquet", ExportRequest(FRAUD, as_of=at(60)), policies=policies()
        )


def test_the_outcome_type_must_be_chosen_when_the_endpoint_has_several(tmp_path: Path) -> None:
    seed(tmp_path)
    several = policies_from_config(
        [
            {"service_id": "fraud", "endpoint_id": "score", "join_on": TX},
            {"service_id": "fraud", "endpoint_id": "score", "join_on": TX, "outcome_type": "chargeback"},
        ]
    )
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=r"several outcome types \(label, chargeback\); choose one"):
        export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=several)
    with pytest.raises(
        InputError, match="no labels of outcome type 'refund'; its policies use label, chargeback"
    ):
        export_labelled(tmp_path, out, ExportRequest(FRAUD, "refund", as_of=at(60)), policies=several)
    export_labelled(tmp_path, out, ExportRequest(FRAUD, "label", as_of=at(60)), policies=several)
    assert [r["record_id"] for r in read_rows(out)] == ["r1", "r2"]


def test_an_endpoint_without_policy_exports_its_record_id_labels(tmp_path: Path) -> None:
    seed(tmp_path)
    write_outcomes(tmp_path, [outcome("ox", "yes", at(1), record_id="x1")])
    out = tmp_path / "t.parquet"
    export_labelled(tmp_path, out, ExportRequest(("other", "model"), as_of=at(60)), policies=policies())
    assert [(r["record_id"], r["label"]) for r in read_rows(out)] == [("x1", "yes")]
    with pytest.raises(InputError, match="it has no policy, so only the default applies: label"):
        export_labelled(
            tmp_path, tmp_path / "u.parquet", ExportRequest(("other", "model"), "refund"), policies=[]
        )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ExportRequest(("fraud", "scor")), "unknown endpoint fraud/scor"),
        (
            ExportRequest(FRAUD, label_states=("seen",)),
            "label states must be some of observed, implicit, pending",
        ),
        (ExportRequest(FRAUD, label_states=()), "got none"),
        (ExportRequest(FRAUD, date_from=at(2).date(), date_to=at(1).date()), "is after the to date"),
        (ExportRequest(FRAUD, as_of=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)), "is in the future"),
    ],
)
def test_bad_requests_are_refused_before_writing(
    tmp_path: Path, request_: ExportRequest, message: str
) -> None:
    seed(tmp_path)
    with pytest.raises(InputError, match=message):
        export_labelled(tmp_path, tmp_path / "t.parquet", request_, policies=policies())
    assert not (tmp_path / "t.parquet").exists()


def test_an_export_cannot_replace_its_own_source_or_a_folder(tmp_path: Path) -> None:
    seed(tmp_path)
    out = tmp_path / "train.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    with pytest.raises(InputError, match="is the export this manifest describes"):
        replay_export(read_manifest(manifest_path_for(out)), out, overwrite=True)
    with pytest.raises(InputError, match="is a folder"):
        export_labelled(tmp_path, tmp_path, ExportRequest(FRAUD, as_of=at(60)), policies=policies())


def _strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_nan_and_infinity_stay_in_parquet_and_are_null_in_jsonl(tmp_path: Path) -> None:
    # the ingest accepts NaN and Infinity; JSONL lines holding them were not JSON (review finding), and
    # a NaN feature was refused as an integer too large
    nan_probas = prediction("r1", at(0), context={"transaction_id": "t1"}, probas={"FRAUD": float("nan")})
    write_predictions(tmp_path, [scored("r0", 0, "t0", x=float("nan"), y=1.5), nan_probas])
    write_predictions(tmp_path, [scored("r2", 0, "t2", x=float("-inf"), y=2.0)])
    write_outcomes(tmp_path, [outcome(f"o{i}", "OK", at(1), key={TX: f"t{i}"}) for i in range(3)])
    parquet, jsonl = tmp_path / "t.parquet", tmp_path / "t.jsonl"
    export_labelled(tmp_path, parquet, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    xs = [r["x"] for r in read_rows(parquet)]
    assert math.isnan(xs[0]) and xs[1] is None and xs[2] == float("-inf")
    request = ExportRequest(FRAUD, as_of=at(60), fmt=ExportFormat.jsonl)
    export_labelled(tmp_path, jsonl, request, policies=policies())
    rows = [_strict_json(line) for line in jsonl.read_text().splitlines()]
    assert [(r["record_id"], r["x"], r["probas"]) for r in rows] == [
        ("r0", None, {"FRAUD": 0.8, "OK": 0.2}),
        ("r1", None, {"FRAUD": None}),
        ("r2", None, {"FRAUD": 0.8, "OK": 0.2}),
    ]


def test_a_number_beyond_a_double_is_refused(tmp_path: Path) -> None:
    rows = [
        prediction("r0", at(0), context={"transaction_id": "t0"}, features='{"big": 1e400, "n": {"a": 1}}'),
        prediction("r1", at(0), context={"transaction_id": "t1"}, features='{"big": 2.5, "n": null}'),
    ]
    write_predictions(tmp_path, rows)
    write_outcomes(tmp_path, [outcome(f"o{i}", "OK", at(1), key={TX: f"t{i}"}) for i in range(2)])
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=r"feature\(s\) \['big'\] hold numbers beyond a double's range"):
        export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert not out.exists()


def test_a_json_null_in_a_nested_feature_is_no_value(tmp_path: Path) -> None:
    rows = [
        prediction("r0", at(0), context={"transaction_id": "t0"}, features='{"n": {"a": 1}}'),
        prediction("r1", at(0), context={"transaction_id": "t1"}, features='{"n": null}'),
    ]
    write_predictions(tmp_path, rows)
    write_outcomes(tmp_path, [outcome(f"o{i}", "OK", at(1), key={TX: f"t{i}"}) for i in range(2)])
    out = tmp_path / "t.parquet"
    export_labelled(tmp_path, out, ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert [r["n"] for r in read_rows(out)] == ['{"a":1}', None]  # was the text 'null'


def test_an_output_folder_that_cannot_be_made_fails_before_the_query(tmp_path: Path) -> None:
    seed(tmp_path)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(StorageError, match=r"cannot create the folder .*afile/sub: .*afile is not a folder"):
        export_labelled(
            tmp_path, tmp_path / "afile" / "sub" / "t.parquet", ExportRequest(FRAUD), policies=policies()
        )
    # refused for another reason, an export leaves no empty folder behind
    with pytest.raises(InputError, match="unknown endpoint"):
        export_labelled(
            tmp_path, tmp_path / "new" / "t.parquet", ExportRequest(("fraud", "scor")), policies=policies()
        )
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("logged", "column"),
    [
        ({"context": '{"transaction_id": "t0", "z": NaN}'}, "context"),
        ({"features": '{"n": {"a": NaN}}'}, "n"),
    ],
)
def test_a_jsonl_export_refuses_nan_it_would_write_as_logged(
    tmp_path: Path, logged: dict[str, str], column: str
) -> None:
    # context, and nested features, are written as logged: their NaN made lines that are not JSON
    row = prediction("r0", at(0), **{"context": '{"transaction_id": "t0"}', **logged})
    write_predictions(tmp_path, [row])
    write_outcomes(tmp_path, [outcome("o0", "OK", at(1), key={TX: "t0"})])
    request = ExportRequest(FRAUD, as_of=at(60), fmt=ExportFormat.jsonl)
    with pytest.raises(InputError, match=f"^{column} of some rows hold NaN or Infinity, which JSON cannot"):
        export_labelled(tmp_path, tmp_path / "t.jsonl", request, policies=policies())
    export_labelled(tmp_path, tmp_path / "t.parquet", ExportRequest(FRAUD, as_of=at(60)), policies=policies())
    assert len(read_rows(tmp_path / "t.parquet")) == 1
