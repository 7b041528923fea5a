"""Model metrics per endpoint and cohort, computed in DuckDB SQL over `labelled_as_of` (CLI, API, notebooks).

Definitions follow scikit-learn (a property test compares every metric to it at 1e-9); where scikit-learn
is undefined or warns (zero division, a single class, a constant target) the metric is None.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from service.errors import InputError, QueryError
from storage.label_sql import PREDICTIONS_SOURCE, WON_TABLE
from storage.policies import Policy
from storage.views import connect

EPS = float(np.finfo(np.float64).eps)
"""Probabilities are clipped to [EPS, 1 - EPS] for log_loss, as scikit-learn does for float64."""
CALIBRATION_EDGES = [float(e) for e in np.linspace(0.0, 1.0, 11)[1:-1]]
"""Inner edges of the 10 calibration bins, exactly scikit-learn's `calibration_curve(strategy='uniform')`."""


class Cohort(enum.StrEnum):
    """How predictions are grouped into cohorts."""

    day = "day"
    week = "week"
    generation = "generation"
    none = "none"


_COHORT_SQL = {
    Cohort.day: "strftime(day, '%Y-%m-%d')",
    Cohort.week: "strftime(date_trunc('week', day), '%Y-%m-%d')",  # ISO weeks start on Monday
    Cohort.generation: "coalesce(generation, '')",
    Cohort.none: "'all'",
}

COMMON_COLUMNS = [
    "service_id",
    "endpoint_id",
    "outcome_type",
    "cohort",
    "task",
    "n",
    "n_labelled",
    "n_observed",
    "n_implicit",
    "n_pending",
    "coverage",
    "pending_share",
    "immature",
]
TASK_COLUMNS = {
    "binary": [
        "positive",
        "positive_rate",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
    ],
    "multiclass": ["accuracy", "macro_f1", "log_loss"],
    "regression": ["mae", "rmse", "mape", "r2"],
}


@dataclass(frozen=True)
class MetricsQuery:
    """What to evaluate: one endpoint or all, the cohorts, the as-of time and the prediction days."""

    endpoint: tuple[str, str] | None = None
    by: Cohort = Cohort.day
    as_of: dt.datetime | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    immature_threshold: float = 0.5


@dataclass(frozen=True)
class _Group:
    service_id: str | None
    endpoint_id: str | None
    outcome_type: str
    task: str
    positive: str | None


def parse_endpoint(text: str) -> tuple[str, str]:
    """`SERVICE/ENDPOINT` -> (service, endpoint), with a clear error otherwise."""
    service, sep, endpoint = text.partition("/")
    if not sep or not service or not endpoint or "/" in endpoint:
        raise InputError(f"endpoint must be SERVICE/ENDPOINT, got {text!r}")
    return service, endpoint


def evaluate(
    root: Path | str, query: MetricsQuery, *, policies: Sequence[Policy] | None = None
) -> list[dict[str, Any]]:
    """Open the views over `root` (policies None: from `<root>/hindsight.toml`) and compute the metrics."""
    con = connect(root, policies=policies)
    try:
        return compute_metrics(con, query)
    finally:
        con.close()


def compute_metrics(con: duckdb.DuckDBPyConnection, query: MetricsQuery) -> list[dict[str, Any]]:
    """One dict per endpoint, outcome_type and cohort (see COMMON_COLUMNS and TASK_COLUMNS), sorted."""
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise InputError(f"--from {query.date_from} is after --to {query.date_to}")
    if query.as_of is not None:
        query = replace(query, as_of=_utc(query.as_of))
    if not 0 <= query.immature_threshold <= 1:
        raise InputError(f"immature_threshold must be within [0, 1], got {query.immature_threshold}")
    try:
        groups = _groups(con, query)
        if not groups:
            return []
        _materialise(con, query, groups)
        rows = _counts(con, query.immature_threshold)
        tasks = {(g.service_id, g.endpoint_id, g.outcome_type): g for g in groups}
        extra: dict[tuple[Any, ...], dict[str, Any]] = {}
        for fetch in (_binary, _ranking, _calibration, _multiclass, _regression):
            for key, values in fetch(con).items():
                extra.setdefault(key, {}).update(values)
    except duckdb.Error as exc:
        raise QueryError(f"metrics query failed: {exc}") from exc
    finally:
        con.execute("DROP TABLE IF EXISTS _hs_eval")
        con.execute(f"DELETE FROM {WON_TABLE}")
    results = []
    for row in rows:
        group = tasks[(row["service_id"], row["endpoint_id"], row["outcome_type"])]
        row["task"] = group.task
        for name in TASK_COLUMNS[group.task]:
            row[name] = None
        if group.task == "binary":
            row["positive"] = group.positive
            row["calibration"] = []
        row.update(extra.get((row["service_id"], row["endpoint_id"], row["outcome_type"], row["cohort"]), {}))
        results.append(row)
    return results


