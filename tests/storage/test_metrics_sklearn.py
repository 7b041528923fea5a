"""Property tests: every metric of storage.metrics equals scikit-learn's on random data (to 1e-9).

compute_metrics reads these relations of a connection: `_hs_predictions`, `_hs_policies` and the table
macros `_hs_won_as_of` / `_hs_labelled_with_won` (the label join; tested in test_labelled.py). Here they
are real DuckDB objects filled with generated rows, so thousands of cohorts run in seconds; the
end-to-end path through real Delta tables is covered by tests/service/test_cli_eval.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from service.errors import InputError
from storage.label_sql import PREDICTIONS_SOURCE, create_policies_table
from storage.metrics import Cohort, MetricsQuery, compute_metrics
from storage.policies import Policy

DAY = dt.date(2026, 1, 1)
TS = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Scores mix a few values that tie often (and sit on calibration bin edges) with arbitrary ones.
SCORES = st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]), st.floats(0, 1))


@contextmanager
def _connection(rows: list[dict[str, Any]], policies: list[Policy]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    schema = pa.schema(
        [
            ("service_id", pa.string()),
            ("endpoint_id", pa.string()),
            ("outcome_type", pa.string()),
            ("day", pa.date32()),
            ("generation", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("prediction", pa.string()),
            ("prediction_value", pa.float64()),
            ("probas", pa.map_(pa.string(), pa.float64())),
            ("label", pa.string()),
            ("label_value", pa.float64()),
            ("label_state", pa.string()),
        ]
    )
    full = [
        {
            "service_id": "svc",
            "endpoint_id": "ep",
            "outcome_type": "label",
            "day": DAY,
            "generation": "g1",
            "ts": TS,
            "prediction_value": None,
            "probas": None,
            "label_value": None,
            "label_state": "observed",
            **row,
        }
        for row in rows
    ]
    con.execute("SET TimeZone = 'UTC'")
    con.register("_rows", pa.Table.from_pylist(full, schema=schema))
    con.execute("CREATE TABLE _t AS SELECT * FROM _rows")
    con.execute(f"CREATE VIEW {PREDICTIONS_SOURCE} AS SELECT * FROM _t")
    con.execute("CREATE MACRO _hs_won_as_of(as_of) AS TABLE SELECT NULL AS record_id")
    con.execute("CREATE MACRO _hs_labelled_with_won(as_of) AS TABLE SELECT * FROM _t")
    create_policies_table(con, policies)
    try:
        yield con
    finally:
        con.close()


def _metrics(rows: list[dict[str, Any]], policies: list[Policy]) -> dict[str, Any]:
    with _connection(rows, policies) as con:
        [result] = compute_metrics(con, MetricsQuery(by=Cohort.none))
    return result


def _close(ours: Any, theirs: float) -> bool:
    if theirs is None or (isinstance(theirs, float) and not math.isfinite(theirs)):
        return ours is None
    return ours is not None and math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12)


def _sk(fn: Any, *args: Any, **kwargs: Any) -> float:
    """scikit-learn's value, NaN where it raises (undefined) — its warnings are not ours to fail on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(fn(*args, **kwargs))
        except ValueError:
            return math.nan


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), SCORES, st.booleans()), min_size=1, max_size=60))
def test_binary_metrics_match_sklearn(data: list[tuple[bool, float, bool]]) -> None:
    y = np.array([int(t) for t, _, _ in data])
    score = np.array([s for _, s, _ in data])
    yhat = np.array([int(p) for _, _, p in data])
    rows = [
        {
            "label": "FRAUD" if t else "OK",
            "prediction": "FRAUD" if p else "OK",
            "probas": [("FRAUD", s), ("OK", 1 - s)],
        }
        for t, s, p in data
    ]
    got = _metrics(rows, [Policy("svc", "ep", positive="FRAUD")])
    assert (got["task"], got["n"], got["n_labelled"], got["positive"]) == (
        "binary",
        len(data),
        len(data),
        "FRAUD",
    )
    two_classes = len(set(y)) == 2
    expected = {
        "positive_rate": float(y.mean()),
        "accuracy": _sk(skm.accuracy_score, y, yhat),
        "precision": _sk(skm.precision_score, y, yhat, zero_division=np.nan),
        "recall": _sk(skm.recall_score, y, yhat, zero_division=np.nan),
        "f1": _sk(skm.f1_score, y, yhat, zero_division=np.nan),
        "roc_auc": _sk(skm.roc_auc_score, y, score) if two_classes else math.nan,
        "pr_auc": _sk(skm.average_precision_score, y, score) if y.any() else math.nan,
        "log_loss": _sk(skm.log_loss, y, score, labels=[0, 1]),
        "brier": _sk(skm.brier_score_loss, y, score, pos_label=1),
    }
    for name, value in expected.items():
        assert _close(got[name], value), (name, got[name], value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed, predicted = calibration_curve(y, score, n_bins=10, pos_label=1)
    bins = got["calibration"]
    assert [b["count"] for b in bins] and sum(b["count"] for b in bins) == len(data)
    assert all(_close(b["observed_rate"], o) for b, o in zip(bins, observed, strict=True))
    assert all(_close(b["mean_predicted"], p) for b, p in zip(bins, predicted, strict=True))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 2), st.booleans(), SCORES), min_size=1, max_size=80
    )
)
def test_ranking_metrics_per_cohort_match_sklearn(data: list[tuple[str, int, bool, float]]) -> None:
    # roc_auc and pr_auc are computed for all cohorts of all endpoints in one pass over sorted rows; each
    # (endpoint, day) cohort must still get scikit-learn's value for its own rows alone (ties included).
    rows = [
        {
            "endpoint_id": endpoint,
            "day": DAY + dt.timedelta(days=day),
            "label": "FRAUD" if t else "OK",
            "prediction": "OK",
            "probas": [("FRAUD", s), ("OK", 1 - s)],
        }
        for endpoint, day, t, s in data
    ]
    policies = [Policy("svc", "a", positive="FRAUD"), Policy("svc", "b", positive="FRAUD")]
    with _connection(rows, policies) as con:
        got = {(r["endpoint_id"], r["cohort"]): r for r in compute_metrics(con, MetricsQuery(by=Cohort.day))}
    cohorts = {(endpoint, (DAY + dt.timedelta(days=day)).isoformat()) for endpoint, day, _, _ in data}
    assert set(got) == cohorts
    for endpoint, cohort in cohorts:
        mine = [
            (t, s)
            for e, d, t, s in data
            if (e, (DAY + dt.timedelta(days=d)).isoformat()) == (endpoint, cohort)
        ]
        y = np.array([int(t) for t, _ in mine])
        score = np.array([s for _, s in mine])
        roc = _sk(skm.roc_auc_score, y, score) if len(set(y)) == 2 else math.nan
        ap = _sk(skm.average_precision_score, y, score) if y.any() else math.nan
        row = got[(endpoint, cohort)]
        assert _close(row["roc_auc"], roc), (endpoint, cohort, row["roc_auc"], roc)
        assert _close(row["pr_auc"], ap), (endpoint, cohort, row["pr_auc"], ap)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.sampled_from("abcd"),
            st.tuples(*[st.integers(0, 5)] * 3),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_multiclass_metrics_match_sklearn(data: list[tuple[str, str, tuple[int, int, int]]]) -> None:
    classes = ["a", "b", "c"]
    probas = []
    for _, _, weights in data:
        total = sum(weights) or 1
        probas.append([w / total if sum(weights) else 1 / 3 for w in weights])
    rows = [
        {"label": t, "prediction": p, "probas": list(zip(classes, ps, strict=True))}
        for (t, p, _), ps in zip(data, probas, strict=True)
    ]
    got = _metrics(rows, [])
    y = [t for t, _, _ in data]
    yhat = [p for _, p, _ in data]
    assert got["task"] == "multiclass"
    assert _close(got["accuracy"], _sk(skm.accuracy_score, y, yhat))
    assert _close(got["macro_f1"], _sk(skm.f1_score, y, yhat, average="macro", zero_division=0))
    assert _close(got["log_loss"], _sk(skm.log_loss, y, np.array(probas), labels=classes))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(-200, 200).map(lambda i: i / 4), st.integers(-200, 200).map(lambda i: i / 4)),
        min_size=1,
        max_size=60,
    )
)
def test_regression_metrics_match_sklearn(data: list[tuple[float, float]]) -> None:
    rows = [{"label": str(t), "label_value": t, "prediction": str(p), "prediction_value": p} for t, p in data]
    got = _metrics(rows, [])
    y = np.array([t for t, _ in data])
    yhat = np.array([p for _, p in data])
    assert got["task"] == "regression"
    assert _close(got["mae"], _sk(skm.mean_absolute_error, y, yhat))
    assert _close(got["rmse"], _sk(skm.root_mean_squared_error, y, yhat))
    assert _close(got["mape"], _sk(skm.mean_absolute_percentage_error, y, yhat))
    r2 = _sk(skm.r2_score, y, yhat, force_finite=False) if len(data) >= 2 else math.nan
    assert _close(got["r2"], r2)


