"""Parse DSS query-log lines (from files or Kafka) into predictions and quarantine rows, in DuckDB."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest import fastline
from ingest.fastline import UTC_ZONES, parse_fast
from ingest.parse_sql import BATCH_QUERY, LINES_QUERY, MACROS
from service.errors import ConfigError, InputError
from storage.schemas import PREDICTIONS, QUARANTINE
from storage.views import DUCKDB_FAILURES, failure_text

log = logging.getLogger(__name__)

RAW_LIMIT = 64 * 1024
"""`quarantine.raw` keeps at most this many bytes of a line (its full size is in `raw_bytes`)."""

_INPUT_TS = pa.timestamp("us", tz="UTC")
_SCAN_BATCH_ROWS = 8192
_REQUIRED = ("line", "source", "source_position", "line_bytes")
_OTHERS = pa.schema([("kind", pa.int32()), ("idx", pa.int64()), ("reason", pa.string())])


@dataclass(frozen=True)
class _Rows:
    """Parsed lines: tables of record rows (the prediction columns, from the C parser or the SQL query;
    `_predictions` casts each) and the small (kind, idx, reason) rows of quarantined and skipped lines."""

    records: list[pa.Table]
    others: pa.Table


class _Session:
    """One thread's DuckDB cursor, with each statement prepared on it once.

    `con.sql(query)` binds a query to describe it and binds it again to run it; with the statement
    prepared, a call binds it once (the new input relation makes DuckDB rebind it), which saves
    ~15 ms of CPU per statement per call: most of the cost of parsing a small batch.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, source_tz: str) -> None:
        self.cursor = cursor
        self.cursor.execute(f"SET TimeZone = '{source_tz}'")
        self._prepared: set[str] = set()

    def run(self, name: str, view: str, table: pa.Table, query: str) -> pa.Table:
        """Run the statement `name` (`query`, which reads `view`) over `table`.

        Only an input of one scan batch runs the prepared statement: DuckDB runs an EXECUTE on one
        thread (measured: 110,000 lines took 0.88 s wall and 0.90 s CPU prepared with two threads
        allowed, 0.48 s wall and 0.89 s CPU as a plain query), and one batch is scanned by one thread
        anyway, so there the saved bind is free.
        """
        self.cursor.register(view, table)
        try:
            statement = query
            if table.num_rows <= _SCAN_BATCH_ROWS:
                if name not in self._prepared:
                    self.cursor.execute(f"PREPARE {name} AS {query}")
                    self._prepared.add(name)
                statement = f"EXECUTE {name}"
            result = self.cursor.sql(statement)
            if result is None:  # cannot happen for a SELECT; keeps the type checker honest
                raise duckdb.InternalException(f"{name} returned no relation")
            return result.to_arrow_table()
        finally:
            self.cursor.unregister(view)  # do not keep the input alive until the next call


@dataclass(frozen=True)
class ParseResult:
    """What one call to `LineParser.parse` produced, with the counts the callers report."""

    predictions: pa.Table
    quarantine: pa.Table
    lines: int
    records: int
    skipped: int
    quarantined: int


