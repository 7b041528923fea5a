"""The flusher: moves intake-log outcomes exactly once into the `outcomes` Delta table.

Protocol (each step named for crash tests):
1. read the committed position `p` of `intake:<uuid>` from the Delta table (the truth after a crash);
2. `outcomes.flush_trim` delete pending rows below `p` (already in Delta; housekeeping, never fatal);
3. read up to `batch_rows` pending rows (and about `batch_bytes` of them) with seq >= p, in seq order,
   none past the highest seq pending when the flush started;
4. `outcomes.flush_before_commit` commit them with position `last_seq + 1` via `commit_sources`,
   which drops rows below the committed position (a replay after a crash adds nothing);
5. `outcomes.flush_after_commit` delete the flushed pending rows; outcome_ids stay for idempotency;
   steps 3-5 repeat until the rows pending at the start are moved;
6. checkpoint the intake WAL (the writer never does, to keep that work off acknowledgements).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from service.errors import CommitConflict, HindsightError, StorageError
from storage.commit import SourceBatch, commit_sources, committed_position, open_table
from storage.compact import Compactor
from storage.crashpoints import crash_point
from storage.layout import Layout
from storage.outcome_intake import DEFAULT_PENDING_BYTES, PENDING_COLUMNS, ROW_KEYS, IntakeLog
from storage.schemas import OUTCOMES, UTC_TS

log = logging.getLogger("hindsight.flusher")

DEFAULT_BATCH_ROWS = 200_000
STALL_INTERVALS = 30
STALL_MIN_SECONDS = 60.0
STOP_TIMEOUT_S = 30.0
COMPACT_EVERY_S = 600.0
_US_PER_DAY = 86_400_000_000


@dataclass
class FlushReport:
    """What one flush moved."""

    rows_written: int = 0
    commits: int = 0
    position: int = 0


def pending_to_arrow(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Pending intake rows (PENDING_COLUMNS order) as a table of the OUTCOMES schema."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in PENDING_COLUMNS]
    by_name = dict(zip(PENDING_COLUMNS, columns, strict=True))
    occurred = pa.array(by_name["occurred_at_us"], pa.int64())
    received = pa.array(by_name["received_at_us"], pa.int64())
    days = pa.array([us // _US_PER_DAY for us in by_name["received_at_us"]], pa.int32())
    arrays = {
        "outcome_id": pa.array(by_name["outcome_id"], pa.string()),
        "record_id": pa.array(by_name["record_id"], pa.string()),
        "key": pa.array(by_name["key"], pa.string()),
        "service_id": pa.array(by_name["service_id"], pa.string()),
        "endpoint_id": pa.array(by_name["endpoint_id"], pa.string()),
        "outcome_type": pa.array(by_name["outcome_type"], pa.string()),
        "value": pa.array(by_name["value"], pa.string()),
        "value_number": pa.array(by_name["value_number"], pa.float64()),
        "value_json": pa.array(by_name["value_json"], pa.string()),
        "occurred_at": occurred.cast(UTC_TS),
        "received_at": received.cast(UTC_TS),
        "attributes": pa.array(by_name["attributes"], pa.string()),
        "key_id": pa.array(by_name["key_id"], pa.string()),
        "intake_seq": pa.array(by_name["seq"], pa.int64()),
        "day": days.cast(pa.date32()),
    }
    return pa.table(arrays, schema=OUTCOMES)


_PENDING_TYPES = {"value_number": pa.float64(), "occurred_at_us": pa.int64(), "received_at_us": pa.int64()}
_PENDING_SCHEMA = pa.schema(
    [("seq", pa.int64())]
    + [
        (key, _PENDING_TYPES.get(name, pa.string()))
        for key, name in zip(ROW_KEYS, PENDING_COLUMNS[1:], strict=True)
    ]
)
"""The NDJSON lines of `IntakeLog.pending_ndjson`: `seq` and the stored row's keys (ROW_KEYS)."""


def _read_ndjson(text: bytes, block_size: int) -> pa.Table:
    return pa_json.read_json(
        io.BytesIO(text),
        read_options=pa_json.ReadOptions(block_size=block_size),
        parse_options=pa_json.ParseOptions(
            explicit_schema=_PENDING_SCHEMA, unexpected_field_behavior="error"
        ),
    )