def test_pending_rows_do_not_count_and_make_a_cohort_immature() -> None:
    rows = [
        {"label": "FRAUD", "prediction": "FRAUD", "probas": [("FRAUD", 0.9), ("OK", 0.1)]},
        {"label": "OK", "prediction": "FRAUD", "probas": [("FRAUD", 0.6), ("OK", 0.4)]},
        *[
            {
                "label": None,
                "label_state": "pending",
                "prediction": "OK",
                "probas": [("FRAUD", 0.2), ("OK", 0.8)],
            }
            for _ in range(3)
        ],
    ]
    got = _metrics(rows, [])  # two classes in probas: binary, positive = the greater name
    assert {
        k: got[k] for k in ("task", "positive", "n", "n_labelled", "n_pending", "coverage", "immature")
    } == {
        "task": "binary",
        "positive": "OK",
        "n": 5,
        "n_labelled": 2,
        "n_pending": 3,
        "coverage": 0.4,
        "immature": True,
    }
    # positive OK: the FRAUD row (score 0.1) is predicted right, the OK row (score 0.4) wrong
    assert (got["accuracy"], got["roc_auc"], got["recall"], got["precision"]) == (0.5, 1.0, 0.0, None)


def _binary_rows(endpoint: str, day: dt.date, scores: list[tuple[bool, float]]) -> list[dict[str, Any]]:
    return [
        {
            "endpoint_id": endpoint,
            "day": day,
            "label": "yes" if t else "no",
            "prediction": "yes" if s > 0.5 else "no",
            "probas": [("yes", s), ("no", 1 - s)],
        }
        for t, s in scores
    ]


