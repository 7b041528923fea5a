"""Ingest log files exactly once: discover, identify, read from the committed position, parse, commit.

Durable steps of one batch, in order (each is a crash point, see storage/crashpoints.py):

1. `ingest.after_parse`       lines of one or more files are parsed; nothing is written yet;
2. quarantine commit          bad lines + positions to `tables/quarantine` (`commit.lock/before/after`);
3. `ingest.after_quarantine`  the quarantine rows are durable;
4. predictions commit         rows + positions to `tables/predictions` (`commit.lock/before/after`);
5. `ingest.after_commit`      the batch is durable; the file catalog (hints only) is written later.

A restart reads each file from its position in the predictions table. Lines replayed after a crash
between 3 and 4 are dropped by the quarantine commit, whose own positions are already past them.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import queue
import zlib
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from ingest.catalog import FileHint, load_catalog, save_catalog
from ingest.discover import LogFile, discover, in_scope, list_logs
from ingest.fingerprint import FileIdentity, Pending, hash_prefix, identify
from ingest.parser import LineParser, ParseResult
from ingest.pipeline import OrderedWorker, ordered_map, prefetch
from ingest.reader import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    LineBlock,
    LineReader,
    Stream,
    gzip_size_hint,
    open_log,
)
from ingest.summary import IngestSummary
from service.errors import SourceError, StorageError
from storage.commit import CommitReport, committed_position, open_table
from storage.crashpoints import crash_point
from storage.ingest_commit import commit_parsed_batch
from storage.layout import Layout
from storage.schemas import PREDICTIONS, QUARANTINE

log = logging.getLogger(__name__)

DEFAULT_BATCH_BYTES = 64 * 1024 * 1024
PARSE_BYTES = 16 * 1024 * 1024
"""Lines are parsed in pieces of at most this size (the parser's memory grows with its input), and
their rows gathered until `batch_bytes` of input is reached for one commit."""


class Progress(Protocol):
    """Where byte progress goes (a rich progress bar on a terminal, nothing otherwise)."""

    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _NoProgress:
    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


@dataclass
class _Planned:
    log: LogFile
    ident: FileIdentity
    position: int
    end: int = 0
    truncated_to: int | None = None
    """The size an in-place truncation below `position` was reported at (reported once, not per scan)."""


@dataclass(frozen=True)
class _Waiting:
    """A file this scan could not identify: its inode, and its size when that bounds what it holds."""

    dev: int
    ino: int
    size: int | None
    """None when the file could not be read (or is an unreadable gzip file): its content is unknown."""


@dataclass
class _Batch:
    parts: list[tuple[_Planned, LineBlock]] = field(default_factory=list)
    nbytes: int = 0

    def add(self, item: _Planned, block: LineBlock) -> None:
        self.parts.append((item, block))
        self.nbytes += block.consumed


@dataclass(frozen=True)
class _Parsed:
    """What is kept of a parsed piece: its rows, and how far it got in each of its files."""

    result: ParseResult
    ends: dict[str, tuple[str, int]]
    """Path → (app_id, position reached)."""
    nbytes: int


def _ends(batch: _Batch) -> dict[str, tuple[str, int]]:
    ends: dict[str, tuple[str, int]] = {}
    for item, block in batch.parts:
        ends[_source_name(item.log.path)] = (item.ident.app_id, block.end)
    return ends


@dataclass
class _Pending:
    """Parsed rows of one or more batches waiting for one commit, and the positions they reach."""

    predictions: list[pa.Table] = field(default_factory=list)
    quarantine: list[pa.Table] = field(default_factory=list)
    ends: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Path → (app_id, position reached) for each file read."""
    nbytes: int = 0
    lines: int = 0
    skipped: int = 0

    def add(self, piece: _Parsed) -> None:
        self.predictions.append(piece.result.predictions)
        self.quarantine.append(piece.result.quarantine)
        self.ends.update(piece.ends)
        self.nbytes += piece.nbytes
        self.lines += piece.result.lines
        self.skipped += piece.result.skipped

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """All predictions rows and all quarantine rows, each as one table."""
        return _concat(self.predictions, PREDICTIONS), _concat(self.quarantine, QUARANTINE)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


class FileIngestor:
    """Reads log files into the predictions and quarantine tables under `root`, exactly once."""

    def __init__(
        self,
        root: Path,
        *,
        source_tz: str = "UTC",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        parse_threads: int = 1,
    ) -> None:
        self.layout = Layout(Path(root))
        self.max_line_bytes = max_line_bytes
        self.batch_bytes = batch_bytes
        # One parser (one DuckDB database) per thread: calls on one connection do not run in
        # parallel, so with parse_threads=2 two pieces are parsed at once. One call already uses
        # both cores, so on two cores this gains nothing reliable (docs/design.md).
        self._parse_threads = max(1, parse_threads)
        self._parsers: queue.Queue[LineParser] = queue.Queue()
        for _ in range(self._parse_threads):
            self._parsers.put(LineParser(source_tz=source_tz))
        self._positions: tuple[int, dict[str, int | None]] = (-1, {})
        """(table version, app_id -> committed position) read at that version: a scan of --follow finding
        the table unchanged reuses them (each lookup cost ~3.4 ms on a table with a long history)."""

    def _committed(self, table: DeltaTable | None, app_id: str) -> int | None:
        """The committed position of `app_id`, looked up once per table version."""
        if table is None:
            return None
        version = table.version()
        if self._positions[0] != version:
            self._positions = (version, {})
        cached = self._positions[1]
        if app_id not in cached:
            cached[app_id] = committed_position(table, app_id)
        return cached[app_id]

    def run(
        self,
        paths: Sequence[Path],
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> IngestSummary:
        """One scan: read every new complete line under `paths` and commit it; see the module doc."""
        progress = progress or _NoProgress()
        summary = IngestSummary()
        self._prepare_root()
        given = [Path(os.path.abspath(p)) for p in paths]
        listing = list_logs(given)
        logs = listing.logs
        for folder, why in listing.skipped:
            _warn(
                summary,
                f"cannot list folder {folder}: {why}; the files in it that were not named are skipped, "
                "tried again next run",
            )
        summary.files = len(logs)
        table = open_table(self.layout.predictions)
        plan, pending_stats = self._identify(logs, table, summary)
        catalog_path = self.layout.state / "files.json"
        hints = load_catalog(catalog_path)
        loaded = dict(hints)  # hints are replaced or deleted below, never changed in place
        unread = [folder for folder, _ in listing.skipped]
        self._account_losses(plan, pending_stats, hints, given, table, summary, listed=logs, unread=unread)
        plan = _unique_sources(plan, summary)
        progress.start(sum(_remaining(item) for item in plan))
        for item in plan:
            item.end = item.position

        # Read ahead on one thread, parse on `parse_threads` others, gather batches on this one and
        # commit them in order on one more (ingest/pipeline.py).
        def commit(pending: _Pending) -> None:
            self._commit(pending, summary)

        batches = prefetch(self._batches(plan, summary, progress, should_stop))
        parsed = ordered_map(self._parse, batches, workers=self._parse_threads, name="hindsight-parse")
        with closing(batches), closing(parsed), OrderedWorker(commit, name="hindsight-commit") as committer:
            pending = _Pending()
            for piece in parsed:
                crash_point("ingest.after_parse")
                pending.add(piece)
                del piece
                if pending.nbytes >= self.batch_bytes:
                    committer.submit(pending)
                    pending = _Pending()
                    if should_stop():
                        break
            if pending.nbytes:
                committer.submit(pending)
        # Nothing committed by this scan: the positions read when identifying still hold (re-reading them,
        # two lookups per file, made an idle --follow at --interval 0.2 use a whole core; review finding).
        table = open_table(self.layout.predictions) if summary.commits else None
        for item in plan:
            # The position the table holds, not how far the read-ahead got: after a stop they differ.
            committed = self._committed(table, item.ident.app_id) if table is not None else item.position
            hints[item.ident.fingerprint] = FileHint(
                path=str(item.log.path),
                dev=item.ident.dev,
                ino=item.ident.ino,
                size=max(item.ident.size, item.end),
                position=item.position if committed is None else max(committed, item.position),
                truncated_to=item.truncated_to,
            )
        if hints != loaded:  # unchanged (an idle scan): no write, no fsync
            save_catalog(catalog_path, hints)
        return summary

    def _prepare_root(self) -> None:
        for folder in (self.layout.tables, self.layout.state, self.layout.locks):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot write under root {self.layout.root}: {exc.strerror}") from exc
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StorageError(f"cannot write under root {self.layout.root}: {folder} is not writable")

    def _identify(
        self, logs: list[LogFile], table: DeltaTable | None, summary: IngestSummary
    ) -> tuple[list[_Planned], dict[str, _Waiting]]:
        """Identify each file; keep one file per fingerprint (plain over gzip, then the longest)."""
        chosen: dict[str, _Planned] = {}
        order: list[str] = []
        pending: dict[str, _Waiting] = {}
        for log_file in logs:
            # Taken before reading: a file that cannot be identified is judged by what it was then. A
            # copy logrotate was filling while it was read looked unchanged afterwards (review finding).
            try:
                before: os.stat_result | None = os.stat(log_file.path)
            except OSError:
                before = None
            try:
                ident = identify(log_file.path, gzipped=log_file.gzipped, final=log_file.settled())
            except SourceError as exc:
                if not log_file.path.exists():
                    continue  # renamed or deleted by rotation since discovery: found again next scan
                # One unreadable file (permissions) used to stop the whole scan, every scan, and end
                # --follow (review finding): it waits, with a warning, like a corrupt gzip file.
                _warn(summary, f"{exc.message}; skipped, tried again next run")
                summary.files_waiting += 1
                with contextlib.suppress(OSError):
                    stat = os.stat(log_file.path)
                    pending[str(log_file.path)] = _Waiting(stat.st_dev, stat.st_ino, None)
                continue
            if isinstance(ident, Pending):
                summary.files_waiting += 1
                if ident.corrupt:
                    _warn(summary, f"{log_file.path}: {ident.reason}; tried again next run")
                if before is None:
                    continue  # gone since: found again next scan, if it was renamed
                stat = before
                # an unreadable gzip file waits whatever its size; an empty file, or one without a
                # complete first line, says by its size whether it can still hold what was seen
                size = None if ident.corrupt else stat.st_size
                pending[str(log_file.path)] = _Waiting(stat.st_dev, stat.st_ino, size)
                continue
            position = self._committed(table, ident.app_id) or 0
            item = _Planned(log_file, ident, position)
            best = chosen.get(ident.fingerprint)
            if best is None:
                order.append(ident.fingerprint)
                chosen[ident.fingerprint] = item
            elif _preference(item) < _preference(best):
                chosen[ident.fingerprint] = item
        return [chosen[fp] for fp in order], pending

    def _account_losses(
        self,
        plan: list[_Planned],
        pending: dict[str, _Waiting],
        hints: dict[str, FileHint],
        given: list[Path],
        table: DeltaTable | None,
        summary: IngestSummary,
        *,
        listed: list[LogFile],
        unread: list[Path],
    ) -> None:
        """Report bytes that were seen on disk but disappeared before they were read (files under a folder
        this scan could not read, `unread`, are not judged)."""
        found = {item.ident.fingerprint: item for item in plan}
        relisted: bool | None = None  # whether the files changed since `listed` (computed when needed)
        now_at = {str(item.log.path): (item.ident.dev, item.ident.ino) for item in plan}
        now_at |= {path: (waiting.dev, waiting.ino) for path, waiting in pending.items()}
        for fingerprint, hint in list(hints.items()):
            item = found.get(fingerprint)
            if item is not None:
                lost = 0
                reported = hint.truncated_to
                if not item.log.gzipped and item.ident.size < item.position:
                    if reported is not None and reported <= item.ident.size:
                        item.truncated_to = reported  # reported by an earlier scan; it only grew since
                    else:
                        if reported is not None:  # truncated again: only the bytes below the last report
                            lost = reported - item.ident.size
                        else:
                            lost = item.position - item.ident.size + max(0, hint.size - item.position)
                        _warn(
                            summary,
                            f"{item.log.path} was truncated in place to {item.ident.size} bytes, below "
                            f"its committed position {item.position}: {lost} bytes cannot be read",
                        )
                        summary.truncations += 1
                        item.truncated_to = item.ident.size
                elif not item.log.gzipped and hint.size > max(item.ident.size, item.position):
                    lost = hint.size - max(item.ident.size, item.position)
                    _warn(summary, f"{item.log.path} shrank from {hint.size} to {item.ident.size} bytes")
                    summary.truncations += 1
                elif str(item.log.path) != hint.path and now_at.get(hint.path) == (hint.dev, hint.ino):
                    # Same inode, other content, old content now in a copy: copytruncate.
                    log.info("%s was copied to %s and truncated (copytruncate)", hint.path, item.log.path)
                    summary.truncations += 1
                summary.lost_bytes += lost
                continue
            if not in_scope(Path(hint.path), given) or _under(Path(hint.path), unread):
                continue  # outside this scan (a folder moved away, another run's files): not judged
            position = self._committed(table, f"file:{fingerprint}") or hint.position
            waiting = pending.get(hint.path)
            if (
                waiting is not None
                and (waiting.dev, waiting.ino) == (hint.dev, hint.ino)
                and (waiting.size is None or waiting.size >= hint.size)
            ):
                # The same file, unreadable or not identifiable this scan, and possibly still holding
                # what was not read: judged when it is identified (it was called "truncated with N bytes
                # never read", which the next run read; review finding). A file identified before that
                # now has no complete first line was rewritten, unless it grew (a settled rotated file
                # written to again). Shorter than when it was seen, it was truncated: judged now (an
                # emptied file waited, its loss unreported, until new lines gave it another identity;
                # second review finding).
                continue
            if relisted is None:
                relisted = _listing_changed(given, listed, now_at, pending)
            if relisted:
                # A rotation between the listing and now: the file may sit under a name this scan did not
                # list, and would be called lost when it is not (review finding: false "lost bytes" with
                # every line stored). It is judged by the next scan, which lists it.
                continue
            lost = max(0, hint.size - position)
            same_inode = now_at.get(hint.path) == (hint.dev, hint.ino)
            if same_inode:
                summary.truncations += 1
            if lost:
                what = "was truncated" if same_inode else "disappeared"
                _warn(summary, f"{hint.path} {what} with {lost} bytes never read (they are lost)")
                summary.lost_bytes += lost
            elif same_inode:
                log.info("%s was truncated (copytruncate?) after it had been read to its end", hint.path)
            del hints[fingerprint]

    def _parse(self, batch: _Batch) -> _Parsed:
        """Parse one piece on whichever parser is free; only its rows and positions are kept."""
        parser = self._parsers.get()
        try:
            result = parser.parse(_lines_table(batch), ingested_at=datetime.now(UTC))
        finally:
            self._parsers.put(parser)
        return _Parsed(result, _ends(batch), batch.nbytes)

    def _batches(
        self,
        plan: list[_Planned],
        summary: IngestSummary,
        progress: Progress,
        should_stop: Callable[[], bool],
    ) -> Generator[_Batch, None, None]:
        """Batches of about `batch_bytes` of complete lines, files in plan order, each from its position."""
        batch = _Batch()
        for item in plan:
            if _remaining(item) == 0 and _looks_done(item):
                continue
            stream = _reopen(item)
            if stream is None:
                continue  # replaced since it was identified (rotation, copytruncate): found again next scan
            read_any = False
            with stream:
                before = _seek(stream, item, summary)
                if before is None:
                    continue
                start = _resume_point(stream, item, before, summary)
                if start is None:
                    continue
                if start > item.position:
                    # the skipped bytes' end is committed even if no line follows yet, so the rewrite is
                    # reported once, not at every scan
                    batch.add(item, LineBlock.empty(start, start - item.position))
                    item.end = start
                reader = LineReader(
                    stream,
                    start,
                    final=item.log.settled(),
                    max_line_bytes=self.max_line_bytes,
                    # Reads no larger than a batch, so small batch settings give small commits.
                    chunk_bytes=max(4096, min(DEFAULT_CHUNK_BYTES, PARSE_BYTES, self.batch_bytes)),
                    name=_source_name(item.log.path),
                )
                for block in reader.blocks():
                    read_any = True
                    batch.add(item, block)
                    item.end = block.end
                    progress.advance(block.consumed)
                    if batch.nbytes >= min(self.batch_bytes, PARSE_BYTES):
                        yield batch
                        batch = _Batch()
                        if should_stop():
                            return
            if reader.broken:
                _warn(summary, f"{reader.broken}; read to byte {item.end}, the rest is tried again next run")
            summary.files_read += read_any
            if read_any:
                summary.read_ids.add(item.ident.fingerprint)
        if batch.parts:
            yield batch

    def _commit(self, pending: _Pending, summary: IngestSummary) -> None:
        """Commit quarantine, then predictions, each with the positions the batch reached in its files."""
        predictions, bad = pending.tables()
        q_report, report = commit_parsed_batch(self.layout, predictions, bad, pending.ends)
        if q_report is not None:
            summary.quarantined += q_report.rows_written
            summary.commits += q_report.version is not None
        crash_point("ingest.after_commit")
        _count(summary, report, predictions, pending)
        del predictions, bad
        pending.predictions.clear()
        pending.quarantine.clear()
        pa.default_memory_pool().release_unused()  # hand freed Arrow buffers back to the OS


def ingest_files(
    root: Path,
    paths: Sequence[Path],
    *,
    source_tz: str = "UTC",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress: Progress | None = None,
) -> IngestSummary:
    """Read every new complete line of the log files under `paths` into the tables under `root`."""
    ingestor = FileIngestor(root, source_tz=source_tz, max_line_bytes=max_line_bytes, batch_bytes=batch_bytes)
    return ingestor.run(paths, progress=progress)


def _listing_changed(
    given: list[Path],
    listed: list[LogFile],
    seen_at: dict[str, tuple[int, int]],
    waiting: dict[str, _Waiting],
) -> bool:
    """Whether listing `given` now finds other files than `listed`, or one of them is now another file
    than the (device, inode) seen when it was identified, or a file this scan could not identify (empty,
    no complete first line) has been written since: a rotation during the scan. With its chain
    full, log4j's rollover leaves the same names, so comparing names alone called the old live file's
    unread bytes lost when they were in `X.log.1` (review finding). logrotate's copytruncate creates
    `X.log.1` empty, fills it, then truncates `X.log`: a scan that identified the copy while it was empty
    and the live file after its truncation called the copied bytes lost (second review finding)."""
    try:
        now = discover(given)
    except SourceError:
        return True
    if {str(f.path) for f in now} != {str(f.path) for f in listed}:
        return True
    for log in now:
        seen = seen_at.get(str(log.path))
        wait = waiting.get(str(log.path))
        if seen is None and wait is None:
            continue
        try:
            stat = log.path.stat()
        except OSError:
            return True
        if seen is not None and (stat.st_dev, stat.st_ino) != seen:
            return True
        was = None if wait is None or wait.size is None else (wait.dev, wait.ino, wait.size)
        if was is not None and (stat.st_dev, stat.st_ino, stat.st_size) != was:
            return True
    return False


def _remaining(item: _Planned) -> int:
    return max(0, item.ident.size - item.position)


def _looks_done(item: _Planned) -> bool:
    """True when nothing new can be there: a plain file no longer than its position, or a gzip file
    whose trailer size equals the position (RFC 1952 ISIZE is the size modulo 2**32)."""
    if not item.log.gzipped:
        return True
    hint = gzip_size_hint(item.log.path)
    return item.position > 0 and hint is not None and hint == item.position % 2**32


def _preference(item: _Planned) -> tuple[int, int]:
    """Which of several copies of one file to read (smallest first): a plain copy that reaches the
    committed position, then a gzip copy, then a plain copy shorter than the position (a partial copy,
    such as a gunzip in progress, must not look like a truncation); the larger within each."""
    if item.log.gzipped:
        return 1, -item.ident.size
    return (0 if item.ident.size >= item.position else 2), -item.ident.size


def _reopen(item: _Planned) -> Stream | None:
    """The file opened again for reading, or None when the path now holds another file: another inode
    (renamed by rotation), or the same inode with another identifying prefix (copytruncate: the old
    content now lives in a copy, read under its fingerprint next scan)."""
    try:
        stream = open_log(item.log.path, gzipped=item.log.gzipped)
    except SourceError:
        if not item.log.path.exists():
            return None
        raise
    stat = os.fstat(stream.fileno())
    if (stat.st_dev, stat.st_ino) != (item.ident.dev, item.ident.ino):
        stream.close()
        return None
    try:
        fingerprint, _, _ = hash_prefix(stream)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
        fingerprint = None  # unreadable now: judged again next scan
    if fingerprint != item.ident.fingerprint:
        log.info("%s changed since it was identified (copytruncate?); read next scan", item.log.path)
        stream.close()
        return None
    return stream


def _seek(stream: Stream, item: _Planned, summary: IngestSummary) -> bytes | None:
    """Move to the committed position and return the byte before it (b"" at position 0 or past the end);
    None (with a warning) when a gzip file cannot be read that far."""
    try:
        if item.position == 0:
            stream.seek(0)  # `_reopen` read the identifying prefix
            return b""
        stream.seek(item.position - 1)  # gzip: decompresses and discards up to there
        return stream.read(1) or b""
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # One damaged archive must not stop the other files: skipped, tried again next run.
        _warn(
            summary, f"cannot read {item.log.path} up to byte {item.position} ({exc}); tried again next run"
        )
        return None
    except OSError as exc:
        raise SourceError(f"cannot read {item.log.path}: {exc}") from exc


_SCAN_BYTES = 64 * 1024


def _resume_point(stream: Stream, item: _Planned, before: bytes, summary: IngestSummary) -> int | None:
    """Where to go on reading: the committed position when it still ends a line (`before`, the byte
    before it, is a newline; b"": position 0, or the file is shorter now, a truncation reported apart).

    Otherwise the file was rewritten below the position (it lost its tail, say after a crash of the
    writing host, and grew again past the position; possibly gzipped since): the bytes up to the next
    line end are the tail of a line that started below the position, so they are skipped and reported
    with the rewrite, and reading goes on from the next line. None: that line is not complete yet;
    judged again next scan. The stream is left at the returned position."""
    if before in (b"\n", b""):
        return item.position
    at = item.position
    while True:
        piece = stream.read(_SCAN_BYTES)
        newline = piece.find(b"\n") if piece else -1
        if newline >= 0:
            at += newline + 1
            break
        if not piece:
            if not item.log.settled():
                return None
            break  # a rotated file's unterminated last line is complete: skipped to the end
        at += len(piece)
    skipped = at - item.position
    _warn(
        summary,
        f"{item.log.path} was rewritten below its committed position {item.position} (the byte before it no "
        f"longer ends a line: truncated, then written again?); lines written there cannot be told from "
        f"those already read and are not read, and the {skipped} bytes up to the next line are skipped",
    )
    summary.truncations += 1
    summary.lost_bytes += skipped
    stream.seek(at)
    return at


def _under(path: Path, given: list[Path]) -> bool:
    return any(path == g or g in path.parents for g in given)


def _warn(summary: IngestSummary, message: str) -> None:
    # A file name that is not UTF-8 reaches here as surrogate escapes: written as \xNN, printable and
    # valid in the JSON summary.
    message = _escaped(message)
    log.warning("%s", message)
    summary.warnings.append(message)


def _lines_table(batch: _Batch) -> pa.Table:
    blocks = [block for _, block in batch.parts]
    sources = [
        pa.repeat(pa.scalar(_source_name(item.log.path)), len(block.lines)) for item, block in batch.parts
    ]
    return pa.table(
        {
            "line": pa.chunked_array([b.lines for b in blocks], pa.binary()),
            "source": pa.chunked_array(sources, pa.string()),
            "source_position": pa.chunked_array([pa.array(b.positions) for b in blocks], pa.int64()),
            "line_bytes": pa.chunked_array([pa.array(b.line_bytes) for b in blocks], pa.int64()),
        }
    )


def _unique_sources(plan: list[_Planned], summary: IngestSummary) -> list[_Planned]:
    """The plan without files whose `source` name another file already has: rows and positions are
    matched to their file by that name, so two files sharing it would mix (only a name that is not UTF-8,
    written with \\xNN escapes, can equal another file's name). UTF-8 names win; the other is reported
    and left unread until renamed."""
    taken: dict[str, _Planned] = {}
    names = {id(item): _source_name(item.log.path) for item in plan}
    # UTF-8 names first (their escaped form is the name itself); sorted is stable: plan order within each
    for item in sorted(plan, key=lambda item: names[id(item)] != str(item.log.path)):
        name = names[id(item)]
        other = taken.get(name)
        if other is None:
            taken[name] = item
        else:
            _warn(
                summary,
                f"{item.log.path} is not read: written with \\xNN escapes for its bytes that are not UTF-8, "
                f"its name is the name of {other.log.path}; rename one of them",
            )
    kept = {id(item) for item in taken.values()}
    return [item for item in plan if id(item) in kept]


def _source_name(path: Path) -> str:
    """The path as stored in `source`: text, with bytes that are not UTF-8 (a file name in another
    encoding) written as \\xNN escapes instead of failing the scan."""
    return _escaped(str(path))


def _escaped(text: str) -> str:
    """`text` with its surrogate escapes (how Python holds file-name bytes that are not UTF-8) written
    as \\xNN: printable, and valid in JSON and Arrow."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _count(summary: IngestSummary, report: CommitReport, predictions: pa.Table, pending: _Pending) -> None:
    summary.commits += report.version is not None
    summary.records += report.rows_written
    summary.lines += pending.lines
    summary.skipped += pending.skipped
    summary.bytes_read += pending.nbytes
    if report.rows_written and predictions.num_rows:
        days = pc.unique(predictions["day"]).to_pylist()
        summary.days.update(d for d in days if d is not None)
