"""The outcome views: `outcomes` (every event) and `outcomes_latest` (the current outcome per target)."""

from __future__ import annotations

import duckdb

from storage.layout import Layout
from storage.views import ViewSpec, delta_view, register_view

OUTCOMES_VIEW = "outcomes"
LATEST_VIEW = "outcomes_latest"

LATEST_SQL = f"""
CREATE OR REPLACE TEMP VIEW {LATEST_VIEW} AS
SELECT * FROM {OUTCOMES_VIEW}
QUALIFY row_number() OVER (
    PARTITION BY record_id, key, outcome_type, service_id, endpoint_id
    ORDER BY occurred_at DESC, received_at DESC, intake_seq DESC, outcome_id DESC
) = 1
"""
# PARTITION BY groups NULLs together, so record_id-targeted and key-targeted outcomes each form their
# own groups; the last two tie-breakers only make the choice deterministic for identical timestamps.


def _create_latest(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    con.execute(LATEST_SQL)


register_view(
    ViewSpec(
        OUTCOMES_VIEW,
        "One row per acknowledged outcome event (append-only: a correction is a new row), as flushed "
        "from the intake log; `key` is canonical JSON of the target's paths, NULL for record_id targets.",
        delta_view(OUTCOMES_VIEW),
    )
)
register_view(
    ViewSpec(
        LATEST_VIEW,
        "One row per target (record_id or key), outcome_type, service_id and endpoint_id: the event with "
        "the latest occurred_at, ties broken by the latest received_at (a correction wins).",
        _create_latest,
    )
)