def test_endpoints_tasks_and_days_in_one_call_equal_each_alone() -> None:
    # compute_metrics numbers the (endpoint, outcome_type) groups and reads task columns per group: mixing
    # binary endpoints with different positives, a multiclass and a regression endpoint and two days in one
    # call must give, for every cohort, what the same rows give alone.
    day2 = DAY + dt.timedelta(days=1)
    a1 = _binary_rows("a", DAY, [(True, 0.9), (False, 0.2), (True, 0.4), (False, 0.6)])
    a2 = _binary_rows("a", day2, [(True, 0.7), (False, 0.1), (False, 0.3)])
    b1 = _binary_rows("b", DAY, [(True, 0.3), (False, 0.8), (True, 0.55)])
    m1 = [
        {"endpoint_id": "m", "label": t, "prediction": p, "probas": [("x", 0.5), ("y", 0.3), ("z", 0.2)]}
        for t, p in [("x", "x"), ("y", "x"), ("z", "z")]
    ]
    r2 = [
        {"endpoint_id": "r", "day": day2, "label": str(t), "label_value": t, "prediction_value": p}
        for t, p in [(1.0, 1.5), (3.0, 2.0), (-2.0, -1.0)]
    ]
    policies = [Policy("svc", "a", positive="yes"), Policy("svc", "b", positive="no")]
    with _connection([*a1, *a2, *b1, *m1, *r2], policies) as con:
        con.execute("SET preserve_insertion_order = true")
        together = compute_metrics(con, MetricsQuery(by=Cohort.day))
        [(kept,)] = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
    assert kept is True  # the caller's setting is restored
    alone = []
    for rows in (a1, a2, b1, m1, r2):
        with _connection(rows, policies) as con:
            alone.extend(compute_metrics(con, MetricsQuery(by=Cohort.day)))
    key = ("endpoint_id", "cohort")
    assert [(r["endpoint_id"], r["cohort"]) for r in together] == [
        ("a", "2026-01-01"),
        ("a", "2026-01-02"),
        ("b", "2026-01-01"),
        ("m", "2026-01-01"),
        ("r", "2026-01-02"),
    ]
    by_key = {tuple(r[k] for k in key): r for r in alone}
    for row in together:
        other = by_key[tuple(row[k] for k in key)]
        assert row.keys() == other.keys()
        for name, value in row.items():
            if isinstance(value, float):
                assert math.isclose(value, other[name], rel_tol=1e-12), (row["endpoint_id"], name)
            else:
                assert value == other[name], (row["endpoint_id"], name)
    assert {r["endpoint_id"]: r["task"] for r in together} == {
        "a": "binary",
        "b": "binary",
        "m": "multiclass",
        "r": "regression",
    }
    assert [r["positive"] for r in together if r["task"] == "binary"] == ["yes", "yes", "no"]