class LineParser:
    """Turns a table of raw log lines into rows of the predictions and quarantine tables.

    Lines of the common shape are parsed by the C parser (`ingest.fastline`); the others, and every
    line when `fast` is false, by the DuckDB SQL statements (`ingest.parse_sql`), which give the same
    rows for the lines both can parse. Thread-safe: the C parser holds no state and releases the GIL;
    each thread's SQL runs on its own DuckDB cursor of the parser's connection.
    """

    def __init__(self, source_tz: str = "UTC", *, fast: bool = True) -> None:
        self.source_tz = _validate_zone(source_tz)
        if fast and not fastline.AVAILABLE:
            _warn_no_c_parser()
        self.fast = fast and fastline.AVAILABLE
        self._con = duckdb.connect(":memory:")
        self._con.execute(MACROS)
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> _Session:
        """This thread's cursor and prepared statements (made on first use)."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            with self._lock:
                cursor = self._con.cursor()
            session = _Session(cursor, self.source_tz)
            self._local.session = session
        return session

    def parse(self, lines: pa.Table, *, ingested_at: datetime | None = None) -> ParseResult:
        """Parse `lines` (line, source, source_position, line_bytes[, fallback_ts]); bad lines never raise."""
        missing = [name for name in _REQUIRED if name not in lines.column_names]
        if missing:
            raise InputError(
                f"the lines table lacks column(s) {', '.join(missing)}; it needs {', '.join(_REQUIRED)}",
                details={"missing": missing, "columns": lines.column_names},
            )
        ingested = _utc(ingested_at)
        base = _base(lines)
        out = self._run(base)
        return _assemble(out, lines, base, ingested)

    def _run(self, base: pa.Table) -> _Rows:
        """The C parser over every line, then the SQL statements over the lines it left."""
        if not self.fast or base.num_rows == 0:
            return self._sql_resilient(_with_text(base))
        fast = parse_fast(base, a_is_utc=self.source_tz in UTC_ZONES)
        others = [_kind_rows(fast.skipped_idx, 2, None)]
        records = [fast.records]
        if fast.fallback.any():
            sql = self._sql_resilient(_with_text(base.filter(pa.array(fast.fallback))))
            records += sql.records
            others.append(sql.others)
        return _Rows(records, _concat(others))

    def _sql_resilient(self, prepared: pa.Table) -> _Rows:
        """Run the queries; if DuckDB fails on some line, split the batch to isolate and quarantine it."""
        try:
            return self._sql(prepared)
        except DUCKDB_FAILURES as exc:
            if prepared.num_rows <= 1:
                message = failure_text(exc).splitlines()[0][:200]
                return _Rows([], _failed_rows(prepared, f"could not be parsed: {message}"))
        half = prepared.num_rows // 2
        first, second = (
            self._sql_resilient(prepared.slice(0, half)),
            self._sql_resilient(prepared.slice(half)),
        )
        return _Rows(first.records + second.records, _concat([first.others, second.others]))

    def _sql(self, prepared: pa.Table) -> _Rows:
        """The query output (see `ingest.parse_sql`), split once into record rows (single and batch
        records) and (kind, idx, reason) rows for quarantined and skipped lines."""
        session = self._session()
        per_line = session.run("hs_lines", "lines_in", prepared, LINES_QUERY)
        kind = per_line.column("kind").to_numpy()
        is_batch = kind == 3
        records = _split(per_line.drop_columns(["env"]), kind)
        if not is_batch.any():
            return records
        batch_lines = per_line.filter(pa.array(is_batch))
        # `idx` counts from the start of the whole input; `prepared` may be a slice of it or the lines
        # the C parser left (both keep idx ascending): find each batch line's row by its idx
        at = np.searchsorted(prepared.column("idx").to_numpy(), batch_lines.column("idx").to_numpy())
        batch_lines = batch_lines.append_column("s", prepared.column("s").take(pa.array(at)))
        exploded = session.run("hs_batch", "batch_in", batch_lines, BATCH_QUERY).cast(
            per_line.drop_columns(["env"]).schema
        )
        items = _split(exploded, exploded.column("kind").to_numpy())
        others = [records.others, items.others]
        empty = np.setdiff1d(batch_lines.column("idx").to_numpy(), exploded.column("idx").to_numpy())
        if len(empty):  # a batch of zero items yields no row: count the line as skipped
            others.append(_kind_rows(pa.array(empty, pa.int64()), 2, None))
        return _Rows(records.records + items.records, _concat(others))


@functools.cache
def _warn_no_c_parser() -> None:
    """Said once per process: the install has no C parser, so parsing is several times slower."""
    log.warning(
        "the C line parser (ingest._fastline) is not built: every line is parsed by DuckDB SQL, several "
        "times slower; reinstall hindsight with a C compiler and the Python headers present"
    )


def _validate_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}: source_tz must be an IANA zone name like 'UTC' or 'Europe/Paris'",
            details={"source_tz": name},
        ) from exc
    probe = duckdb.connect(":memory:")
    try:
        probe.execute(f"SET TimeZone = '{name}'")
    except duckdb.Error as exc:
        raise ConfigError(
            f"time zone {name!r} is not known to DuckDB's ICU data; use another IANA name for the same zone",
            details={"source_tz": name},
        ) from exc
    finally:
        probe.close()
    return name


def _utc(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:  # a naive instant is taken as UTC, the zone of every stored timestamp
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _base(lines: pa.Table) -> pa.Table:
    """The input with its row number `idx` and sizes: `line` (binary, as read), `text` (the same bytes
    viewed as UTF-8 text, NULL where they are not UTF-8), n_bytes, line_bytes, source, source_position,
    fallback_ts."""
    n = lines.num_rows
    raw = lines.column("line")
    if raw.type != pa.binary():
        raw = raw.cast(pa.binary())
    if "fallback_ts" in lines.column_names:
        fallback = lines.column("fallback_ts").cast(_INPUT_TS)
    else:
        fallback = pa.nulls(n, _INPUT_TS)
    return pa.table(
        {
            "idx": pa.array(np.arange(n, dtype=np.int64)),
            "line": raw,
            "text": _as_utf8(raw),
            "n_bytes": pc.binary_length(raw).cast(pa.int64()),
            "line_bytes": lines.column("line_bytes").cast(pa.int64()),
            "source": lines.column("source").cast(pa.string()),
            "source_position": lines.column("source_position").cast(pa.int64()),
            "fallback_ts": fallback,
        }
    )


def _with_text(base: pa.Table) -> pa.Table:
    """The SQL statements' `lines_in`: `base` with the newline-stripped text `s` (NULL when not UTF-8)
    instead of the bytes, sliced so that DuckDB scans it on all cores."""
    text = pc.utf8_rtrim(base.column("text"), characters="\r\n")
    table = base.drop_columns(["line", "text"]).add_column(1, "s", text)
    # DuckDB scans an Arrow table with one thread per record batch: slice (zero-copy) so all cores work
    return pa.Table.from_batches(table.to_batches(max_chunksize=_SCAN_BATCH_ROWS), table.schema)


def _as_utf8(raw: pa.ChunkedArray) -> pa.ChunkedArray:
    """View binary chunks as strings without copying; rows that are not UTF-8 become NULL."""
    chunks: list[pa.Array] = []
    for chunk in raw.chunks:
        view = chunk.view(pa.string())
        try:
            view.validate(full=True)
        except pa.ArrowInvalid:
            view = pa.array([_decode_or_none(v) for v in chunk.to_pylist()], pa.string())
        chunks.append(view)
    return pa.chunked_array(chunks, pa.string())


def _decode_or_none(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split(out: pa.Table, kind: np.ndarray) -> _Rows:
    """Full rows of the records (kind 0) and (kind, idx, reason) of the other non-batch rows: one copy of
    the wide columns at most, none when every row is a record."""
    is_record = kind == 0
    n_records = int(np.count_nonzero(is_record))
    records = out if n_records == out.num_rows else out.filter(pa.array(is_record))
    rest = out.select(["kind", "idx", "reason"])
    others = (
        rest.slice(0, 0) if n_records == out.num_rows else rest.filter(pa.array(~is_record & (kind != 3)))
    )
    return _Rows([records] if n_records else [], others.cast(_OTHERS))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of one schema as one table (zero-copy: their chunks are kept); empty tables are dropped."""
    full = [table for table in tables if table.num_rows]
    if len(full) <= 1:
        return full[0] if full else tables[0]
    return pa.concat_tables(full)