def _utc(value: dt.datetime) -> dt.datetime:
    """`value` in UTC (naive means UTC); an instant outside the datetime range is an InputError."""
    try:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except (OverflowError, ValueError) as exc:
        raise InputError(f"as-of time {value.isoformat()} is out of range") from exc


def _filters(query: MetricsQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = ["true"]
    params: list[Any] = []
    if query.endpoint is not None:
        clauses.append("service_id = ? AND endpoint_id = ?")
        params.extend(query.endpoint)
    if query.date_from is not None:
        clauses.append("day >= ?")
        params.append(query.date_from)
    if query.date_to is not None:
        clauses.append("day <= ?")
        params.append(query.date_to)
    return " AND ".join(clauses), params


def _groups(con: duckdb.DuckDBPyConnection, query: MetricsQuery) -> list[_Group]:
    """The task of each endpoint and outcome_type, from its policy's `positive`, else from its predictions."""
    where, params = _filters(query)
    endpoints = con.execute(
        f"SELECT DISTINCT service_id, endpoint_id FROM {PREDICTIONS_SOURCE} WHERE {where}", params
    ).fetchall()
    policies = con.execute(
        "SELECT service_id, endpoint_id, outcome_type, positive FROM _hs_policies WHERE policy_id > 0"
    ).fetchall()
    groups = []
    for service_id, endpoint_id in sorted(endpoints, key=lambda e: (e[0] or "", e[1] or "")):
        declared = [(t, pos) for s, e, t, pos in policies if (s, e) == (service_id, endpoint_id)]
        shape: tuple[str, str | None] | None = None
        for outcome_type, positive in declared or [("label", None)]:
            if positive is not None:
                task, pos = "binary", positive
            else:
                # Only endpoints without a declared positive pay for a look at their predictions.
                shape = shape or _shape(con, service_id, endpoint_id, where, params)
                task, pos = shape
            groups.append(_Group(service_id, endpoint_id, outcome_type, task, pos))
    return groups


def _shape(
    con: duckdb.DuckDBPyConnection,
    service_id: str | None,
    endpoint_id: str | None,
    where: str,
    params: list[Any],
) -> tuple[str, str | None]:
    """binary (two classes in probas: the greater name is positive, scikit-learn's order), regression
    (numeric predictions, no probas) or multiclass."""
    row = con.execute(
        f"""SELECT count(probas), min(list_sort(map_keys(probas))), max(list_sort(map_keys(probas))),
                   count(prediction_value),
                   count(prediction) FILTER (WHERE TRY_CAST(prediction AS DOUBLE) IS NULL)
            FROM {PREDICTIONS_SOURCE}
            WHERE {where} AND service_id IS NOT DISTINCT FROM ? AND endpoint_id IS NOT DISTINCT FROM ?""",
        [*params, service_id, endpoint_id],
    ).fetchall()[0]
    with_probas, min_classes, max_classes, with_value, with_text = row
    if with_probas > 0 and min_classes == max_classes and len(max_classes) == 2:
        return "binary", str(max_classes[1])
    if with_probas == 0 and (with_value > 0 or with_text == 0):
        return "regression", None
    return "multiclass", None


def _materialise(con: duckdb.DuckDBPyConnection, query: MetricsQuery, groups: list[_Group]) -> None:
    """`_hs_eval`: the rows to evaluate, narrowed to what metrics need (score, p_true, y...)."""
    where, params = _filters(query)
    whens, case_params = [], []
    for group in groups:
        whens.append(
            "WHEN service_id IS NOT DISTINCT FROM ? AND endpoint_id IS NOT DISTINCT FROM ? "
            "AND outcome_type = ? THEN {'task': ?::VARCHAR, 'pos': ?::VARCHAR}"
        )
        case_params.extend(
            [group.service_id, group.endpoint_id, group.outcome_type, group.task, group.positive]
        )
    task = f"CASE {' '.join(whens)} END"
    as_of = "now()" if query.as_of is None else "?::TIMESTAMPTZ"
    as_of_params = [] if query.as_of is None else [query.as_of]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {WON_TABLE} AS SELECT * FROM _hs_won_as_of({as_of})", as_of_params
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _hs_eval AS
        SELECT service_id, endpoint_id, outcome_type, {_COHORT_SQL[query.by]} AS cohort, label_state,
               prediction, label, label_value,
               coalesce(prediction_value, TRY_CAST(prediction AS DOUBLE)) AS predicted_value,
               t.task, t.pos, probas[t.pos]::DOUBLE AS score, probas[label]::DOUBLE AS p_true
        FROM (SELECT *, {task} AS t FROM _hs_labelled_with_won({as_of}) WHERE {where})""",
        [*case_params, *as_of_params, *params],
    )


_KEY = "service_id, endpoint_id, outcome_type, cohort"


def _keyed(con: duckdb.DuckDBPyConnection, sql: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = con.execute(sql)
    names = [d[0] for d in result.description or []]
    out = {}
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        key = (row.pop("service_id"), row.pop("endpoint_id"), row.pop("outcome_type"), row.pop("cohort"))
        out[key] = row
    return out


def _counts(con: duckdb.DuckDBPyConnection, threshold: float) -> list[dict[str, Any]]:
    result = con.execute(
        f"""SELECT {_KEY}, count(*) AS n,
                   count(*) FILTER (WHERE label_state <> 'pending' AND label IS NOT NULL) AS n_labelled,
                   count(*) FILTER (WHERE label_state = 'observed') AS n_observed,
                   count(*) FILTER (WHERE label_state = 'implicit') AS n_implicit,
                   count(*) FILTER (WHERE label_state = 'pending') AS n_pending,
                   n_labelled / n AS coverage, n_pending / n AS pending_share,
                   pending_share > ? AS immature
            FROM _hs_eval GROUP BY ALL ORDER BY service_id, endpoint_id, outcome_type, cohort""",
        [threshold],
    )
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


_LABELLED = "label_state <> 'pending' AND label IS NOT NULL"


def _binary(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], dict[str, Any]]:
    # precision/recall/f1 are None where scikit-learn divides by zero (its zero_division case).
    return _keyed(
        con,
        f"""WITH b AS (
                SELECT {_KEY}, (label = pos)::INTEGER AS y,
                       coalesce(prediction = pos, false)::INTEGER AS yhat, score
                FROM _hs_eval WHERE task = 'binary' AND {_LABELLED})
            SELECT {_KEY}, avg(y) AS positive_rate, avg((y = yhat)::INTEGER) AS accuracy,
                   sum(y * yhat) / nullif(sum(yhat), 0) AS precision,
                   sum(y * yhat) / nullif(sum(y), 0) AS recall,
                   2 * sum(y * yhat) / nullif(sum(y * yhat) + sum(y) + sum(yhat) - sum(y * yhat), 0)
                       AS f1,
                   -avg(ln(greatest(least(CASE WHEN y = 1 THEN score ELSE 1 - score END, 1 - {EPS!r}),
                                    {EPS!r}))) AS log_loss,
                   avg((score - y) ** 2) AS brier
            FROM b GROUP BY ALL""",
    )


def _ranking(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], dict[str, Any]]:
    # One pass over distinct scores, ascending. roc_auc is the Mann-Whitney statistic with ties counted
    # half; average precision is scikit-learn's sum over thresholds of (R_k - R_k-1) * P_k, where at
    # threshold s: TP = P - positives below s and FP = N - negatives below s.
    return _keyed(
        con,
        f"""WITH s AS (
                SELECT {_KEY}, score, sum((label = pos)::INTEGER)::DOUBLE AS pos_n,
                       count(*) - sum((label = pos)::INTEGER)::DOUBLE AS neg_n
                FROM _hs_eval WHERE task = 'binary' AND score IS NOT NULL AND {_LABELLED}
                GROUP BY ALL),
            c AS (
                SELECT *, coalesce(sum(pos_n) OVER below, 0) AS pos_below,
                       coalesce(sum(neg_n) OVER below, 0) AS neg_below,
                       sum(pos_n) OVER whole AS p_total, sum(neg_n) OVER whole AS n_total
                FROM s
                WINDOW below AS (PARTITION BY {_KEY} ORDER BY score
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                       whole AS (PARTITION BY {_KEY}))
            SELECT {_KEY},
                   CASE WHEN any_value(p_total) > 0 AND any_value(n_total) > 0 THEN
                       sum(pos_n * (neg_below + neg_n / 2)) / (any_value(p_total) * any_value(n_total))
                   END AS roc_auc,
                   CASE WHEN any_value(p_total) > 0 THEN
                       sum(pos_n * (p_total - pos_below)
                           / ((p_total - pos_below) + (n_total - neg_below))) / any_value(p_total)
                   END AS pr_auc
            FROM c GROUP BY ALL""",
    )


def _calibration(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], dict[str, Any]]:
    edges = " ".join(f"WHEN score <= {edge!r} THEN {i}" for i, edge in enumerate(CALIBRATION_EDGES))
    return _keyed(
        con,
        f"""WITH b AS (
                SELECT {_KEY}, CASE {edges} ELSE {len(CALIBRATION_EDGES)} END AS bin, score,
                       (label = pos)::INTEGER AS y
                FROM _hs_eval WHERE task = 'binary' AND score IS NOT NULL AND {_LABELLED}),
            bins AS (
                SELECT {_KEY}, bin, avg(score) AS mean_predicted, avg(y) AS observed_rate, count(*) AS count
                FROM b GROUP BY ALL)
            SELECT {_KEY},
                   list({{'bin': bin, 'mean_predicted': mean_predicted, 'observed_rate': observed_rate,
                          'count': count}} ORDER BY bin) AS calibration
            FROM bins GROUP BY ALL""",
    )


def _multiclass(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], dict[str, Any]]:
    # macro_f1 averages the F1 of every class seen as a label or a prediction (scikit-learn's
    # labels=None); a missing prediction counts as wrong. log_loss uses probas[label], 0 when absent.
    return _keyed(
        con,
        f"""WITH m AS (SELECT * FROM _hs_eval WHERE task = 'multiclass'),
            per_class AS (
                SELECT {_KEY}, cls, sum(n_true) AS n_true, sum(n_pred) AS n_pred, sum(tp) AS tp FROM (
                    SELECT {_KEY}, label AS cls, count(*) AS n_true, 0 AS n_pred,
                           count(*) FILTER (WHERE prediction = label) AS tp
                    FROM m WHERE {_LABELLED} GROUP BY ALL
                    UNION ALL
                    SELECT {_KEY}, prediction, 0, count(*), 0
                    FROM m WHERE {_LABELLED} AND prediction IS NOT NULL GROUP BY ALL)
                GROUP BY ALL),
            f1 AS (SELECT {_KEY}, avg(2 * tp / (n_true + n_pred)) AS macro_f1 FROM per_class GROUP BY ALL),
            base AS (
                SELECT {_KEY}, avg((prediction IS NOT DISTINCT FROM label)::INTEGER) AS accuracy,
                       -avg(ln(greatest(least(coalesce(p_true, 0), 1 - {EPS!r}), {EPS!r}))) AS log_loss
                FROM m WHERE {_LABELLED} GROUP BY ALL)
            SELECT * FROM base JOIN f1 USING ({_KEY})""",
    )


def _regression(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], dict[str, Any]]:
    # mape divides by max(|y|, EPS) like scikit-learn; r2 is None when the labels are constant (or one).
    return _keyed(
        con,
        f"""WITH r AS (
                SELECT {_KEY}, label_value AS y, predicted_value AS yhat,
                       label_value - avg(label_value) OVER (PARTITION BY {_KEY}) AS centred
                FROM _hs_eval
                WHERE task = 'regression' AND {_LABELLED}
                  AND label_value IS NOT NULL AND predicted_value IS NOT NULL)
            SELECT {_KEY}, avg(abs(y - yhat)) AS mae, sqrt(avg((y - yhat) ** 2)) AS rmse,
                   avg(abs(y - yhat) / greatest(abs(y), {EPS!r})) AS mape,
                   CASE WHEN count(*) >= 2 AND sum(centred ** 2) > 0 THEN
                       1 - sum((y - yhat) ** 2) / sum(centred ** 2) END AS r2
            FROM r GROUP BY ALL""",
    )


def metrics_table(
    rows: Sequence[dict[str, Any]], *, compact: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """Flat columns and values for table/CSV output: the common columns, then those of the tasks present
    (the calibration table is left out; it is in the JSON output). `compact` keeps what fits a terminal:
    SERVICE/ENDPOINT in one column, no per-state counts."""
    columns = list(COMMON_COLUMNS)
    for task, names in TASK_COLUMNS.items():
        if any(row["task"] == task for row in rows):
            columns.extend(name for name in names if name not in columns)
    values = [[row.get(name) for name in columns] for row in rows]
    if not compact:
        return columns, values
    dropped = {"service_id", "endpoint_id", "task", "n_observed", "n_implicit", "n_pending", "pending_share"}
    keep = [i for i, name in enumerate(columns) if name not in dropped]
    return ["endpoint", *[columns[i] for i in keep]], [
        [f"{row['service_id']}/{row['endpoint_id']}", *[v[i] for i in keep]]
        for row, v in zip(rows, values, strict=True)
    ]