def test_rows_without_a_finite_score_are_left_out_of_every_score_metric() -> None:
    # A logged "NaN" proba, a row without probas (an ignored prediction) and a row whose probas lack the
    # positive class have no score: accuracy & co. count them, the score metrics equal scikit-learn's on
    # the scored rows alone, whatever the row order, and nothing in the output is NaN.
    data: list[tuple[bool, bool, list[tuple[str, float]] | None]] = [
        (True, True, [("FRAUD", math.nan), ("OK", 0.5)]),
        (False, False, [("FRAUD", math.nan), ("OK", 0.5)]),
        (False, False, [("FRAUD", 0.5), ("OK", 0.5)]),
        (True, True, [("FRAUD", 0.7), ("OK", 0.3)]),
        (True, False, None),
        (False, False, [("OK", 0.9)]),
        (False, True, [("FRAUD", 0.2), ("OK", 0.8)]),
        (True, True, [("FRAUD", 0.9), ("OK", 0.1)]),
    ]
    scores = [(t, dict(probas or []).get("FRAUD", math.nan)) for t, _, probas in data]
    scored = [(t, sc) for t, sc in scores if not math.isnan(sc)]
    y = np.array([int(t) for t, _ in scored])
    score = np.array([sc for _, sc in scored])
    policies = [Policy("svc", "ep", positive="FRAUD")]
    seen = []
    for order in (data, data[::-1], data[1::2] + data[::2]):
        rows = [
            {"label": "FRAUD" if t else "OK", "prediction": "FRAUD" if p else "OK", "probas": probas}
            for t, p, probas in order
        ]
        row = _metrics(rows, policies)
        json.dumps(row, allow_nan=False)  # valid JSON: no NaN anywhere, calibration included
        seen.append(row)
    row = seen[0]
    assert (row["n_labelled"], row["n_scored"], row["n_unknown_label"]) == (8, 4, 0)
    all_y = np.array([int(t) for t, _, _ in data])
    all_yhat = np.array([int(p) for _, p, _ in data])
    assert _close(row["accuracy"], _sk(skm.accuracy_score, all_y, all_yhat))
    assert _close(row["roc_auc"], _sk(skm.roc_auc_score, y, score))
    assert _close(row["pr_auc"], _sk(skm.average_precision_score, y, score))
    assert _close(row["log_loss"], _sk(skm.log_loss, y, score, labels=[0, 1]))
    assert _close(row["brier"], _sk(skm.brier_score_loss, y, score, pos_label=1))
    assert sum(b["count"] for b in row["calibration"]) == 4
    for other in seen[1:]:
        for name in ("n_scored", "accuracy", "roc_auc", "pr_auc", "log_loss", "brier"):
            assert math.isclose(other[name], row[name], rel_tol=1e-12), name


def test_a_misspelt_positive_scores_nothing_instead_of_looking_perfect() -> None:
    rows = [
        {"label": label, "prediction": label, "probas": [("churn", sc), ("stay", 1 - sc)]}
        for label, sc in (("churn", 0.8), ("stay", 0.3), ("churn", 0.6))
    ]
    row = _metrics(rows, [Policy("svc", "ep", positive="Churn")])
    assert (row["n_labelled"], row["n_scored"]) == (3, 0)
    assert row["log_loss"] is None and row["brier"] is None and row["roc_auc"] is None
    # no label or prediction is "Churn": accuracy is 1.0 (every row a true negative), which only
    # n_scored = 0 and positive_rate = 0 give away (documented in design.md, Metrics)
    assert (row["positive_rate"], row["accuracy"]) == (0.0, 1.0)


