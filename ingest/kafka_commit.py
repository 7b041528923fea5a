"""One batch of Kafka messages into the tables: quarantine first, then predictions + partition positions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ingest.kafka_batch import PendingBatch, build_lines
from ingest.parser import LineParser, ParseResult
from storage.commit import SourceBatch, commit_sources, committed_position, open_table
from storage.ingest_commit import commit_parsed_batch
from storage.layout import Layout
from storage.schemas import PREDICTIONS


@dataclass(frozen=True)
class PartitionNames:
    """How one topic's partitions are named in the tables (app ids and `source` values)."""

    topic: str
    epoch: int = 0
    """Bumped after the topic was recreated: a new epoch's partitions have positions of their own."""

    @property
    def _stream(self) -> str:
        # a topic name holds no '@' (Kafka's legal characters), so `<topic>@<epoch>` is unambiguous
        return self.topic if self.epoch == 0 else f"{self.topic}@{self.epoch}"

    def app_id(self, partition: int) -> str:
        return f"kafka:{self._stream}:{partition}"

    def source(self, partition: int) -> str:
        return f"{self._stream}/{partition}"


@dataclass
class BatchCommit:
    """What committing one batch did to the predictions table (the table that says where we are)."""

    rows_written: int = 0
    rows_already_committed: int = 0
    quarantined_written: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    stale: dict[int, int] = field(default_factory=dict)
    """Partitions whose committed position was already at or past our end: another writer owns them."""


def commit_batch(
    root: Path,
    names: PartitionNames,
    ends: Mapping[int, int],
    predictions: pa.Table,
    quarantine: pa.Table,
) -> BatchCommit:
    """Commit one batch; `ends` maps each partition to its last seen offset + 1.

    Quarantine first, then predictions with every partition's position (storage.ingest_commit); the
    predictions table's positions are the ones consumption resumes from.
    """
    by_source = {names.source(p): (names.app_id(p), end) for p, end in ends.items()}
    q_report, report = commit_parsed_batch(Layout(root), predictions, quarantine, by_source)
    result = BatchCommit()
    if q_report is not None:
        result.quarantined_written = q_report.rows_written
    result.rows_written = report.rows_written
    result.rows_already_committed = report.rows_already_committed
    by_app = {names.app_id(p): p for p in ends}
    result.positions = {by_app[app]: pos for app, pos in report.positions.items()}
    result.stale = {by_app[app]: report.positions[app] for app in report.stale_sources}
    return result


def commit_start(root: Path, names: PartitionNames, positions: Mapping[int, int]) -> dict[int, int]:
    """Commit `positions` (partition -> the offset reading starts at) of partitions never committed, with no
    rows: a partition started at its end (`auto.offset.reset = latest`) must resume there next time, not
    at a later end. Returns the positions in force (another writer may have committed first)."""
    layout = Layout(root)
    batches = [
        SourceBatch(names.app_id(p), pa.Table.from_batches([], schema=PREDICTIONS), position)
        for p, position in positions.items()
    ]
    report = commit_sources(layout.predictions, layout.lock_file("predictions"), PREDICTIONS, batches)
    by_app = {names.app_id(p): p for p in positions}
    return {by_app[app]: pos for app, pos in report.positions.items()}


def table_positions(root: Path, names: PartitionNames, partitions: list[int]) -> dict[int, int | None]:
    """The next offset to read of each partition, as committed to the predictions table (None: never)."""
    table = open_table(Layout(root).predictions)
    return {p: committed_position(table, names.app_id(p)) for p in partitions}


@dataclass(frozen=True)
class ParsedBatch:
    """One gathered batch after parsing, before committing."""

    messages: int
    tombstones: int
    ends: dict[int, int]
    parsed: ParseResult
    parse_seconds: float


@dataclass(frozen=True)
class BatchOutcome:
    """One gathered batch after parsing and committing: counts for the summary, positions reached."""

    messages: int
    tombstones: int
    skipped: int
    quarantined: int
    days: frozenset[date]
    ends: dict[int, int]
    commit: BatchCommit
    parse_seconds: float
    commit_seconds: float


def parse_batch(
    names: PartitionNames, parser: LineParser, batch: PendingBatch, max_line_bytes: int
) -> ParsedBatch:
    """Build the parser input of `batch` and parse it (runs on the parsing thread)."""
    started = time.monotonic()
    ends = batch.ends()
    lines = build_lines(batch, {p: names.source(p) for p in ends}, max_line_bytes)
    parsed = parser.parse(lines.lines, ingested_at=datetime.now(UTC))
    return ParsedBatch(len(batch), lines.tombstones, ends, parsed, time.monotonic() - started)


def commit_parsed(root: Path, names: PartitionNames, batch: ParsedBatch) -> BatchOutcome:
    """Commit a parsed batch (runs on the committing thread, batches in the order they were parsed)."""
    started = time.monotonic()
    parsed = batch.parsed
    result = commit_batch(root, names, batch.ends, parsed.predictions, parsed.quarantine)
    days = pc.unique(parsed.predictions["day"]).to_pylist() if parsed.predictions.num_rows else []
    return BatchOutcome(
        messages=batch.messages,
        tombstones=batch.tombstones,
        skipped=parsed.skipped,
        quarantined=parsed.quarantined,
        days=frozenset(days),
        ends=batch.ends,
        commit=result,
        parse_seconds=batch.parse_seconds,
        commit_seconds=time.monotonic() - started,
    )
