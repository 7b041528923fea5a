"""Compaction: a day's many small Parquet files rewritten into few, every version kept for time travel.

Each flush of the outcomes API, each scan of `ingest files --follow` and each Kafka batch is one Delta
commit with its own small files; reads slow down with the file count (0.4 ms a file measured for
`GET /v1/outcomes`). `compact_table` rewrites the days that have many small files, under the table's
lock (writers on this host wait, readers never do: their snapshot's files stay on disk). Nothing is
deleted: `vacuum_table` removes files no version younger than a retention needs, and only on request,
since export manifests replay older versions.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake.exceptions import DeltaError

from service.errors import InputError, StorageError
from storage.commit import open_table, sync_commits, table_lock
from storage.layout import Layout

log = logging.getLogger("hindsight.compact")

MIN_FILES = 32
"""A day is compacted once it has this many files below its target size."""
TARGET_SIZE = 128 * 1024 * 1024
"""The file size compaction aims for in days that are over."""
TODAY_TARGET = 8 * 1024 * 1024
"""The file size aimed for in today's (and later) days, which still receive commits every few seconds."""
MIN_VACUUM_RETENTION = dt.timedelta(hours=1)
"""Files are never vacuumed sooner: a reader (a notebook, an export) may still be reading them."""


@dataclass
class CompactReport:
    """What compacting one table did."""

    table: str
    days: list[str] = field(default_factory=list)
    files_removed: int = 0
    files_added: int = 0
    version: int | None = None


def compaction_plan(
    path: Path, *, min_files: int = MIN_FILES, today: dt.date | None = None
) -> list[tuple[str, int]]:
    """The days of the table at `path` worth compacting, each with its target size.

    delta-rs rewrites every file of a day below the target, packed into bins up to it (a bin of one file
    is left alone). A day still written to gets a small target (8 MiB), so each compaction rewrites at
    most one partly filled 8 MiB file besides the new small ones; with 128 MiB the same day's data was
    rewritten every 10 minutes (review finding). A day that is over gets 128 MiB while all its files are
    under 8 MiB: they are merged once more, and then it has too few files to be touched again. A day that
    is over but has a file of 8 MiB or more (merged before, or written by a large batch) and gets late
    rows (Kafka lag across midnight, a late log) keeps the small target, so the late files are merged among
    themselves, not with the whole day again (review finding: a day rewritten whole for 640 late rows at
    every compaction); a smaller day is rewritten with them, at most 8 MiB: the bound of a day written to.
    """
    table = open_table(path)
    if table is None:
        return []
    try:
        actions = pa.table(table.get_add_actions(flatten=True))
    except (DeltaError, OSError) as exc:
        raise StorageError(f"cannot list the files of Delta table {path}: {exc}") from exc
    if "partition.day" not in actions.column_names:
        return []
    current = today or dt.datetime.now(dt.UTC).date()
    sizes_by_day: dict[dt.date, list[int]] = {}
    days, sizes = actions["partition.day"].to_pylist(), actions["size_bytes"].to_pylist()
    for day, size in zip(days, sizes, strict=True):
        sizes_by_day.setdefault(day, []).append(int(size))
    plan = []
    for day, day_sizes in sorted(sizes_by_day.items(), key=lambda item: str(item[0])):
        settled = any(size >= TODAY_TARGET for size in day_sizes)
        target = TODAY_TARGET if day is None or day >= current or settled else TARGET_SIZE
        if sum(1 for size in day_sizes if size < target) >= min_files:
            plan.append((str(day), target))
    return plan


def compact_table(path: Path, lock_path: Path, *, min_files: int = MIN_FILES) -> CompactReport:
    """Compact each day of `compaction_plan`, one commit per day.

    The rows, their order within a day, the source positions (application transactions) and every
    older version stay as they were."""
    if min_files < 2:
        raise InputError(f"compaction needs at least 2 files a day to merge, not {min_files}")
    report = CompactReport(table=path.name)
    with table_lock(lock_path):
        before = open_table(path)
        start = None if before is None else before.version()  # an int: a DeltaTable moves as it commits
        try:
            for day, target in compaction_plan(path, min_files=min_files):
                table = open_table(path)
                if table is None:
                    break
                try:
                    metrics = table.optimize.compact(
                        partition_filters=[("day", "=", day)], target_size=target
                    )
                except (DeltaError, OSError) as exc:
                    raise StorageError(f"cannot compact day {day} of Delta table {path}: {exc}") from exc
                report.days.append(day)
                report.files_removed += int(metrics.get("numFilesRemoved", 0))
                report.files_added += int(metrics.get("numFilesAdded", 0))
        finally:  # also the days committed before one failed
            table = open_table(path)
            report.version = None if table is None else table.version()
            _sync_since(path, start, report.version)
    if report.days:
        log.info(
            "compacted %s: %d files into %d over %d day(s)",
            path.name,
            report.files_removed,
            report.files_added,
            len(report.days),
        )
    return report


