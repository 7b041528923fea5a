"""The one-pass parser of the common DSS query line (C, `ingest/fastline-c/`) and its Arrow glue.

`parse_fast` runs over the parser's input (the raw line bytes) and sorts every line into one of three: a
record (its prediction rows built in C), a skipped line (another logger, topic or msgType, an empty
batch), or a line left to the DuckDB SQL parser (`ingest/parse_sql.py`), which stays the reference for
every case the C code does not take. For a line it takes, the C code gives the same columns the SQL
parser would (checked by tests/ingest/test_fastline.py on generated and adversarial lines; the rules
are in docs/design.md, "Parser speed (fourth pass)").
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from ingest import _fastline
except ImportError:  # built without a C compiler (the extension is optional): SQL parses every line
    _fastline = None  # type: ignore[assignment]

AVAILABLE = _fastline is not None
"""Whether the C extension was built; when it was not, `LineParser` uses the SQL statements alone."""

UTC_ZONES = frozenset({"UTC", "Etc/UTC"})
"""Source zones under which envelope A's local timestamps are UTC: only then does the C code read them
(other zones go through DuckDB's ICU, which the SQL parser uses)."""

_MAX_CALL_BYTES = 256 * 1024 * 1024
"""Input text per C call at most, so that no output string column can pass Arrow's 2 GiB offsets."""
_MIN_SPLIT_BYTES = 1024 * 1024
"""No piece holds less text than this (below it a thread hand-off costs more than it saves): a chunk of
less is parsed in one call."""

_STRING_COLUMNS = (
    "record_id",
    "service_id",
    "endpoint_id",
    "generation",
    "msg_type",
    "features",
    "context",
    "prediction",
    "ignore_reason",
    "timing",
    "extra",
)
_UTC_TS = pa.timestamp("us", tz="UTC")
_PROBAS = pa.map_(pa.string(), pa.float64())


@dataclass(frozen=True)
class FastParse:
    """What the C parser made of the parser's input table."""

    records: pa.Table  # prediction columns (no day, no ingested_at) plus `idx`
    skipped_idx: pa.Array  # int64 `idx` of the skipped lines
    fallback: np.ndarray  # bool per input row: left to the SQL parser


def parse_fast(base: pa.Table, *, a_is_utc: bool) -> FastParse:
    """Parse `base` (idx, line as binary, text: NULL where not UTF-8, n_bytes, line_bytes, source,
    source_position) with the C parser.

    Lines that are NULL, cut by the reader (line_bytes > n_bytes) or not UTF-8 are left to SQL, which
    quarantines them. The text is cut into pieces parsed on two threads (the C code releases the GIL).
    """
    raw = base.column("line")
    eligible = pc.fill_null(
        pc.and_(
            pc.is_valid(base.column("text")), pc.less_equal(base.column("line_bytes"), base.column("n_bytes"))
        ),
        False,
    )
    eligible_np = eligible.to_numpy(zero_copy_only=False).astype(np.uint8)
    jobs: list[tuple[pa.Array, int, int, bytes]] = []
    start = 0
    for chunk in raw.chunks:
        ok = eligible_np[start : start + len(chunk)]
        for first, count in _pieces(chunk):
            jobs.append((chunk, first, count, ok[first : first + count].tobytes()))
        start += len(chunk)
    outputs = _run_jobs(jobs, a_is_utc)
    status_parts: list[np.ndarray] = []
    tables: list[pa.Table] = []
    row0 = 0
    for (_, _, count, _), out in zip(jobs, outputs, strict=True):
        status_parts.append(np.frombuffer(out["status"], np.uint8))
        if out["rows"]:
            tables.append(_records(out, row0))
        row0 += count
    status = np.concatenate(status_parts) if status_parts else np.zeros(0, np.uint8)
    idx = base.column("idx")
    records = pa.concat_tables(tables) if tables else None
    if records is not None:
        rows = records.column("row")
        records = records.drop_columns(["row"])
        records = records.append_column("idx", idx.take(rows))
        records = records.append_column("source", base.column("source").take(rows))
        records = records.append_column("source_position", base.column("source_position").take(rows))
    return FastParse(
        records=records if records is not None else _EMPTY,
        skipped_idx=idx.filter(pa.array(status == _fastline.SKIP)).combine_chunks(),
        fallback=status == _fastline.FALLBACK,
    )


def _run_jobs(jobs: list[tuple[pa.Array, int, int, bytes]], a_is_utc: bool) -> list[dict[str, Any]]:
    """The C calls, in order: on the pool's two threads, or on this thread for a single piece or once the
    interpreter is shutting down (the pool then takes no work, and a parse must not fail for that)."""
    if len(jobs) > 1:
        try:
            return list(_pool().map(lambda job: _call(job, a_is_utc), jobs))
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            pass
    return [_call(job, a_is_utc) for job in jobs]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Two threads for the C calls (this machine's target has two cores; more would only queue)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hindsight-fastline")
        return _POOL


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, so start afresh (a pool inherited
    with them would wait for ever)."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _call(job: tuple[pa.Array, int, int, bytes], a_is_utc: bool) -> dict[str, Any]:
    chunk, first, count, eligible = job
    _, offsets, data = chunk.buffers()
    out: dict[str, Any] = _fastline.parse(
        data if data is not None else b"", offsets, chunk.offset + first, count, eligible, a_is_utc
    )
    return out


def _pieces(chunk: pa.Array) -> list[tuple[int, int]]:
    """(first row, row count) of consecutive pieces of `chunk`: two for a large chunk (one per thread),
    none holding more than _MAX_CALL_BYTES of text."""
    n = len(chunk)
    if n == 0:
        return []
    offsets = np.frombuffer(chunk.buffers()[1], np.int32, n + 1, chunk.offset * 4)
    total = int(offsets[n] - offsets[0])
    size = min(_MAX_CALL_BYTES, max(_MIN_SPLIT_BYTES, total // 2 + 1))
    pieces, first = [], 0
    while first < n:
        end = int(np.searchsorted(offsets, offsets[first] + size, side="right")) - 1
        end = min(max(end, first + 1), n)
        pieces.append((first, end - first))
        first = end
    return pieces


def _bitmap(valid: bytes, n: int) -> pa.Buffer | None:
    flags = np.frombuffer(valid, np.uint8, n)
    if flags.all():
        return None
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


def _string(parts: tuple[bytes, bytes, bytes], n: int) -> pa.Array:
    offsets, data, valid = parts
    return pa.Array.from_buffers(
        pa.string(), n, [_bitmap(valid, n), pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _fixed(data: bytes, valid: bytes | None, n: int, dtype: pa.DataType) -> pa.Array:
    bitmap = _bitmap(valid, n) if valid is not None else None
    return pa.Array.from_buffers(dtype, n, [bitmap, pa.py_buffer(data)])


def _records(out: dict[str, Any], row0: int) -> pa.Table:
    """The C parser's buffers as Arrow columns (`row` counts from the start of `lines_in`)."""
    n = int(out["rows"])
    columns: dict[str, pa.Array] = {
        "row": pc.add(_fixed(out["row"], None, n, pa.int64()), row0),
        "ts": _fixed(out["ts"], None, n, _UTC_TS),
    }
    for name in _STRING_COLUMNS:
        columns[name] = _string(out[name], n)
    columns["prediction_value"] = _fixed(
        out["prediction_value"], out["prediction_value_valid"], n, pa.float64()
    )
    keys_parts: tuple[bytes, bytes, bytes] = out["proba_keys"]
    n_entries = len(keys_parts[0]) // 4 - 1
    keys = _string(keys_parts, n_entries)
    values = _fixed(out["proba_values"], None, n_entries, pa.float64())
    probas_valid = np.frombuffer(out["probas_valid"], np.uint8, n)
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(out["probas_offsets"])])
    columns["probas"] = pa.MapArray.from_arrays(
        offsets, keys, values, type=_PROBAS, mask=pa.array(probas_valid == 0)
    )
    columns["proba_percentile"] = _fixed(
        out["proba_percentile"], out["proba_percentile_valid"], n, pa.int32()
    )
    columns["ignored"] = pa.array(np.frombuffer(out["ignored"], np.uint8, n).astype(bool))
    return pa.table(columns)


_EMPTY = pa.table(
    {
        "ts": pa.array([], _UTC_TS),
        **{name: pa.array([], pa.string()) for name in _STRING_COLUMNS},
        "prediction_value": pa.array([], pa.float64()),
        "probas": pa.array([], _PROBAS),
        "proba_percentile": pa.array([], pa.int32()),
        "ignored": pa.array([], pa.bool_()),
        "idx": pa.array([], pa.int64()),
        "source": pa.array([], pa.string()),
        "source_position": pa.array([], pa.int64()),
    }
)