def test_numeric_labels_match_numeric_classes_by_value() -> None:
    # A binary classifier logs classes "0"/"1"; the labels come from a CSV written by pandas: "1.0"/"0.0".
    data = [(1, 0.8, 1), (0, 0.3, 0), (1, 0.4, 0), (0, 0.6, 1)]
    rows = [
        {
            "label": f"{t}.0",
            "label_value": float(t),
            "prediction": str(p),
            "prediction_value": float(p),
            "probas": [("0", 1 - sc), ("1", sc)],
        }
        for t, sc, p in data
    ]
    row = _metrics(rows, [Policy("svc", "ep", positive="1")])
    y = np.array([t for t, _, _ in data])
    score = np.array([sc for _, sc, _ in data])
    yhat = np.array([p for _, _, p in data])
    assert (row["positive_rate"], row["n_unknown_label"], row["n_scored"]) == (0.5, 0, 4)
    assert _close(row["precision"], _sk(skm.precision_score, y, yhat))
    assert _close(row["recall"], _sk(skm.recall_score, y, yhat))
    assert _close(row["roc_auc"], _sk(skm.roc_auc_score, y, score))


def test_labels_outside_the_class_set_are_counted() -> None:
    rows = [
        {"label": label, "prediction": "churn", "probas": [("churn", 0.7), ("stay", 0.3)]}
        for label in ("churn", "stay", "Stay", "stayed", "churn")
    ]
    rows.append({"label": "unknown", "prediction": "stay", "probas": None})  # no probas: not judged
    row = _metrics(rows, [Policy("svc", "ep", positive="churn")])
    assert (row["n_labelled"], row["n_unknown_label"], row["positive_rate"]) == (6, 2, 2 / 6)


def test_multiclass_log_loss_uses_the_rows_with_probas_only() -> None:
    no_probas = [{"label": t, "prediction": p} for t, p in (("a", "a"), ("b", "c"))]
    row = _metrics(no_probas, [])
    assert (row["task"], row["n_scored"], row["log_loss"], row["accuracy"]) == ("multiclass", 0, None, 0.5)
    mixed = [
        *no_probas,
        {"label": "a", "prediction": "a", "probas": [("a", 0.6), ("b", 0.3), ("c", 0.1)]},
        {"label": "c", "prediction": "b", "probas": [("a", 0.2), ("b", 0.5), ("c", 0.3)]},
        {"label": "b", "prediction": "a", "probas": [("a", 0.5), ("c", 0.5)]},  # b absent: probability 0
    ]
    row = _metrics(mixed, [])
    expected = -(math.log(0.6) + math.log(0.3) + math.log(float(np.finfo(np.float64).eps))) / 3
    assert row["n_scored"] == 3 and _close(row["log_loss"], expected)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_queries_without_a_prediction_are_left_out_of_the_label_metrics(task: str) -> None:
    # DSS ignored the query: no prediction, no probas. Binary counted it as a predicted negative (right
    # whenever the label was negative), multiclass as wrong (review finding)
    answered = [("FRAUD", "FRAUD"), ("OK", "FRAUD"), ("OK", "OK")]
    ignored = [("OK", None), ("FRAUD", None), ("OK", None)]
    rows = [{"label": t, "prediction": p} for t, p in answered + ignored]
    policies = [Policy("svc", "ep", positive="FRAUD")] if task == "binary" else []
    if task == "multiclass":
        rows.append({"label": "MAYBE", "prediction": "MAYBE"})  # a third class
        answered.append(("MAYBE", "MAYBE"))
    row = _metrics(rows, policies)
    y, yhat = [t for t, _ in answered], [p for _, p in answered]
    assert (row["task"], row["n_labelled"], row["n_predicted"]) == (task, len(rows), len(answered))
    assert _close(row["accuracy"], _sk(skm.accuracy_score, y, yhat))
    if task == "binary":
        assert row["positive_rate"] == 2 / 6  # of every labelled row
        assert _close(row["precision"], _sk(skm.precision_score, y, yhat, pos_label="FRAUD"))
        assert _close(row["recall"], _sk(skm.recall_score, y, yhat, pos_label="FRAUD"))
        assert _close(row["f1"], _sk(skm.f1_score, y, yhat, pos_label="FRAUD"))
    else:
        assert _close(row["macro_f1"], _sk(skm.f1_score, y, yhat, average="macro", zero_division=0))
    if task == "binary":  # (without predictions no task could be read from them for multiclass)
        nothing = _metrics([{"label": t, "prediction": None} for t, _ in ignored], policies)
        assert (nothing["n_predicted"], nothing["accuracy"], nothing["recall"]) == (0, None, None)


