"""Model metrics per endpoint and cohort, from `labelled_as_of` in DuckDB SQL (ranks finished in numpy).

Definitions follow scikit-learn (a property test compares every metric to it at 1e-9); where scikit-learn
is undefined or warns (zero division, a single class, a constant target) the metric is None.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from service.errors import InputError, QueryError
from storage.label_sql import PREDICTIONS_SOURCE, WON_TABLE
from storage.outcome_model import text_number
from storage.policies import Policy
from storage.views import DUCKDB_FAILURES, connect, failure_text

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
    Cohort.day: "day",
    Cohort.week: "date_trunc('week', day)::DATE",  # ISO weeks start on Monday
    Cohort.generation: "coalesce(generation, '')",
    Cohort.none: "'all'",
}
"""The cohort key stored per row in `_hs_eval`: dates stay DATE (formatting 10M of them cost ~0.5 s)."""
_COHORT_TEXT = {
    Cohort.day: "strftime(cohort, '%Y-%m-%d')",
    Cohort.week: "strftime(cohort, '%Y-%m-%d')",
    Cohort.generation: "cohort",
    Cohort.none: "cohort",
}
"""The cohort as output, computed on the aggregated rows only."""

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
        "n_predicted",
        "n_scored",
        "n_unknown_label",
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
    "multiclass": ["n_predicted", "n_scored", "accuracy", "macro_f1", "log_loss"],
    "regression": ["n_scored", "mae", "rmse", "mape", "r2"],
}

_COUNT_COLUMNS = frozenset({"n_predicted", "n_scored", "n_unknown_label"})
"""Task columns that are counts: 0, not None, for a cohort none of whose rows they count."""


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


def parse_as_of(text: str, name: str) -> dt.datetime:
    """An ISO 8601 date or timestamp (`Z` or an offset; none means UTC), as given to `name`.

    The CLI (`--as-of`) and the API (`as_of`) both read it here, so one spelling means one instant: the API
    used to take pydantic's lax reading, where `as_of=20260105` was 20,260,105 seconds after 1970."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{name} {text!r} is not an ISO 8601 timestamp (e.g. 2026-03-01T00:00:00Z)") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def parse_day(text: str | None, name: str) -> dt.date | None:
    """An ISO 8601 date (YYYY-MM-DD) as given to `name` (`--from`, `to`, ...); None stays None."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from exc


FUTURE_TOLERANCE = dt.timedelta(minutes=1)
"""How far ahead of this machine's clock an as-of time may be (clock skew between a client and us)."""


def check_days(date_from: dt.date | None, date_to: dt.date | None) -> None:
    """An InputError when the from day comes after the to day (no day could match)."""
    if date_from and date_to and date_from > date_to:
        raise InputError(f"the from date {date_from} is after the to date {date_to}: no day can match")