def _sync_since(path: Path, start: int | None, version: int | None) -> None:
    """fsync the commits made after version `start` (None: the table did not exist) up to `version`."""
    first = 0 if start is None else start + 1
    if version is not None and version >= first:
        sync_commits(path, first, version)


DEFAULT_REMOVED_RETENTION = dt.timedelta(days=7)
"""Delta's default `delta.deletedFileRetentionDuration`: how long the log remembers a replaced file."""

_INTERVAL = re.compile(r"^\s*interval\s+(\d+)\s+(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)


def vacuum_limit(path: Path) -> dt.timedelta | None:
    """The longest retention a vacuum of this table honours: its `delta.deletedFileRetentionDuration`.

    A checkpoint drops the record of a file replaced longer ago than that, and vacuum finds the files
    to delete through those records: with a longer retention, files replaced by a compaction more than
    that long ago were never deleted (review finding: `--vacuum-older-than 30d` deleted nothing, for good,
    on a table still written to)."""
    table = open_table(path)
    if table is None:
        return None  # nothing to vacuum
    text = table.metadata().configuration.get("delta.deletedFileRetentionDuration")
    match = _INTERVAL.match(text) if text else None
    if match is None:
        return DEFAULT_REMOVED_RETENTION
    return dt.timedelta(**{match.group(2).lower() + "s": int(match.group(1))})


def check_vacuum_retention(path: Path, older_than: dt.timedelta) -> None:
    """InputError unless `older_than` is a retention a vacuum of this table can honour."""
    if older_than < MIN_VACUUM_RETENTION:
        raise InputError(
            f"vacuum keeps at least {MIN_VACUUM_RETENTION} of versions (readers may still use their files), "
            f"not {older_than}"
        )
    limit = vacuum_limit(path)
    if limit is not None and older_than > limit:
        raise InputError(
            f"vacuum can keep at most {limit} of versions of {path.name}, not {older_than}: the table's log "
            f"forgets a replaced file {limit} after it was replaced (delta.deletedFileRetentionDuration), so "
            "files replaced before that would never be deleted. Without a vacuum every version is kept"
        )


def vacuum_table(path: Path, lock_path: Path, *, older_than: dt.timedelta) -> list[str]:
    """Delete the files no version of the last `older_than` needs; returns the paths deleted.

    Versions older than that can no longer be read (nor export manifests that name them replayed)."""
    check_vacuum_retention(path, older_than)
    with table_lock(lock_path):
        table = open_table(path)
        if table is None:
            return []
        start = table.version()  # vacuum moves `table` to the version it commits
        hours = math.ceil(older_than.total_seconds() / 3600)
        try:
            # delta-rs lists every expired record, also of files an earlier vacuum already deleted
            # (review finding: "40 unneeded files deleted" twice): only those on disk are counted
            listed = table.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False)
            present = [name for name in listed if (path / name).exists()]
            table.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
        except (DeltaError, OSError) as exc:
            raise StorageError(f"cannot vacuum Delta table {path}: {exc}") from exc
        after = open_table(path)
        _sync_since(path, start, None if after is None else after.version())  # vacuum's log entries
        return [name for name in present if not (path / name).exists()]


class Compactor:
    """Compacts a table at most every `every` seconds, for long-running writers (the flusher, --follow,
    Kafka); a failure is logged and retried next time, never fatal (the data is intact either way)."""

    def __init__(self, path: Path, lock_path: Path, *, every: float = 600.0) -> None:
        self.path = path
        self.lock_path = lock_path
        self.every = every
        self._next = time.monotonic()  # the first call compacts: a process restarted often still does

    @classmethod
    def of(cls, root: Path, table_name: str, *, every: float = 600.0) -> Compactor:
        """The compactor of table `table_name` under `root` (its folder and its lock file)."""
        layout = Layout(root)
        return cls(layout.table(table_name), layout.lock_file(table_name), every=every)

    def maybe(self) -> CompactReport | None:
        """Compact if `every` seconds passed since the last time; None when it was not time yet."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.every
        try:
            return compact_table(self.path, self.lock_path)
        except StorageError as exc:
            log.warning(
                "compaction of %s failed (retried in %.0f s): %s", self.path.name, self.every, exc.message
            )
        except (
            Exception
        ) as exc:  # an untranslated delta-rs error: the caller's own commit is done, keep it so
            log.warning("compaction of %s failed (retried in %.0f s): %r", self.path.name, self.every, exc)
        return None