def ndjson_to_arrow(text: bytes) -> pa.Table:
    """Pending rows as NDJSON (`IntakeLog.pending_ndjson`) as a table of the OUTCOMES schema, in seq order.

    Arrow's JSON reader parses in C++ without holding the GIL; building Arrow arrays from Python
    rows held it for seconds per 100,000 outcomes, while requests waited for it.
    """
    if not text:
        return pending_to_arrow([])
    try:
        raw = _read_ndjson(text, max(1 << 20, len(text) // 4 + 1))
    except (pa.ArrowInvalid, ValueError):
        # A row longer than a block (an outcome of a few MiB) cannot be parsed in blocks ("straddling
        # object"); one block of the whole text always can. Failing here fail-stopped the API for good:
        # the row was acknowledged and every restart met it again (review finding).
        try:
            raw = _read_ndjson(text, len(text) + 1)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise StorageError(f"cannot read pending outcomes from the intake log: {exc}") from exc
    raw = raw.select(_PENDING_SCHEMA.names).rename_columns(list(PENDING_COLUMNS))
    if not _ascending(raw["seq"]):  # the query orders by seq; sorting (a `take` of every column) is rare
        raw = raw.sort_by("seq")
    received = raw["received_at_us"]
    days = pc.divide(received, _US_PER_DAY).cast(pa.int32())
    arrays = [raw[name] for name in PENDING_COLUMNS[1:10]]
    arrays += [
        raw["occurred_at_us"].cast(UTC_TS),
        received.cast(UTC_TS),
        raw["attributes"],
        raw["key_id"],
        raw["seq"],
        days.cast(pa.date32()),
    ]
    return pa.Table.from_arrays(arrays, schema=OUTCOMES)


def _ascending(seqs: pa.ChunkedArray) -> bool:
    """Whether the seqs are strictly ascending (one vectorised comparison of neighbours)."""
    if len(seqs) < 2:
        return True
    later = pc.greater(seqs.slice(1), seqs.slice(0, len(seqs) - 1))
    return bool(pc.all(later).as_py())


def flush_once(
    intake: IntakeLog,
    root: Path,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_PENDING_BYTES,
) -> FlushReport:
    """Move every pending outcome of `intake` into the Delta table under `root`, exactly once, in
    commits of at most `batch_rows` rows and about `batch_bytes` bytes (one row may exceed it alone)."""
    layout = Layout(root)
    report = FlushReport()
    position = committed_position(open_table(layout.outcomes), intake.app_id) or 0
    report.position = position
    intake.forget_below(position)
    crash_point("outcomes.flush_trim")
    # what is pending now, and no more: under steady traffic a flush that read "until nothing is pending"
    # never returned, so neither the interval, nor the compaction, nor the stall watch saw it end
    last = intake.last_pending_seq()
    while True:
        pending = (
            b"" if last is None else intake.pending_ndjson(position, batch_rows, batch_bytes, through=last)
        )
        rows = ndjson_to_arrow(pending)
        if not rows.num_rows:
            intake.checkpoint()
            return report
        end = int(rows["intake_seq"][-1].as_py()) + 1
        batch = SourceBatch(app_id=intake.app_id, rows=rows, end=end)
        crash_point("outcomes.flush_before_commit")
        result = commit_sources(
            layout.outcomes, layout.lock_file("outcomes"), OUTCOMES, [batch], position_column="intake_seq"
        )
        crash_point("outcomes.flush_after_commit")
        report.rows_written += result.rows_written
        report.commits += 1 if result.version is not None and result.rows_written else 0
        position = result.positions.get(intake.app_id, end)
        report.position = position
        intake.forget_below(position)


class Flusher:
    """A background thread running `flush_once` every `interval` seconds; a storage failure is fail-stop."""

    def __init__(
        self,
        intake: IntakeLog,
        root: Path,
        *,
        interval: float,
        on_flush: Callable[[FlushReport], None] | None = None,
        compact_every: float = COMPACT_EVERY_S,
    ) -> None:
        self._intake = intake
        self._root = root
        self._interval = interval
        self._on_flush = on_flush
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hindsight-outcome-flusher", daemon=True)
        self.last_error: str | None = None
        self._last_done = time.monotonic()
        self._compactor = Compactor.of(root, "outcomes", every=compact_every)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def seconds_since_flush(self) -> float:
        """Seconds since the last flush that completed (or since the start): readiness watches it, since a
        flusher waiting for the outcomes table's lock (held by another process) is alive but stuck."""
        return time.monotonic() - self._last_done

    @property
    def stalled(self) -> bool:
        """No flush completed for STALL_INTERVALS intervals (and at least STALL_MIN_SECONDS)."""
        return self.seconds_since_flush > max(STALL_INTERVALS * self._interval, STALL_MIN_SECONDS)

    def start(self) -> None:
        self._thread.start()

    def trigger(self) -> None:
        """Flush now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop after one last flush; give up waiting after `timeout` seconds (the thread is a daemon and
        what it did not move stays in the intake log, flushed at the next start). Shutdown used to hang
        for as long as another process held the outcomes table's lock (review finding)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "the last flush did not finish within %.0f s (is another process holding %s?); the "
                    "outcomes not yet in Delta stay in the intake log and are moved at the next start",
                    timeout,
                    Layout(self._root).lock_file("outcomes"),
                )

    def _run(self) -> None:
        conflicts = 0
        while True:
            stopping = self._stopping.is_set()
            try:
                report = flush_once(self._intake, self._root)
                self._last_done = time.monotonic()
                conflicts = 0
                # each flush is a commit with small files of its own; a day of them is merged now and then
                self._compactor.maybe()
                if self._on_flush is not None and report.rows_written:
                    self._on_flush(report)
            except CommitConflict as exc:
                conflicts += 1  # another host committed first: retry at the next tick, up to a point
                if conflicts >= 5:
                    self._failed(exc)
                    return
            except HindsightError as exc:
                self._failed(exc)
                return
            except Exception as exc:  # a bug or an untranslated error: stop writes rather than die silently
                self._failed(StorageError(f"unexpected {type(exc).__name__}: {exc}"))
                return
            if stopping:
                return
            self._wake.wait(self._interval)
            self._wake.clear()

    def _failed(self, exc: HindsightError) -> None:
        self.last_error = exc.message
        log.error("outcome flusher stopped: %s", exc.message)
        self._intake.fail(f"flush to Delta failed: {exc.message}")