def checked_as_of(as_of: dt.datetime) -> dt.datetime:
    """`as_of` in UTC (naive means UTC); an InputError when it is beyond FUTURE_TOLERANCE from now: maturity
    would be judged at a time not yet reached, predictions still waiting for their outcome would get their
    implicit label, and a cohort would look fully labelled."""
    value = _utc(as_of)
    now = dt.datetime.now(dt.UTC)
    if value > now + FUTURE_TOLERANCE:
        raise InputError(
            f"as-of time {value.isoformat()} is in the future (now is "
            f"{now.isoformat(timespec='seconds')}): labels cannot be known then"
        )
    return value


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
    check_days(query.date_from, query.date_to)
    if query.as_of is not None:
        query = replace(query, as_of=checked_as_of(query.as_of))
    if not 0 <= query.immature_threshold <= 1:
        raise InputError(f"immature_threshold must be within [0, 1], got {query.immature_threshold}")
    try:
        groups = _groups(con, query)
        if not groups:
            if query.endpoint is not None:
                check_known_endpoint(con, query.endpoint)
            return []
        with _unordered(con):
            _materialise(con, query, groups)
            rows = _counts(con, query.immature_threshold, _COHORT_TEXT[query.by])
            tasks = {(g.service_id, g.endpoint_id, g.outcome_type): g for g in groups}
            extra: dict[tuple[Any, ...], dict[str, Any]] = {}
            present = {g.task for g in groups}
            for task, fetch in _FETCHES:
                if task not in present:
                    continue
                for key, values in fetch(con, _COHORT_TEXT[query.by], groups).items():
                    extra.setdefault(key, {}).update(values)
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"metrics query failed: {failure_text(exc)}") from exc
    finally:
        # Best effort: a connection DuckDB has invalidated cannot be cleaned, and its error must not
        # hide the QueryError above (leftover temp tables are replaced by the next call anyway).
        with contextlib.suppress(duckdb.Error):
            con.execute("DROP TABLE IF EXISTS _hs_eval")
            con.execute("DROP TABLE IF EXISTS _hs_eval_groups")
            con.execute("DROP TABLE IF EXISTS _hs_rank_cohorts")
            con.execute(f"DELETE FROM {WON_TABLE}")
    results = []
    for row in rows:
        group = tasks[(row["service_id"], row["endpoint_id"], row["outcome_type"])]
        row["task"] = group.task
        for name in TASK_COLUMNS[group.task]:
            row[name] = 0 if name in _COUNT_COLUMNS else None
        if group.task == "binary":
            row["positive"] = group.positive
            row["calibration"] = []
        row.update(extra.get((row["service_id"], row["endpoint_id"], row["outcome_type"], row["cohort"]), {}))
        results.append(_finite(row))
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
                shape = shape or _shape(con, service_id, endpoint_id, query.as_of)
                task, pos = shape
            groups.append(_Group(service_id, endpoint_id, outcome_type, task, pos))
    return groups


def check_known_endpoint(con: duckdb.DuckDBPyConnection, endpoint: tuple[str, str]) -> None:
    """An InputError when no prediction (of any day) and no policy names `endpoint`: a typo in it must not
    look like an endpoint without data. One that only has no predictions in the days asked is fine."""
    known = con.execute(
        f"""SELECT service_id, endpoint_id FROM {PREDICTIONS_SOURCE} WHERE service_id IS NOT NULL
            UNION SELECT service_id, endpoint_id FROM _hs_policies WHERE policy_id > 0
            ORDER BY ALL"""
    ).fetchall()
    if endpoint in [tuple(row) for row in known]:
        return
    names = [f"{s}/{e}" for s, e in known if e is not None]
    listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    raise InputError(
        f"unknown endpoint {endpoint[0]}/{endpoint[1]}: no prediction and no policy names it "
        f"(known: {listed or 'none'})",
        details={"known": names[:100]},
    )


def _shape(
    con: duckdb.DuckDBPyConnection,
    service_id: str | None,
    endpoint_id: str | None,
    as_of: dt.datetime | None,
) -> tuple[str, str | None]:
    """binary (two classes in probas: the greater name is positive, scikit-learn's order), regression
    (numeric predictions, no probas) or multiclass, from every prediction of the endpoint made up to the
    as-of time. Not from the days asked: a cohort's metrics used to change kind with --from/--to, and
    to depend on predictions made after the as-of time (review finding)."""
    row = con.execute(
        f"""SELECT count(probas), min(list_sort(map_keys(probas))), max(list_sort(map_keys(probas))),
                   count(prediction_value),
                   count(prediction) FILTER (WHERE TRY_CAST(prediction AS DOUBLE) IS NULL)
            FROM {PREDICTIONS_SOURCE}
            WHERE ts <= coalesce(?::TIMESTAMPTZ, now())
              AND service_id IS NOT DISTINCT FROM ? AND endpoint_id IS NOT DISTINCT FROM ?""",
        [as_of, service_id, endpoint_id],
    ).fetchall()[0]
    with_probas, min_classes, max_classes, with_value, with_text = row
    if with_probas > 0 and min_classes == max_classes and len(max_classes) == 2:
        return "binary", str(max_classes[1])
    if with_probas == 0 and (with_value > 0 or with_text == 0):
        return "regression", None
    return "multiclass", None


