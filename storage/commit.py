"""The commit protocol: rows and the source positions they came from land in one Delta commit.

Every source (a file, identified by content; a Kafka topic-partition) has an `app_id`. Its position
is stored as a Delta application transaction (`txn` action) in the same commit as its rows, so after
any crash the table itself says exactly how far each source got. Steps, in order:

1. `commit.lock`   take the table's advisory lock (writers on one host serialise here);
2. read the committed position `v` of every source in the batch;
3. drop rows whose `source_position` < `v` (already committed by us before a crash, or by a
   fenced-off writer): this is what makes replays and stale writers harmless;
4. `commit.before` write the Parquet files and commit rows + new positions in one Delta commit;
5. `commit.after`  the commit's files, log entry and folders are fsynced (`sync_commits`: delta-rs
   renames them into place without an fsync), so the commit is durable; only now may the caller
   move checkpoints or acknowledge.

A crash before step 4 completes leaves at most unreferenced Parquet files, which readers ignore.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from service.errors import CommitConflict, StorageError
from storage.crashpoints import crash_point


@dataclass(frozen=True)
class SourceBatch:
    """Rows read from one source, and the position reached in it (the next position to read)."""

    app_id: str
    rows: pa.Table
    end: int


@dataclass
class CommitReport:
    """What one commit did."""

    version: int | None = None
    rows_written: int = 0
    rows_already_committed: int = 0
    stale_sources: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)


def open_table(path: Path) -> DeltaTable | None:
    """The Delta table at `path`, or None when none was created yet."""
    try:
        return DeltaTable(str(path))
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise StorageError(f"cannot open Delta table {path}: {exc}") from exc
    except BaseException as exc:
        _reraise_control_flow(exc)
        raise StorageError(f"cannot open Delta table {path}: delta-rs failed: {exc}") from exc


def open_table_version(path: Path, version: int) -> DeltaTable:
    """The Delta table at `path` as it was at `version` (time travel), with every data file of that
    version still on disk; a StorageError says which of those is not the case."""
    if version < 0:
        raise StorageError(f"Delta table {path}: version {version} does not exist (versions start at 0)")
    latest = open_table(path)
    if latest is None:
        raise StorageError(f"Delta table {path} does not exist, so it has no version {version}")
    if version > latest.version():
        raise StorageError(
            f"Delta table {path} has no version {version} yet: its latest version is {latest.version()}"
        )
    try:
        table = DeltaTable(str(path), version=version)
    except (DeltaError, OSError) as exc:
        # delta-rs removes log entries older than the table's delta.logRetentionDuration (30 days by
        # default) when it writes a checkpoint: such a version cannot be rebuilt any more
        raise StorageError(
            f"cannot read Delta table {path} at version {version}: {exc} (its log may have been cleaned "
            "up: delta.logRetentionDuration, 30 days by default)"
        ) from exc
    except BaseException as exc:
        _reraise_control_flow(exc)
        raise StorageError(
            f"cannot read Delta table {path} at version {version}: delta-rs failed: {exc}"
        ) from exc
    missing = [uri for uri in table.file_uris() if not Path(unquote(uri)).is_file()]
    if missing:
        raise StorageError(
            f"Delta table {path} at version {version} needs {len(missing)} data file(s) that are gone "
            f"(removed by a vacuum?), e.g. {unquote(missing[0])}"
        )
    return table


def _reraise_control_flow(exc: BaseException) -> None:
    """Let interrupts through; anything else delta-rs raises (its Rust panics surface as
    `pyo3_runtime.PanicException`, a BaseException) becomes a StorageError at this boundary."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise exc


def committed_position(table: DeltaTable | None, app_id: str) -> int | None:
    """The position committed for `app_id` in `table`, or None when the source was never committed."""
    if table is None:
        return None
    version = table.transaction_version(app_id)
    return None if version is None else int(version)