def _failed_rows(prepared: pa.Table, reason: str) -> pa.Table:
    """Rows of the query's output shape that quarantine every line of `prepared` with `reason`."""
    return _kind_rows(prepared.column("idx"), 1, reason)


def _kind_rows(idx: pa.Array | pa.ChunkedArray, kind: int, reason: str | None) -> pa.Table:
    """Output rows with only `kind`, `idx` and `reason` set (the rest is filled in by `_assemble`)."""
    n = len(idx)
    return pa.table(
        {
            "kind": pa.array([kind] * n, pa.int32()),
            "idx": idx,
            "reason": pa.array([reason] * n, pa.string()),
        },
        schema=_OTHERS,
    )


def _assemble(out: _Rows, lines: pa.Table, base: pa.Table, ingested: datetime) -> ParseResult:
    """Turn the split query output into the two tables and the counts."""
    kind = out.others.column("kind").to_numpy()
    n_records = sum(table.num_rows for table in out.records)
    n_quarantined = int(np.count_nonzero(kind == 1))
    n_skipped = int(np.count_nonzero(kind == 2))
    bad = out.others.select(["idx", "reason"])
    # in line order: which lines reach each statement (and where a failing batch is split) depends on
    # what the C parser took, so the order of the pieces alone would differ between the two paths
    bad = bad.filter(pa.array(kind == 1)).sort_by("idx") if n_quarantined else bad.slice(0, 0)
    return ParseResult(
        predictions=_predictions(out.records, ingested),
        quarantine=_quarantine(bad, lines, base, ingested),
        lines=lines.num_rows,
        records=n_records,
        skipped=n_skipped,
        quarantined=n_quarantined,
    )