@contextmanager
def _unordered(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """`preserve_insertion_order = false` while the metrics run (every result is grouped or ordered
    explicitly), the caller's setting restored after: tables fill in parallel, without order upkeep.

    The setting is global to the DuckDB database; `evaluate` opens its own, so only a caller sharing
    its connection's database with other cursors sees unordered results meanwhile."""
    [(before,)] = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (in lists and dicts too) replaced by None: JSON has no NaN or
    infinity, and an overflowing sum (an rmse over huge numbers) must not break the output."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _ids(groups: list[_Group], task: str) -> str:
    """The group numbers (our own integers, safe as literals) of `task`, as an SQL list."""
    return ", ".join(str(i) for i, g in enumerate(groups) if g.task == task) or "NULL"


def _materialise(con: duckdb.DuckDBPyConnection, query: MetricsQuery, groups: list[_Group]) -> None:
    """`_hs_eval`: one narrow row per labelled-view row: group number g, cohort key, label-state flags and,
    on labelled rows only, the columns its task's metrics read (NULL otherwise); `_hs_eval_groups` names g.

    Narrow on purpose: at 10M predictions, writing the endpoint, outcome type, task and positive class as
    text on every row, plus the values of every task, made this table the slowest step after the join."""
    where, params = _filters(query)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _hs_eval_groups "
        "(g INTEGER, service_id VARCHAR, endpoint_id VARCHAR, outcome_type VARCHAR)"
    )
    con.executemany(
        "INSERT INTO _hs_eval_groups VALUES (?, ?, ?, ?)",
        [(i, g.service_id, g.endpoint_id, g.outcome_type) for i, g in enumerate(groups)],
    )
    whens, case_params = [], []
    for i, group in enumerate(groups):
        whens.append(
            f"WHEN service_id IS NOT DISTINCT FROM ? AND endpoint_id IS NOT DISTINCT FROM ? "
            f"AND outcome_type = ? THEN {i}"
        )
        case_params.extend([group.service_id, group.endpoint_id, group.outcome_type])
    positives = [(i, g.positive) for i, g in enumerate(groups) if g.task == "binary"]
    pos = "CASE g " + " ".join(f"WHEN {i} THEN ?::VARCHAR" for i, _ in positives) + " END"
    pos_value = "CASE g " + " ".join(f"WHEN {i} THEN ?::DOUBLE" for i, _ in positives) + " END"
    pos_params: list[Any] = [p for _, p in positives]
    # the positive's number by the rule label_value is made with (a JSON number), not DuckDB's cast
    pos_params += [None if p is None else text_number(p) for _, p in positives]
    if not positives:
        pos, pos_value = "NULL::VARCHAR", "NULL::DOUBLE"
    as_of = "now()" if query.as_of is None else "?::TIMESTAMPTZ"
    as_of_params = [] if query.as_of is None else [query.as_of]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {WON_TABLE} AS SELECT * FROM _hs_won_as_of({as_of})", as_of_params
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _hs_eval AS
        SELECT g, cohort,
               label_state = 'observed' AS observed, label_state = 'implicit' AS implicit,
               label_state = 'pending' AS pending, labelled{_task_columns(groups)}
        FROM (SELECT *,
                     -- looked up once here, on labelled rows only: the task columns read them twice
                     CASE WHEN labelled AND pos IS NOT NULL THEN probas[pos]::DOUBLE END AS pos_proba,
                     CASE WHEN labelled AND pos IS NOT NULL
                          THEN coalesce(label = pos OR label_value = pos_value, false) END AS is_pos,
                     CASE WHEN labelled AND pos IS NULL AND probas IS NOT NULL
                          THEN coalesce(probas[label]::DOUBLE, 0) END AS label_proba
              FROM (SELECT *, {pos} AS pos, {pos_value} AS pos_value,
                           label_state <> 'pending' AND label IS NOT NULL AS labelled
                    FROM (SELECT label_state, label, label_value, prediction, prediction_value, probas,
                                 {_COHORT_SQL[query.by]} AS cohort, CASE {" ".join(whens)} END AS g
                          FROM _hs_labelled_with_won({as_of}) WHERE {where})))""",
        [*pos_params, *case_params, *as_of_params, *params],  # in the order they appear in the text
    )


_TASK_VALUES = {
    "binary": [
        # a label or prediction is the positive class by its text or, when both are numbers, by value
        # ("1.0" written by a CSV export is class "1")
        ("is_pos::INTEGER", "y"),
        # no prediction at all (DSS ignored the query) is no yhat, left out of the label metrics as in
        # multiclass and regression; it was a predicted negative, "right" whenever the label was negative
        (
            "CASE WHEN prediction IS NOT NULL OR prediction_value IS NOT NULL"
            " THEN coalesce(prediction = pos OR prediction_value = pos_value, false)::INTEGER END",
            "yhat",
        ),
        # only a finite probability is a score: a missing class or a logged NaN is no score
        ("CASE WHEN isfinite(pos_proba) THEN pos_proba END", "score"),
        # a label that is neither the positive class nor another class of the row's probas (by text or
        # value): still a negative, but counted, so that a typo in the labels shows. One
        # WHEN per test: a CASE evaluates each only on the rows still undecided, AND/OR evaluate all.
        (
            "CASE WHEN is_pos THEN 0 WHEN probas IS NULL THEN 0 WHEN probas[label] IS NOT NULL THEN 0"
            " WHEN label_value IS NULL THEN 1"
            " WHEN list_contains(list_transform(map_keys(probas), lambda k: TRY_CAST(k AS DOUBLE)),"
            " label_value) THEN 0 ELSE 1 END",
            "unknown_label",
        ),
    ],
    "multiclass": [
        ("label", "mc_label"),
        ("prediction", "mc_prediction"),
        # rows with probas: the label's probability, 0 when the label is not among them; rows without
        # probas (or with a NaN) have none and are left out of log_loss
        ("CASE WHEN isfinite(label_proba) THEN label_proba END", "p_true"),
    ],
    "regression": [
        ("label_value", "label_value"),
        ("coalesce(prediction_value, TRY_CAST(prediction AS DOUBLE))", "predicted_value"),
    ],
}
"""The `_hs_eval` columns each task's metrics read, as (expression over a labelled row, name)."""


