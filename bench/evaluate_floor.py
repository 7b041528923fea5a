"""The evaluation benchmark's floor: DuckDB SQL written by hand for its one policy, no generality.

`bench/evaluate.py` times it beside `hindsight eval` and the pandas script. It does what the benchmark's
policy asks (`context.transaction_id`, last_before with ties to the greatest record_id, 90-day window,
corrections, 120-day maturity with the implicit label "OK", binary metrics per prediction day) in the
fewest statements found: outcomes stored once with their rowid as the pair number, one hash join and
per-outcome arg_max for the key, one for record_ids, the corrections, one labelled table, then the
metrics. What it leaves out is what makes hindsight general: several policies and endpoints, their
lookup per row, the as-of macros shared with the views, the other tasks and the label-state columns.
How far hindsight is from this script measures the cost of that generality; how far this script is
from the pandas baseline bounds what any DuckDB formulation of the join can reach on the machine.

    .venv/bin/python -m bench.evaluate_floor ROOT 2026-03-15T00:00:00Z
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import unquote

import duckdb
import numpy as np
from deltalake import DeltaTable

from storage.layout import Layout

WINDOW_US = 90 * 86_400 * 1_000_000
MATURITY_US = 120 * 86_400 * 1_000_000
EPS = float(np.finfo(np.float64).eps)


def _files(path: Path) -> str:
    uris = [unquote(uri).removeprefix("file://") for uri in DeltaTable(str(path)).file_uris()]
    return "[" + ", ".join("'" + uri.replace("'", "''") + "'" for uri in uris) + "]"


def evaluate(root: Path, as_of: str) -> list[dict[str, object]]:
    """Per prediction day: n, n_labelled and the binary metrics the benchmark compares."""
    layout = Layout(root)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"CREATE VIEW preds AS SELECT * FROM read_parquet({_files(layout.predictions)}, "
        "hive_partitioning = true, hive_types = {'day': 'DATE'})"
    )
    con.execute(f"CREATE VIEW outs AS SELECT * FROM read_parquet({_files(layout.outcomes)})")
    t = "?::TIMESTAMPTZ"
    con.execute(
        f"""CREATE TEMP TABLE ok AS
            SELECT json_extract_string(key, '/context.transaction_id') AS jkey, record_id,
                   epoch_us(occurred_at) AS occ, occurred_at, received_at, intake_seq, outcome_id, value
            FROM outs WHERE received_at <= {t}""",
        [as_of],
    )
    con.execute(
        f"""CREATE TEMP TABLE cand AS
            SELECT o.rowid AS orow, arg_max(p.record_id, (p.ts_us, p.record_id)) AS record_id
            FROM (SELECT rowid, jkey, occ FROM ok WHERE jkey IS NOT NULL) o
            JOIN (SELECT record_id, epoch_us(ts) AS ts_us,
                         json_extract_string(context, '/transaction_id') AS jkey
                  FROM preds WHERE ts <= {t}) p
              ON p.jkey = o.jkey AND p.ts_us <= o.occ AND p.ts_us >= o.occ - {WINDOW_US}
            GROUP BY o.rowid
            UNION ALL
            SELECT o.rowid, p.record_id
            FROM (SELECT rowid, record_id, occ FROM ok WHERE record_id IS NOT NULL) o
            JOIN (SELECT record_id, epoch_us(ts) AS ts_us FROM preds WHERE ts <= {t}) p
              ON p.record_id = o.record_id AND o.occ - p.ts_us <= {WINDOW_US}""",
        [as_of, as_of],
    )
    con.execute(
        """CREATE TEMP TABLE won AS
           SELECT c.record_id, o.value FROM (
               SELECT c.record_id,
                      arg_max(c.orow, (o.occurred_at, o.received_at, o.intake_seq, o.outcome_id)) AS orow
               FROM cand c JOIN ok o ON o.rowid = c.orow GROUP BY c.record_id) c
           JOIN ok o ON o.rowid = c.orow"""
    )
    con.execute(
        f"""CREATE TEMP TABLE ev AS
            SELECT day, label IS NOT NULL AS labelled,
                   CASE WHEN label IS NOT NULL THEN (label = 'FRAUD')::INTEGER END AS y,
                   CASE WHEN label IS NOT NULL THEN (prediction = 'FRAUD')::INTEGER END AS yhat,
                   CASE WHEN label IS NOT NULL THEN probas['FRAUD'] END AS score
            FROM (SELECT p.day, p.prediction, p.probas,
                         coalesce(w.value, CASE WHEN epoch_us(p.ts) + {MATURITY_US} <= epoch_us({t})
                                                THEN 'OK' END) AS label
                  FROM preds p LEFT JOIN won w ON w.record_id = p.record_id WHERE p.ts <= {t})""",
        [as_of, as_of],
    )
    rows = con.execute(
        f"""SELECT strftime(day, '%Y-%m-%d') AS cohort, count(*) AS n,
                   count(*) FILTER (WHERE labelled) AS n_labelled, avg((y = yhat)::INTEGER) AS accuracy,
                   sum(y * yhat) / nullif(sum(yhat), 0) AS precision,
                   sum(y * yhat) / nullif(sum(y), 0) AS recall,
                   2 * sum(y * yhat) / nullif(sum(y) + sum(yhat), 0) AS f1,
                   -avg(ln(greatest(least(CASE WHEN y = 1 THEN score ELSE 1 - score END, 1 - {EPS!r}),
                                    {EPS!r}))) FILTER (WHERE labelled) AS log_loss,
                   avg((score - y) ** 2) AS brier
            FROM ev GROUP BY day ORDER BY day"""
    ).fetchall()
    names = ["cohort", "n", "n_labelled", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]
    out = [dict(zip(names, row, strict=True)) for row in rows]
    ranked = _ranking(con)
    for row in out:
        row.update(ranked.get(str(row["cohort"]), {"roc_auc": None, "pr_auc": None}))
    return out


def _ranking(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, float | None]]:
    """roc_auc and pr_auc per day over the runs of equal scores, from rows DuckDB sorts."""
    data = con.execute(
        "SELECT (day - DATE '1970-01-01')::BIGINT AS d, score, y FROM ev WHERE labelled ORDER BY d, score"
    ).fetchnumpy()
    day, score, y = (np.asarray(data[c]) for c in ("d", "score", "y"))
    y = y.astype(np.float64)
    out: dict[str, dict[str, float | None]] = {}
    for d in np.unique(day):
        lo, hi = np.searchsorted(day, d), np.searchsorted(day, d, side="right")
        s, t = score[lo:hi], y[lo:hi]
        first = np.r_[True, s[1:] != s[:-1]]
        run = np.cumsum(first) - 1
        pos = np.bincount(run, weights=t)
        neg = np.bincount(run).astype(np.float64) - pos
        p, n = pos.sum(), neg.sum()
        neg_below = np.cumsum(neg) - neg
        pos_above = p - (np.cumsum(pos) - pos)
        neg_above = n - neg_below
        roc = float((pos * (neg_below + neg / 2)).sum() / (p * n)) if p > 0 and n > 0 else None
        ap = float((pos * pos_above / (pos_above + neg_above)).sum() / p) if p > 0 else None
        name = str(np.datetime64(int(d), "D"))
        out[name] = {"roc_auc": roc, "pr_auc": ap}
    return out


if __name__ == "__main__":
    print(json.dumps(evaluate(Path(sys.argv[1]), sys.argv[2])))
