"""`hindsight demo`: sample DSS logs and their outcomes in, label coverage and model metrics out.

Re-runnable: the sample folder is generated once (atomically, so a crash never leaves half of it),
ingestion is exactly once and outcomes are idempotent, so a second run adds nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ingest.file_ingest import FileIngestor
from ingest.summary import IngestSummary
from service.demo_outcomes import write_demo_inputs
from service.errors import QueryError, StorageError
from service.loggen import LogFolderSummary, generate_log_folder
from storage import connect
from storage.metrics import Cohort, MetricsQuery, compute_metrics, metrics_table
from storage.outcome_import import ImportReport, import_outcomes

SAMPLE_FOLDER = "sample-logs"

PER_DAY_SQL = """
PIVOT (SELECT day, service_id || '/' || endpoint_id AS endpoint FROM predictions)
ON endpoint USING count(*) ORDER BY day
"""

SAMPLE_SQL = """
SELECT generation,
       count(*) AS records,
       round(avg(probas['fraud']), 4) AS mean_fraud_proba,
       count(*) FILTER (WHERE prediction = 'fraud') AS flagged
FROM predictions
WHERE service_id = 'fraud' AND endpoint_id = 'score'
GROUP BY generation
ORDER BY generation
""".strip()
"""The sample query the demo prints: how each fraud-model generation scored its traffic."""

DEMO_METRICS = ("endpoint", "cohort", "n", "n_labelled", "coverage", "accuracy", "f1", "roc_auc", "mae", "r2")
"""The metric columns the demo prints (all of them are in `hindsight eval --format json`)."""

COVERAGE_SQL = """
SELECT service_id || '/' || endpoint_id AS endpoint, sum(predictions) AS predictions,
       sum(observed) AS observed, sum(implicit) AS implicit, sum(pending) AS pending
FROM label_coverage GROUP BY ALL ORDER BY endpoint
"""


@dataclass
class Result:
    """Columns and rows of one query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class DemoReport:
    """What one demo run did and what the tables now hold."""

    logs: Path
    generated: LogFolderSummary | None
    """The generated folder's summary, or None when it existed from an earlier run."""
    ingest: IngestSummary
    per_day: Result
    sample_sql: str
    sample: Result
    outcomes: ImportReport
    coverage: Result
    metrics: Result
    """Metrics per endpoint and model generation, as `hindsight eval --by generation` prints them."""


def run_demo(root: Path, *, days: int = 7, per_day: int = 400, seed: int = 42) -> DemoReport:
    """Generate `<root>/sample-logs` if absent, ingest it into the tables under `root`, query them."""
    root = Path(root)
    logs = root / SAMPLE_FOLDER
    generated = None
    if not logs.exists():
        generated = _generate(logs, days=days, per_day=per_day, seed=seed)
    summary = FileIngestor(root).run([logs])
    outcomes_file = write_demo_inputs(root, days=days, per_day=per_day, seed=seed)
    outcomes = import_outcomes(root, outcomes_file)
    con = connect(root)  # policies from the <root>/hindsight.toml the demo wrote
    try:
        per_day_result = _query(con, PER_DAY_SQL)
        sample = _query(con, SAMPLE_SQL)
        coverage = _query(con, COVERAGE_SQL)
        rows = compute_metrics(con, MetricsQuery(by=Cohort.generation))
    finally:
        con.close()
    columns, values = metrics_table(rows, compact=True)
    keep = [i for i, name in enumerate(columns) if name in DEMO_METRICS]
    metrics = Result([columns[i] for i in keep], [tuple(v[i] for i in keep) for v in values])
    return DemoReport(
        logs, generated, summary, per_day_result, SAMPLE_SQL, sample, outcomes, coverage, metrics
    )


def _generate(logs: Path, *, days: int, per_day: int, seed: int) -> LogFolderSummary:
    staging = logs.with_name(logs.name + ".tmp")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        summary = generate_log_folder(staging, days=days, per_day=per_day, seed=seed)
        os.replace(staging, logs)  # the folder appears whole or not at all
    except OSError as exc:
        raise StorageError(f"cannot write the sample logs under {logs.parent}: {exc.strerror}") from exc
    summary.path = logs
    return summary


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> Result:
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return Result(columns, [tuple(row) for row in cursor.fetchall()])
    except duckdb.Error as exc:
        raise QueryError(f"demo query failed: {exc}") from exc