def _task_columns(groups: list[_Group]) -> str:
    """The `_hs_eval` columns of the tasks present: set on the labelled rows of that task, NULL elsewhere.

    Only present tasks get columns: at 10M binary rows the five always-NULL multiclass and regression
    columns cost ~0.8 CPU-s to write."""
    columns = [
        f"CASE WHEN labelled AND g IN ({_ids(groups, task)}) THEN {expression} END AS {name}"
        for task, values in _TASK_VALUES.items()
        if any(g.task == task for g in groups)
        for expression, name in values
    ]
    return "".join(f",\n               {column}" for column in columns)


_KEY = "g, cohort"
"""What every metric groups by; the output names g's endpoint and outcome type (`_keyed`)."""


def _keyed(
    con: duckdb.DuckDBPyConnection, sql: str, groups: list[_Group]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = con.execute(sql)
    names = [d[0] for d in result.description or []]
    out = {}
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        group = groups[row.pop("g")]
        key = (group.service_id, group.endpoint_id, group.outcome_type, row.pop("cohort"))
        out[key] = row
    return out


def _counts(con: duckdb.DuckDBPyConnection, threshold: float, cohort_text: str) -> list[dict[str, Any]]:
    result = con.execute(
        f"""SELECT gr.service_id, gr.endpoint_id, gr.outcome_type, c.cohort, c.n, c.n_labelled,
                   c.n_observed, c.n_implicit, c.n_pending, c.n_labelled / c.n AS coverage,
                   c.n_pending / c.n AS pending_share, pending_share > ? AS immature
            FROM (SELECT g, {cohort_text} AS cohort, count(*) AS n,
                         count(*) FILTER (WHERE labelled) AS n_labelled,
                         count(*) FILTER (WHERE observed) AS n_observed,
                         count(*) FILTER (WHERE implicit) AS n_implicit,
                         count(*) FILTER (WHERE pending) AS n_pending
                  FROM _hs_eval GROUP BY g, _hs_eval.cohort) c
            JOIN _hs_eval_groups gr USING (g)
            ORDER BY service_id, endpoint_id, outcome_type, cohort""",
        [threshold],
    )
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


_BINARY = "labelled AND y IS NOT NULL"
"""The labelled rows of binary endpoints (y is set on binary rows only, and is NULL without a label)."""


def _binary(cohort_text: str) -> str:
    # precision/recall/f1 are None where scikit-learn divides by zero (its zero_division case).
    # log_loss and brier use the rows with a score only (as roc_auc, pr_auc and calibration do).
    # accuracy, precision, recall and f1 over the rows with a prediction (`n_predicted`; y * yhat and
    # y FILTER are NULL/left out without one); positive_rate over every labelled row
    return f"""SELECT g, {cohort_text} AS cohort, count(yhat) AS n_predicted, count(score) AS n_scored,
                   sum(unknown_label)::BIGINT AS n_unknown_label, avg(y) AS positive_rate,
                   avg((y = yhat)::INTEGER) AS accuracy,
                   sum(y * yhat) / nullif(sum(yhat), 0) AS precision,
                   sum(y * yhat) / nullif(sum(y) FILTER (WHERE yhat IS NOT NULL), 0) AS recall,
                   2 * sum(y * yhat) / nullif(sum(y) FILTER (WHERE yhat IS NOT NULL) + sum(yhat), 0)
                       AS f1,
                   -avg(ln(greatest(least(CASE WHEN y = 1 THEN score ELSE 1 - score END, 1 - {EPS!r}),
                                    {EPS!r}))) FILTER (WHERE score IS NOT NULL) AS log_loss,
                   avg((score - y) ** 2) FILTER (WHERE score IS NOT NULL) AS brier
            FROM _hs_eval WHERE {_BINARY} GROUP BY g, _hs_eval.cohort"""


def _ranking(
    con: duckdb.DuckDBPyConnection, cohort_text: str, groups: list[_Group]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """roc_auc and pr_auc per binary cohort: one read of (cohort number, score, y) sorted by DuckDB, then
    numpy over the runs of equal scores (each distinct score is one threshold).

    roc_auc is the Mann-Whitney statistic with ties counted half: the sum over runs of
    positives * (negatives below + negatives in the run / 2), over P * N (exact: halves of integers).
    pr_auc is scikit-learn's average precision, the sum over thresholds of (R_k - R_k-1) * P_k, where at
    a run's score TP = P - positives below and FP = N - negatives below. The same formulas ran as SQL
    window functions before; over 2.4M labelled rows those cost 1.8 CPU-s, this about half."""
    filtered = f"SELECT g, cohort, score, y FROM _hs_eval WHERE {_BINARY} AND score IS NOT NULL"
    # The cohorts are numbered once (stored: both queries below read the same numbering)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _hs_rank_cohorts AS
            SELECT g, cohort, row_number() OVER (ORDER BY g, cohort) - 1 AS cid
            FROM (SELECT DISTINCT g, cohort FROM ({filtered}))"""
    )
    names = con.execute(f"SELECT g, {cohort_text} AS cohort FROM _hs_rank_cohorts ORDER BY cid").fetchall()
    if not names:
        return {}
    data = con.execute(
        f"SELECT c.cid, e.score, e.y FROM ({filtered}) e JOIN _hs_rank_cohorts c "
        "ON e.g = c.g AND e.cohort IS NOT DISTINCT FROM c.cohort "  # every cid keeps its rows
        "ORDER BY c.cid, e.score"
    ).fetchnumpy()
    cid = np.asarray(data["cid"], dtype=np.int64)
    score = np.asarray(data["score"], dtype=np.float64)
    y = np.asarray(data["y"], dtype=np.float64)
    new_run = np.ones(len(cid), dtype=bool)
    # scores are finite (`_TASK_VALUES`: a NaN is no score), so equal scores are one run
    new_run[1:] = (cid[1:] != cid[:-1]) | (score[1:] != score[:-1])
    run = np.cumsum(new_run) - 1
    pos_n = np.bincount(run, weights=y)
    neg_n = np.bincount(run).astype(np.float64) - pos_n
    run_cid = cid[new_run]
    first = np.flatnonzero(np.r_[True, run_cid[1:] != run_cid[:-1]])  # every cohort number has rows
    pos_before, neg_before = np.cumsum(pos_n) - pos_n, np.cumsum(neg_n) - neg_n
    pos_below = pos_before - pos_before[first][run_cid]
    neg_below = neg_before - neg_before[first][run_cid]
    p_total = np.bincount(run_cid, weights=pos_n, minlength=len(names))
    n_total = np.bincount(run_cid, weights=neg_n, minlength=len(names))
    p_run, n_run = p_total[run_cid], n_total[run_cid]
    roc = np.bincount(run_cid, weights=pos_n * (neg_below + neg_n / 2), minlength=len(names))
    ap = np.bincount(
        run_cid,
        weights=pos_n * (p_run - pos_below) / ((p_run - pos_below) + (n_run - neg_below)),
        minlength=len(names),
    )
    out = {}
    for i, (g, cohort) in enumerate(names):
        group = groups[g]
        p, n = float(p_total[i]), float(n_total[i])
        out[(group.service_id, group.endpoint_id, group.outcome_type, cohort)] = {
            "roc_auc": float(roc[i]) / (p * n) if p > 0 and n > 0 else None,
            "pr_auc": float(ap[i]) / p if p > 0 else None,
        }
    return out


def _calibration(cohort_text: str) -> str:
    edges = " ".join(f"WHEN score <= {edge!r} THEN {i}" for i, edge in enumerate(CALIBRATION_EDGES))
    return f"""WITH b AS (
                SELECT {_KEY}, CASE {edges} ELSE {len(CALIBRATION_EDGES)} END AS bin, score, y
                FROM _hs_eval WHERE {_BINARY} AND score IS NOT NULL),
            bins AS (
                SELECT {_KEY}, bin, avg(score) AS mean_predicted, avg(y) AS observed_rate, count(*) AS count
                FROM b GROUP BY ALL)
            SELECT g, {cohort_text} AS cohort,
                   list({{'bin': bin, 'mean_predicted': mean_predicted, 'observed_rate': observed_rate,
                          'count': count}} ORDER BY bin) AS calibration
            FROM bins GROUP BY g, bins.cohort"""


def _multiclass(cohort_text: str) -> str:
    # macro_f1 averages the F1 of every class seen as a label or a prediction (scikit-learn's
    # labels=None). accuracy and macro_f1 use the rows with a prediction (`n_predicted`; a missing one
    # counted as wrong, where binary counted it as a negative: review finding). log_loss uses
    # probas[label], 0 when absent, over the rows that logged probas.
    return f"""WITH m AS (
                SELECT {_KEY}, mc_label AS label, mc_prediction AS prediction, p_true
                FROM _hs_eval WHERE labelled AND mc_label IS NOT NULL),
            per_class AS (
                SELECT {_KEY}, cls, sum(n_true) AS n_true, sum(n_pred) AS n_pred, sum(tp) AS tp FROM (
                    SELECT {_KEY}, label AS cls, count(*) AS n_true, 0 AS n_pred,
                           count(*) FILTER (WHERE prediction = label) AS tp
                    FROM m WHERE prediction IS NOT NULL GROUP BY ALL
                    UNION ALL
                    SELECT {_KEY}, prediction, 0, count(*), 0
                    FROM m WHERE prediction IS NOT NULL GROUP BY ALL)
                GROUP BY ALL),
            f1 AS (SELECT {_KEY}, avg(2 * tp / (n_true + n_pred)) AS macro_f1 FROM per_class GROUP BY ALL),
            base AS (
                SELECT {_KEY}, count(prediction) AS n_predicted,
                       avg((prediction = label)::INTEGER) AS accuracy,
                       count(p_true) AS n_scored,
                       -avg(ln(greatest(least(p_true, 1 - {EPS!r}), {EPS!r})))
                           FILTER (WHERE p_true IS NOT NULL) AS log_loss
                FROM m GROUP BY ALL)
            SELECT g, {cohort_text} AS cohort, n_predicted, n_scored, accuracy, log_loss, macro_f1
            FROM base LEFT JOIN f1 USING ({_KEY})"""


def _regression(cohort_text: str) -> str:
    # mape divides by max(|y|, EPS) like scikit-learn; r2 is None when the labels are constant (or one).
    # Constant is min = max: the centred sum of squares is not 0 for labels such as 0.1, whose mean
    # rounds to 0.10000000000000002 (r2 came out as -3e31; review finding).
    # Rows whose label or prediction is not a finite number ("NaN", "Infinity" logged as text) are left
    # out, as scores are for binary: one of them would make every metric of the cohort NaN, then null.
    return f"""WITH r AS (
                SELECT {_KEY}, label_value AS y, predicted_value AS yhat,
                       label_value - avg(label_value) OVER (PARTITION BY {_KEY}) AS centred
                FROM _hs_eval
                WHERE labelled AND isfinite(label_value) AND isfinite(predicted_value))
            SELECT g, {cohort_text} AS cohort, count(*) AS n_scored,
                   avg(abs(y - yhat)) AS mae, sqrt(avg((y - yhat) ** 2)) AS rmse,
                   avg(abs(y - yhat) / greatest(abs(y), {EPS!r})) AS mape,
                   CASE WHEN count(*) >= 2 AND min(y) < max(y) THEN
                       1 - sum((y - yhat) ** 2) / sum(centred ** 2) END AS r2
            FROM r GROUP BY g, r.cohort"""


_Fetch = Callable[[duckdb.DuckDBPyConnection, str, list[_Group]], dict[tuple[Any, ...], dict[str, Any]]]


def _sql(query: Callable[[str], str]) -> _Fetch:
    """A fetch that runs one metric query (given the cohort's output expression) and keys its rows."""

    def fetch(
        con: duckdb.DuckDBPyConnection, cohort_text: str, groups: list[_Group]
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        return _keyed(con, query(cohort_text), groups)

    return fetch


_FETCHES: list[tuple[str, _Fetch]] = [
    ("binary", _sql(_binary)),
    ("binary", _ranking),
    ("binary", _sql(_calibration)),
    ("multiclass", _sql(_multiclass)),
    ("regression", _sql(_regression)),
]
"""Each task's metric fetches (SQL queries, and the ranking metrics); only tasks present run."""


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
    dropped = {
        "service_id",
        "endpoint_id",
        "task",
        "n_observed",
        "n_implicit",
        "n_pending",
        "pending_share",
        "n_predicted",
        "n_scored",
        "n_unknown_label",
    }
    keep = [i for i, name in enumerate(columns) if name not in dropped]
    return ["endpoint", *[columns[i] for i in keep]], [
        [f"{row['service_id']}/{row['endpoint_id']}", *[v[i] for i in keep]]
        for row, v in zip(rows, values, strict=True)
    ]
