"""Committing one parsed batch of query-log lines: quarantine rows first, then predictions + positions.

Shared by the file tailer and the Kafka consumer. Both tables carry the same app ids: a crash
between the two commits replays the batch, and the quarantine commit then drops the rows below its
own committed positions. The predictions commit carries every source's position (even a source
that gave no rows), and its positions are the ones ingestion resumes from.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from storage.commit import CommitReport, SourceBatch, commit_sources
from storage.crashpoints import crash_point
from storage.layout import Layout
from storage.schemas import PREDICTIONS, QUARANTINE

SourceEnds = Mapping[str, tuple[str, int]]
"""Per source name (the rows' `source` column): its app id and the position the batch reached."""


def split_by_source(rows: pa.Table, ends: SourceEnds) -> list[SourceBatch]:
    """One SourceBatch per source of the batch (possibly with no rows: the position moves anyway)."""
    if len(ends) == 1:
        ((app_id, end),) = ends.values()
        return [SourceBatch(app_id, rows, end)]
    batches = []
    for source, (app_id, end) in ends.items():
        mine = (
            rows.filter(pc.equal(rows["source"], pa.scalar(source, pa.string()))) if rows.num_rows else rows
        )
        batches.append(SourceBatch(app_id, mine, end))
    return batches


def commit_parsed_batch(
    layout: Layout, predictions: pa.Table, quarantine: pa.Table, ends: SourceEnds
) -> tuple[CommitReport | None, CommitReport]:
    """Commit the batch's quarantine rows (if any), then its predictions with every source's position.

    Returns the quarantine commit's report (None when there was nothing to quarantine) and the
    predictions commit's report.
    """
    bad = [batch for batch in split_by_source(quarantine, ends) if batch.rows.num_rows]
    q_report = None
    if bad:
        q_report = commit_sources(layout.quarantine, layout.lock_file("quarantine"), QUARANTINE, bad)
    crash_point("ingest.after_quarantine")
    report = commit_sources(
        layout.predictions, layout.lock_file("predictions"), PREDICTIONS, split_by_source(predictions, ends)
    )
    return q_report, report