def test_non_finite_results_become_null() -> None:
    # differences of huge numbers overflow to infinity: the output says null, never inf or NaN
    rows = [
        {"label": "1e308", "label_value": 1e308, "prediction": "-1e308", "prediction_value": -1e308},
        {"label": "-1e308", "label_value": -1e308, "prediction": "1e308", "prediction_value": 1e308},
    ]
    row = _metrics(rows, [])
    assert row["task"] == "regression" and row["mae"] is None and row["rmse"] is None
    json.dumps(row, allow_nan=False)


def test_regression_rows_with_a_non_finite_number_are_left_out() -> None:
    # "NaN" or "Infinity" logged as a prediction (or sent as a label) would make every metric of the
    # cohort NaN, then null; the metrics use the finite rows and say how many
    good = [(3.0, 2.5), (1.0, 1.5), (4.0, 4.0), (2.0, 3.0)]
    rows: list[dict[str, Any]] = [
        {"label": str(t), "label_value": t, "prediction": str(p), "prediction_value": p} for t, p in good
    ]
    rows += [
        {"label": "2.0", "label_value": 2.0, "prediction": "NaN", "prediction_value": None},
        {"label": "2.0", "label_value": 2.0, "prediction": "Infinity", "prediction_value": None},
        {"label": "NaN", "label_value": math.nan, "prediction": "1.0", "prediction_value": 1.0},
    ]
    row = _metrics(rows, [])
    y = np.array([t for t, _ in good])
    yhat = np.array([p for _, p in good])
    assert (row["task"], row["n_labelled"], row["n_scored"]) == ("regression", 7, 4)
    assert _close(row["mae"], _sk(skm.mean_absolute_error, y, yhat))
    assert _close(row["rmse"], _sk(skm.root_mean_squared_error, y, yhat))
    assert _close(row["r2"], _sk(skm.r2_score, y, yhat))


def test_r2_is_none_for_constant_labels_binary_floats_cannot_hold() -> None:
    # avg(0.1, 0.1, 0.1) is 0.10000000000000002: the centred sum of squares was ~1e-33, not 0, and r2
    # came out as -3.46e31 (review finding); constant is now min = max
    rows = [
        {"label": "0.1", "label_value": 0.1, "prediction": str(p), "prediction_value": p}
        for p in (0.2, 0, 0.1)
    ]
    row = _metrics(rows, [])
    assert (row["task"], row["n_scored"], row["r2"]) == ("regression", 3, None)
    assert _close(row["mae"], 0.2 / 3)


def test_a_count_is_zero_not_none_when_no_row_is_scored() -> None:
    # a regression cohort whose labels are all non-finite has no row in the regression query
    rows = [{"label": "NaN", "label_value": math.nan, "prediction": "1.0", "prediction_value": 1.0}] * 2
    row = _metrics(rows, [])
    assert (row["task"], row["n_labelled"], row["n_scored"], row["mae"]) == ("regression", 2, 0, None)


def test_an_as_of_in_the_future_is_refused_beyond_clock_skew() -> None:
    rows = [{"label": "FRAUD", "prediction": "FRAUD", "probas": [("FRAUD", 0.9), ("OK", 0.1)]}]
    now = dt.datetime.now(dt.UTC)
    with _connection(rows, []) as con:
        [row] = compute_metrics(con, MetricsQuery(by=Cohort.none, as_of=now + dt.timedelta(seconds=30)))
        assert row["n_labelled"] == 1
        with pytest.raises(InputError, match="is in the future"):
            compute_metrics(con, MetricsQuery(by=Cohort.none, as_of=now + dt.timedelta(minutes=2)))


def test_an_endpoint_nothing_names_is_an_error_one_without_rows_in_range_is_not() -> None:
    rows = [{"label": "FRAUD", "prediction": "FRAUD", "probas": [("FRAUD", 0.9), ("OK", 0.1)]}]
    with _connection(rows, [Policy("other", "ep", positive="FRAUD")]) as con:
        with pytest.raises(InputError, match=r"unknown endpoint svc/nope: .* \(known: other/ep, svc/ep\)"):
            compute_metrics(con, MetricsQuery(endpoint=("svc", "nope")))
        late = MetricsQuery(endpoint=("svc", "ep"), date_from=dt.date(2027, 1, 1))
        assert compute_metrics(con, late) == []
        assert compute_metrics(con, MetricsQuery(endpoint=("other", "ep"))) == []