def _predictions(parts: list[pa.Table], ingested: datetime) -> pa.Table:
    """The record rows as one PREDICTIONS table."""
    tables = [_prediction_rows(part, ingested) for part in parts if part.num_rows]
    if not tables:
        return PREDICTIONS.empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _prediction_rows(records: pa.Table, ingested: datetime) -> pa.Table:
    """Record rows (of the SQL query or the C parser) as a PREDICTIONS table (UTC `ts`, its UTC `day`,
    one `ingested_at`)."""
    n = records.num_rows
    ts = records.column("ts").cast(_INPUT_TS)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for field in PREDICTIONS:
        if field.name == "ts":
            columns["ts"] = ts
        elif field.name == "day":
            columns["day"] = ts.cast(pa.date32())  # the UTC date: ts is tagged UTC, so Arrow casts in UTC
        elif field.name == "ingested_at":
            columns["ingested_at"] = pa.repeat(pa.scalar(ingested, _INPUT_TS), n)
        else:
            columns[field.name] = records.column(field.name).cast(field.type)
    return pa.table(columns, schema=PREDICTIONS)


def _quarantine(bad: pa.Table, lines: pa.Table, base: pa.Table, ingested: datetime) -> pa.Table:
    """The kind-1 rows as a QUARANTINE table; `raw` is rebuilt in Python from the input bytes (rare)."""
    if bad.num_rows == 0:
        return QUARANTINE.empty_table()
    rows = bad.column("idx").to_numpy()
    picked = lines.take(pa.array(rows))
    raw_lines = picked.column("line").to_pylist()
    n_bytes = pc.fill_null(base.column("n_bytes").take(pa.array(rows)), 0).to_numpy()
    line_bytes = pc.fill_null(picked.column("line_bytes"), 0).to_numpy()
    n = bad.num_rows
    return pa.table(
        {
            "source": picked.column("source").cast(pa.string()),
            "source_position": picked.column("source_position").cast(pa.int64()),
            "reason": bad.column("reason").cast(pa.string()),
            "raw": pa.array([_raw_text(b) for b in raw_lines], pa.string()),
            "raw_bytes": pa.array(np.maximum(n_bytes, line_bytes).astype(np.int64)),
            "ingested_at": pa.repeat(pa.scalar(ingested, _INPUT_TS), n),
            "day": pa.repeat(pa.scalar(ingested.date(), pa.date32()), n),
        },
        schema=QUARANTINE,
    )


def _raw_text(line: bytes | str | None) -> str:
    """The line as text for `quarantine.raw`: newline-stripped, cut at RAW_LIMIT bytes, bad bytes replaced."""
    data = line.encode() if isinstance(line, str) else (line or b"")
    data = data.rstrip(b"\r\n")
    if len(data) > RAW_LIMIT:
        data = data[:RAW_LIMIT]
        # do not leave half a character at the cut: drop an incomplete trailing UTF-8 sequence
        for back in range(1, 4):
            byte = data[-back]
            if byte & 0xC0 == 0xC0:  # lead byte of a sequence that may be incomplete
                need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
                if need > back:
                    data = data[:-back]
                break
            if byte & 0x80 == 0:
                break
    return data.decode("utf-8", errors="replace")