@contextmanager
def table_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (flock: released by the kernel if we die)."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot create lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def commit_sources(
    table_path: Path,
    lock_path: Path,
    schema: pa.Schema,
    batches: Sequence[SourceBatch],
    *,
    partition_by: Sequence[str] = ("day",),
    position_column: str = "source_position",
) -> CommitReport:
    """Append the rows of `batches` and their sources' new positions to the table in one commit.

    Rows whose `position_column` is below the source's committed position are dropped, and a source
    whose committed position is already at or past `end` contributes nothing and is reported in
    `stale_sources`. Nothing is committed when no source moves forward.
    """
    report = CommitReport()
    with table_lock(lock_path):
        crash_point("commit.lock")
        table = open_table(table_path)
        parts: list[pa.Table] = []
        transactions: list[Transaction] = []
        for batch in batches:
            done = committed_position(table, batch.app_id)
            if done is not None and done >= batch.end:
                report.stale_sources.append(batch.app_id)
                report.rows_already_committed += batch.rows.num_rows
                report.positions[batch.app_id] = done
                continue
            rows = batch.rows
            if done is not None and rows.num_rows:
                rows = rows.filter(pc.greater_equal(rows[position_column], pa.scalar(done, pa.int64())))
                report.rows_already_committed += batch.rows.num_rows - rows.num_rows
            if rows.num_rows:
                parts.append(rows.select(schema.names).cast(schema))
            transactions.append(Transaction(app_id=batch.app_id, version=batch.end))
            report.positions[batch.app_id] = batch.end
        if not transactions:
            return report
        data = pa.concat_tables(parts) if parts else schema.empty_table()
        crash_point("commit.before")
        try:
            write_deltalake(
                table if table is not None else str(table_path),
                data,
                partition_by=list(partition_by),
                mode="append",
                commit_properties=CommitProperties(app_transactions=transactions),
            )
        except CommitFailedError as exc:
            raise CommitConflict(f"concurrent commit to {table_path}: {exc}") from exc
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot commit to Delta table {table_path}: {exc}") from exc
        except BaseException as exc:
            _reraise_control_flow(exc)
            raise StorageError(f"cannot commit to Delta table {table_path}: delta-rs failed: {exc}") from exc
        report.rows_written = data.num_rows
        table = open_table(table_path)
        report.version = None if table is None else table.version()
        if report.version is not None:
            sync_commits(table_path, report.version, report.version)
        crash_point("commit.after")
    return report


def sync_commits(table_path: Path, first: int, last: int) -> None:
    """fsync what Delta versions `first`..`last` of the table wrote: the data files they add, their log
    entries (and a checkpoint of one of them), and every folder that gained an entry.

    delta-rs (object_store's local file system) writes a file and renames or links it into place
    without an fsync, so after a power cut or an OS crash a commit already reported done may be gone,
    or its log entry empty. The outcome flusher deletes intake rows once their commit is done, so an
    acknowledged outcome could have been lost that way (review finding)."""
    log_dir = table_path / "_delta_log"
    files: list[Path] = []
    for version in range(first, last + 1):
        entry = log_dir / f"{version:020d}.json"
        files.append(entry)
        files.extend(_added_files(table_path, entry))
        checkpoint = log_dir / f"{version:020d}.checkpoint.parquet"
        if checkpoint.exists():
            files += [checkpoint, log_dir / "_last_checkpoint"]
    folders = {table_path.parent, table_path, log_dir}
    for path in files:
        folders.update([path.parent, path.parent.parent] if path.parent != log_dir else [])
    try:
        for path in [*files, *sorted(folders, key=lambda p: len(p.parts), reverse=True)]:
            if path.exists():
                _fsync(path)
    except OSError as exc:
        raise StorageError(f"cannot make the commit to Delta table {table_path} durable: {exc}") from exc


def _added_files(table_path: Path, entry: Path) -> list[Path]:
    """The data files a log entry adds (its `add` actions' paths, relative and URL-encoded)."""
    added = []
    try:
        lines = entry.read_bytes().splitlines()
    except OSError as exc:
        raise StorageError(f"cannot read Delta log entry {entry}: {exc}") from exc
    for line in lines:
        action = orjson.loads(line) if line.strip() else {}
        path = action.get("add", {}).get("path") if isinstance(action, dict) else None
        if isinstance(path, str) and "://" not in path:
            added.append(table_path / unquote(path))
    return added


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
