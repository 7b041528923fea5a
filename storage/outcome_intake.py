"""The outcome intake log: a SQLite WAL database where outcomes are fsynced before they are acknowledged.

Callers `submit()` outcomes and get a future; a writer drains every waiting submission into ONE
transaction (group commit: concurrent requests share one fsync), checks idempotency inside it,
commits with `synchronous=FULL`, and only then resolves the futures. The writer is a thread that
owns a write connection, or, for the API's small submissions in "loop" mode (`call_soon` given),
the event loop itself: a few loop iterations after a group's first submission, one commit for every
submission made meanwhile, with no thread hand-off (see docs/design.md, "Intake log and group
commit"). Tables:

- `meta(name, value)`: `intake_id`, the uuid that names this log's Delta source (`intake:<uuid>`);
- `ids(outcome_id, fingerprint)`: every outcome_id ever accepted, kept forever (idempotency holds
  after a flush and across restarts);
- `pending(seq, ...)`: outcomes not yet known to be in Delta; `seq` is AUTOINCREMENT, so it is
  never reused even after rows are deleted (the flusher's exactly-once position depends on it).

A failed commit latches fail-stop: the log refuses every later write with `NotReady` and never
acknowledges what it could not store.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from service.errors import IdempotencyConflict, NotReady, PayloadTooLarge, StorageError, WritesStopped
from storage.crashpoints import crash_point
from storage.layout import writable_hint
from storage.outcome_model import Outcome

log = logging.getLogger("hindsight.intake")

PENDING_COLUMNS = (
    "seq",
    "outcome_id",
    "record_id",
    "key",
    "service_id",
    "endpoint_id",
    "outcome_type",
    "value",
    "value_number",
    "value_json",
    "occurred_at_us",
    "received_at_us",
    "attributes",
    "key_id",
)

ROW_KEYS = ("i", "r", "k", "s", "e", "t", "v", "n", "j", "o", "x", "a", "u")
"""The key of each of PENDING_COLUMNS[1:] in a pending row's JSON object (short: every byte of a row
is written to the WAL and fsynced before the answer, and read again by the flusher)."""

SCHEMA_VERSION = 2
"""PRAGMA user_version of the intake log layout below; an unknown version is refused at open.

1: `pending.row` was a JSON array in PENDING_COLUMNS[1:] order; 2: a JSON object keyed by ROW_KEYS,
so the flusher hands rows to Arrow's JSON reader as they are stored (a version-1 log is migrated at
open, in one transaction)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ids (
    outcome_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    row TEXT NOT NULL,
    record_id TEXT AS (json_extract(row, '$.r')) VIRTUAL,
    key TEXT AS (json_extract(row, '$.k')) VIRTUAL
);
"""

# Rows travel as ONE JSON array parameter and are unpacked by SQLite (json_each, in C): a whole
# insert is one sqlite3_step, so the writer releases and re-takes the GIL once per statement instead
# of once per row (executemany), which under load cost a GIL wait each time. A pending row is kept
# as its JSON object (`row`, keyed by ROW_KEYS); the two columns reads filter on are VIRTUAL (computed
# when a read scans them): extracting them at every insert was ~40% of the insert's time.
_INSERT_PENDING = "INSERT INTO pending (row) SELECT value FROM json_each(?)"
# ORDER BY: key order, so the index is filled page by page, not at random places (sorted in C,
# without the GIL, rather than in Python).
_INSERT_IDS = (
    "INSERT INTO ids (outcome_id, fingerprint) SELECT value->>0, value->>1 FROM json_each(?) ORDER BY 1"
)
_LOOKUP = "SELECT outcome_id, fingerprint FROM ids WHERE outcome_id IN (SELECT value FROM json_each(?))"

PARAMETER_BYTES = 64 * 1024 * 1024
"""The most bytes of JSON text handed to SQLite in one statement parameter: a larger group of rows is
inserted by several statements of the same transaction. SQLite refuses a text over SQLITE_MAX_LENGTH
(1e9 bytes) with "string or blob too big", and one such group (a big import, or many big requests
queued while another process held the lock) used to latch the log until a restart (review finding)."""

GROUP_MAX_OUTCOMES = 200_000
"""The writer stops draining the queue into a group once it holds this many outcomes; the rest wait for
the next transaction, so one commit's memory stays bounded whatever is queued."""

# Version 1 -> 2: each row's array becomes the object (`->` keeps every value's JSON text as stored),
# and the stored record_id/key columns become VIRTUAL ones (no table rebuild: AUTOINCREMENT's
# sqlite_sequence entry, the flusher's guarantee that a seq is never reused, stays as it is).
_MIGRATE_FROM_1 = (
    "UPDATE pending SET row = json_object({})".format(
        ", ".join(f"'{key}', row->{index}" for index, key in enumerate(ROW_KEYS))
    ),
    "ALTER TABLE pending DROP COLUMN record_id",
    "ALTER TABLE pending DROP COLUMN key",
    "ALTER TABLE pending ADD COLUMN record_id TEXT AS (json_extract(row, '$.r')) VIRTUAL",
    "ALTER TABLE pending ADD COLUMN key TEXT AS (json_extract(row, '$.k')) VIRTUAL",
)
BUSY_TIMEOUT_S = 30.0
_MAX_SEQ = 2**63 - 1
DEFAULT_PENDING_BYTES = 64 * 1024 * 1024
"""Most row bytes the flusher reads from the intake log at once (see `pending_ndjson`)."""
INLINE_ITERATIONS = 5
"""Loop mode commits this many loop iterations after a group's first submission: requests that become
ready meanwhile join the group. Measured under wrk at 16 connections: committing in the very next
iteration made groups of ~5 requests and cost 270-310 µs of server CPU per request; 3-8 iterations
cost 240-275 µs and raised the rate by 15-25%. An idle loop runs an iteration in microseconds."""
INLINE_MAX_OUTCOMES = 64
"""Submissions up to this size are committed on the event loop in loop mode; larger ones (batches,
whose insert takes milliseconds) go to the writer thread so the loop keeps serving."""


def now_us() -> int:
    """The current time in microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def connect_sqlite(path: Path, *, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL (a commit returns only after the WAL is fsynced)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit (https://sqlite.org/pragma.html#pragma_synchronous).
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: the outcome_id index stays cached
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open SQLite database {path}: {exc}{writable_hint(path)}") from exc
    return con


@dataclass
class _Submission:
    outcomes: Sequence[Outcome]
    key_id: str | None
    done: Callback


Result = list[str] | BaseException
"""What a submission gets: its statuses, or the error that kept it from being stored."""
Callback = Callable[[Result], None]
Deliver = Callable[[list[tuple[Callback, Result]]], None]
"""Hands a whole group's results to their callbacks (default: call them on the writer thread).

The API passes one that schedules them all with ONE `loop.call_soon_threadsafe`: a wake-up of the
event loop per request (as `asyncio.wrap_future` does) costs a syscall and a GIL hand-off each."""


def _call_each(calls: list[tuple[Callback, Result]]) -> None:
    """Run each callback; one that raises is logged and does not keep the others from running."""
    for callback, result in calls:
        try:
            callback(result)
        except Exception:
            log.exception("an intake callback failed")


def _future_callback(future: Future[list[str]]) -> Callback:
    def done(result: Result) -> None:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    return done


@dataclass(frozen=True)
class AppendReport:
    """Statuses of one submission, in order ("created" or "duplicate"), and when it was received."""

    statuses: list[str]
    received_at_us: int


Schedule = Callable[[Callable[[], None]], object]
"""`loop.call_soon` of the event loop that submits (loop mode): runs a callback in the next iteration."""


class IntakeLog:
    """The durable intake of outcomes: group-committed appends, idempotency, reads for the flusher."""

    def __init__(
        self,
        path: Path,
        *,
        group_commit_ms: float = 2.0,
        deliver: Deliver = _call_each,
        call_soon: Schedule | None = None,
    ) -> None:
        if call_soon is not None and deliver is _call_each:
            # loop mode hands some groups to the writer thread, whose results must reach the loop
            raise ValueError("IntakeLog: call_soon (loop mode) needs a deliver that reaches the loop")
        self.path = path
        self._deliver = deliver
        self._linger = group_commit_ms / 1000.0
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._failure: str | None = None
        self.commits = 0  # transactions committed (one per group): observable group commit
        self._call_soon = call_soon
        self._owner = threading.get_ident()  # loop mode: only this thread's submissions commit inline
        self._inline: list[_Submission] = []
        self._inline_scheduled = False
        self._iterations_left = 0
        self._write = connect_sqlite(path)
        self._loop_write: sqlite3.Connection | None = None
        try:
            # No automatic checkpoint in the commit path (it would add a database fsync to some
            # acknowledgements); the flusher checkpoints after each flush (`checkpoint()`).
            self._write.execute("PRAGMA wal_autocheckpoint=0")
            if self._check_schema_version() == 1:
                self._migrate_from_1()
            self._write.executescript(_SCHEMA)
            self._write.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.intake_id = self._ensure_intake_id()
        except StorageError:
            self._write.close()
            raise
        except sqlite3.Error as exc:
            self._write.close()
            raise StorageError(f"cannot initialise intake log {path}: {exc}{writable_hint(path)}") from exc
        self._read_lock = threading.Lock()
        # In-process writers (writer thread, loop, flusher trim) take turns on this lock rather than
        # through SQLite's busy handler, which sleeps 1, 2, 5, ... 100 ms between retries and so
        # wakes late after a short wait; other processes still meet SQLite's lock.
        self._write_lock = threading.Lock()
        self._read = connect_sqlite(path)
        # A WAL grown while the disk was full (or under a long backlog) is shrunk before anything is
        # written: freeing space and restarting used to meet the old WAL first (review finding)
        self._shrink_wal()
        if call_soon is not None:
            # The loop's own write connection never waits for SQLite's write lock (busy timeout 0):
            # when another process holds it (`outcomes import`), the group goes to the writer
            # thread, which waits, instead of blocking the event loop.
            self._loop_write = connect_sqlite(path, timeout=0)
            self._loop_write.execute("PRAGMA wal_autocheckpoint=0")
        self._thread = threading.Thread(target=self._run, name="hindsight-intake-writer", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    @property
    def app_id(self) -> str:
        """The Delta application id of this log (`intake:<uuid>`)."""
        return f"intake:{self.intake_id}"

    @property
    def failure(self) -> str | None:
        """Why the log stopped accepting writes (fail-stop), or None while healthy."""
        return self._failure

    @property
    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    def fail(self, reason: str) -> None:
        """Latch fail-stop (also called by the flusher when a Delta commit fails)."""
        if self._failure is None:
            self._failure = reason
            log.error("intake log stops accepting writes: %s", reason)

    def submit(self, outcomes: Sequence[Outcome], key_id: str | None) -> Future[list[str]]:
        """Queue outcomes for the next group commit; the future resolves after the fsync."""
        future: Future[list[str]] = Future()
        self.submit_callback(outcomes, key_id, _future_callback(future))
        return future

    def submit_callback(
        self, outcomes: Sequence[Outcome], key_id: str | None, done: Callback, *, large: bool = False
    ) -> None:
        """Queue outcomes; `done` gets the statuses (or the error) through `deliver` after the fsync.

        `large`: the outcomes came in a large body, so encoding and inserting them takes long, however
        few they are: the writer thread commits them, never the event loop (one 14 MiB outcome held the
        loop for ~300 ms; review finding)."""
        if self._failure is not None:
            raise WritesStopped(f"outcome intake stopped accepting writes: {self._failure}")
        submission = _Submission(outcomes, key_id, done)
        if (
            self._call_soon is not None
            and not large
            and len(outcomes) <= INLINE_MAX_OUTCOMES
            and threading.get_ident() == self._owner
        ):
            if not self._inline_scheduled:
                self._inline_scheduled = True
                self._iterations_left = INLINE_ITERATIONS
                self._call_soon(self._next_iteration)
            self._inline.append(submission)
        else:
            self._queue.put(submission)

    def append(self, outcomes: Sequence[Outcome], key_id: str | None) -> list[str]:
        """Store outcomes durably and return their statuses (blocking form of `submit`)."""
        return self.submit(outcomes, key_id).result()

    def close(self) -> None:
        """Finish queued writes, stop the writer and close the connections."""
        self._commit_inline()
        self._queue.put(None)
        self._thread.join()
        self._write.close()
        self._read.close()
        if self._loop_write is not None:
            self._loop_write.close()

    # -- reads (flusher, read-your-writes) -----------------------------------------------------

    def pending(self, from_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to `limit` pending rows with seq >= from_seq, in seq order (columns: PENDING_COLUMNS)."""
        # Two aggregated texts instead of one fetched row per outcome: every sqlite3_step releases
        # the GIL, and under load each re-take waited for the request loop. Both aggregates walk
        # the same rows in one pass, so the i-th seq belongs to the i-th row.
        sql = (
            "SELECT '[' || group_concat(row, ',') || ']', '[' || group_concat(seq, ',') || ']' FROM "
            "(SELECT seq, row FROM pending WHERE seq >= ? ORDER BY seq LIMIT ?)"
        )
        [(rows_text, seqs_text)] = self._query(sql, (from_seq, limit))
        if rows_text is None:
            return []
        pending = [
            (seq, *_fields(row))
            for seq, row in zip(orjson.loads(seqs_text), orjson.loads(rows_text), strict=True)
        ]
        if any(pending[i][0] > pending[i + 1][0] for i in range(len(pending) - 1)):
            pending.sort(key=lambda row: int(row[0]))
        return pending

    def pending_ndjson(
        self, from_seq: int, limit: int, max_bytes: int = DEFAULT_PENDING_BYTES, *, through: int | None = None
    ) -> bytes:
        """Up to `limit` pending rows with from_seq <= seq <= through as NDJSON objects (keys: `seq` and
        ROW_KEYS), and no more rows than fit `max_bytes` (always at least one).

        Each line is the row's object as stored with `"seq":<seq>,` put in front: SQLite only joins
        texts (in C, without the GIL; rendering each row with 13 `row->n` lookups cost ~4 us a row),
        so numbers and strings are exactly what was acknowledged. The flusher parses it with Arrow's
        JSON reader: no Python object per row or value. The byte cap keeps the joined text far below
        SQLite's 1 GB string limit: 200,000 rows of 5 KB made the read fail ("string or blob too big")
        at every flush and every restart, and shut writes for good (review finding).
        """
        sql = (
            "SELECT group_concat('{\"seq\":' || seq || ',' || substr(row, 2), char(10)) FROM "
            "(SELECT seq, row, sum(length(row)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS upto "
            " FROM (SELECT seq, row FROM pending WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?)) "
            "WHERE upto - length(row) < ?"
        )
        last = _MAX_SEQ if through is None else through
        [(text,)] = self._query(sql, (from_seq, last, limit, max_bytes))
        return b"" if text is None else str(text).encode()

    def pending_matching(self, *, record_id: str | None, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """Pending rows for a record_id or one of the canonical keys (for read-your-writes)."""
        if record_id is not None:
            return _decoded(
                self._query("SELECT seq, row FROM pending WHERE record_id = ? ORDER BY seq", (record_id,))
            )
        marks = ", ".join("?" for _ in keys)
        return _decoded(
            self._query(f"SELECT seq, row FROM pending WHERE key IN ({marks}) ORDER BY seq", tuple(keys))
        )

    def forget_below(self, seq: int) -> int:
        """Delete pending rows below `seq` (they are in Delta); outcome_ids stay for idempotency.

        Housekeeping only: reads start at the committed position, so rows left behind are never flushed
        twice. A failure (another process holding the write lock past the busy timeout, a full disk) is
        logged and retried at the next flush; it used to shut writes for good (review finding). Returns
        the rows deleted, -1 when the trim failed."""
        with self._write_lock, self._read_lock:
            try:
                cursor = self._read.execute("DELETE FROM pending WHERE seq < ?", (seq,))
            except sqlite3.Error as exc:
                log.warning("cannot trim intake log %s (retried at the next flush): %s", self.path, exc)
                return -1
            return cursor.rowcount

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without blocking the writer (PASSIVE checkpoint).
        Housekeeping as `forget_below`: a failure is logged, never fatal."""
        with self._read_lock:
            try:
                self._read.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("cannot checkpoint intake log %s (retried later): %s", self.path, exc)

    def _shrink_wal(self) -> None:
        """Shrink the WAL to nothing (TRUNCATE checkpoint) if nobody else uses the log now; never waits:
        with the busy timeout, a reader of another process (the server, for an import) made opening the
        log, and the server's acknowledgements, wait up to 30 s (review finding)."""
        try:
            con = connect_sqlite(self.path, timeout=0)
        except StorageError:
            return
        try:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.debug("intake log %s in use: its WAL is not shrunk now", self.path)
        except sqlite3.Error as exc:
            log.debug("cannot shrink the WAL of intake log %s: %s", self.path, exc)
        finally:
            con.close()

    def last_pending_seq(self) -> int | None:
        """The highest pending seq, None when nothing is pending (a flush moves up to there, no further)."""
        rows = self._query("SELECT max(seq) FROM pending", ())
        return None if rows[0][0] is None else int(rows[0][0])

    def count_pending(self) -> int:
        rows = self._query("SELECT count(*) FROM pending", ())
        return int(rows[0][0])

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return self._read.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read intake log {self.path}: {exc}") from exc

    # -- the writer thread -----------------------------------------------------------------------

    def _check_schema_version(self) -> int | None:
        """The layout version of an existing log (None for a new one); refuses an unknown version."""
        version = self._write.execute("PRAGMA user_version").fetchone()[0]
        tables = self._write.execute("SELECT count(*) FROM sqlite_master WHERE name = 'pending'").fetchone()[
            0
        ]
        if not tables:
            return None
        if version not in (1, SCHEMA_VERSION):
            raise StorageError(
                f"intake log {self.path} has schema version {version}, this hindsight needs "
                f"{SCHEMA_VERSION}; flush it with the hindsight version that wrote it, then move it away",
                details={"path": str(self.path), "version": version, "expected": SCHEMA_VERSION},
            )
        return int(version)

    def _migrate_from_1(self) -> None:
        """Rewrite a version-1 log's pending rows as objects, and the version, in ONE transaction."""
        self._write.execute("BEGIN IMMEDIATE")
        try:
            migrate = self._write.execute("PRAGMA user_version").fetchone()[0] == 1  # not done meanwhile
            if migrate:
                for statement in _MIGRATE_FROM_1:
                    self._write.execute(statement)
                self._write.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._write.execute("COMMIT")
        except sqlite3.Error:
            self._write.execute("ROLLBACK")
            raise
        if migrate:
            log.info("intake log %s migrated to layout version %d", self.path, SCHEMA_VERSION)

    def _ensure_intake_id(self) -> str:
        self._write.execute("BEGIN IMMEDIATE")
        row = self._write.execute("SELECT value FROM meta WHERE name = 'intake_id'").fetchone()
        if row is None:
            value = str(uuid.uuid4())
            self._write.execute("INSERT INTO meta (name, value) VALUES ('intake_id', ?)", (value,))
        else:
            value = str(row[0])
        self._write.execute("COMMIT")
        return value

    def _gather(self, first: _Submission) -> tuple[list[_Submission], bool]:
        # Sleep through the linger, then drain: one wake-up per group, not one per request (each
        # wake-up of this thread competes with the event loop for the GIL).
        if self._linger > 0 and len(first.outcomes) <= INLINE_MAX_OUTCOMES:  # a batch fills its own
            time.sleep(self._linger)
        group = [first]
        size = len(first.outcomes)
        while size < GROUP_MAX_OUTCOMES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, False
            if item is None:
                return group, True
            group.append(item)
            size += len(item.outcomes)
        return group, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            group, stop = self._gather(first)
            groups = [group]
            while groups:
                groups[:0] = self._write_group(groups.pop(0))

    def _write_group(self, group: list[_Submission]) -> list[list[_Submission]]:
        """Commit one group on the writer thread and deliver its results; the groups to write next in its
        place (each submission alone, when one of them holds a value over SQLite's limits)."""
        if self._failure is not None:
            refused = WritesStopped(f"outcome intake stopped accepting writes: {self._failure}")
            self._deliver([(sub.done, refused) for sub in group])
            return []
        with self._write_lock:  # the rollback of a failed group too, before another writer goes
            try:
                outcomes = self._commit_group(group, self._write)
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    self._abort(group, NotReady(f"intake log busy, try again: {exc}"), latch=False)
                else:
                    self._abort(group, exc, latch=True)
                return []
            except sqlite3.DataError as exc:  # a value over SQLite's limits: its own submission only
                if len(group) == 1:
                    self._abort(group, _too_big(exc), latch=False)
                    return []
                if not self._rolled_back(group, self._write):
                    return []
                return [[sub] for sub in group]  # the others were refused with it (review finding)
            except Exception as exc:  # sqlite3.Error, OSError, or a bug: never acknowledge, never hang
                self._abort(group, exc, latch=True)
                return []
        crash_point("outcomes.intake_fsynced")
        self._deliver([(sub.done, result) for sub, result in zip(group, outcomes, strict=True)])
        return []

    def _rolled_back(self, group: list[_Submission], con: sqlite3.Connection) -> bool:
        """Roll back a failed group's transaction; if that fails too, latch and fail the group."""
        try:
            if con.in_transaction:
                con.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._abort(
                group, exc, latch=True, con=con, deliver=self._deliver if con is self._write else _call_each
            )
            return False
        return True

    def _next_iteration(self) -> None:
        self._iterations_left -= 1
        if self._iterations_left > 0 and self._call_soon is not None:
            self._call_soon(self._next_iteration)
            return
        self._inline_scheduled = False
        self._commit_inline()

    def _commit_inline(self) -> None:
        """Loop mode: commit every submission made since the last commit, on the calling (loop) thread.

        COMMIT blocks the loop for the fsync (~0.15 ms on a local SSD) but saves the two thread
        hand-offs per group of the writer thread, which on a busy machine each wait for a CPU.
        """
        group, self._inline = self._inline, []
        con = self._loop_write
        if not group or con is None:
            return
        if self._failure is not None:
            refused = WritesStopped(f"outcome intake stopped accepting writes: {self._failure}")
            _call_each([(sub.done, refused) for sub in group])
            return
        # The writer thread or the flusher's trim is writing: hand over instead of waiting on the loop.
        if not self._write_lock.acquire(blocking=False):
            for sub in group:
                self._queue.put(sub)
            return
        try:
            results = self._try_commit(group, con)
        finally:
            self._write_lock.release()
        if results is None:
            return
        crash_point("outcomes.intake_fsynced")
        _call_each([(sub.done, result) for sub, result in zip(group, results, strict=True)])

    def _try_commit(self, group: list[_Submission], con: sqlite3.Connection) -> list[Result] | None:
        """The group's results once committed, or None when it was failed or handed to the thread."""
        try:
            return self._commit_group(group, con)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                self._abort(group, exc, latch=True, con=con, deliver=_call_each)
                return None
            try:  # another process holds the lock: nothing was written, the writer thread waits for it
                if con.in_transaction:
                    con.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                self._abort(group, rollback_error, latch=True, con=con, deliver=_call_each)
                return None
            for sub in group:
                self._queue.put(sub)
            return None
        except sqlite3.DataError as exc:  # a value over SQLite's limits: its own submission only
            if len(group) == 1:
                self._abort(group, _too_big(exc), latch=False, con=con, deliver=_call_each)
            elif self._rolled_back(group, con):
                for sub in group:
                    alone = self._try_commit([sub], con)
                    if alone is not None:
                        crash_point("outcomes.intake_fsynced")
                        _call_each([(sub.done, alone[0])])
            return None
        except Exception as exc:  # sqlite3.Error, OSError, or a bug: never acknowledge, never hang
            self._abort(group, exc, latch=True, con=con, deliver=_call_each)
            return None

    def _abort(
        self,
        group: list[_Submission],
        exc: BaseException,
        *,
        latch: bool,
        con: sqlite3.Connection | None = None,
        deliver: Deliver | None = None,
    ) -> None:
        con = self._write if con is None else con
        try:
            if con.in_transaction:
                con.execute("ROLLBACK")
        except sqlite3.Error:
            latch = True
        if latch:
            self.fail(f"intake commit failed: {exc}")
            error: BaseException = WritesStopped(f"outcomes were not stored, the intake log failed: {exc}")
        else:
            error = exc
        (deliver or self._deliver)([(sub.done, error) for sub in group])

    def _commit_group(
        self, group: list[_Submission], con: sqlite3.Connection
    ) -> list[list[str] | BaseException]:
        con.execute("BEGIN IMMEDIATE")
        received = now_us()
        known = _known_fingerprints(con, group)
        results: list[list[str] | BaseException] = []
        rows: list[dict[str, Any]] = []
        id_rows: list[tuple[str, str]] = []
        for sub in group:
            result, created = _created(sub.outcomes, known)
            results.append(result)
            if isinstance(result, BaseException):
                continue
            key_id = sub.key_id
            id_rows.extend([(o[0], o[11]) for o in created])  # (outcome_id, fingerprint)
            # PENDING_COLUMNS without seq, keyed by ROW_KEYS: Outcome fields 0-8, occurred (default:
            # receipt), received, attributes, key_id. A dict display: this runs for every row stored.
            rows.extend(
                [
                    {
                        "i": o[0],
                        "r": o[1],
                        "k": o[2],
                        "s": o[3],
                        "e": o[4],
                        "t": o[5],
                        "v": o[6],
                        "n": o[7],
                        "j": o[8],
                        "o": received if o[9] is None else o[9],
                        "x": received,
                        "a": o[10],
                        "u": key_id,
                    }
                    for o in created
                ]
            )
        for text in _json_chunks(id_rows):
            con.execute(_INSERT_IDS, (text,))
        for text in _json_chunks(rows):  # in seq order: chunks are inserted in list order
            con.execute(_INSERT_PENDING, (text,))
        crash_point("outcomes.intake_before_commit")
        con.execute("COMMIT")  # synchronous=FULL: returns after the WAL fsync
        self.commits += 1
        return results


def _known_fingerprints(con: sqlite3.Connection, group: list[_Submission]) -> dict[str, str]:
    wanted = list({o.outcome_id for sub in group for o in sub.outcomes if not o.generated_id})
    if not wanted:
        return {}
    known: dict[str, str] = {}
    for text in _json_chunks(wanted):
        known.update(con.execute(_LOOKUP, (text,)).fetchall())
    return known


def _json_chunks(items: list[Any]) -> Iterator[str]:
    """`items` as JSON arrays of at most PARAMETER_BYTES each (one array, the common case, when they fit;
    a single item larger than that is its own array). Nothing for no items."""
    if not items:
        return
    text = orjson.dumps(items)
    if len(text) <= PARAMETER_BYTES or len(items) == 1:
        yield text.decode()
        return
    parts = min(len(items), 2 * (len(text) // PARAMETER_BYTES + 1))  # each part ~half the limit
    step = -(-len(items) // parts)
    for start in range(0, len(items), step):
        yield from _json_chunks(items[start : start + step])


def _too_big(exc: sqlite3.DataError) -> PayloadTooLarge:
    return PayloadTooLarge(f"outcomes not stored: an outcome is over the intake log's size limit ({exc})")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY/LOCKED: another connection holds the write lock (retryable, not a storage failure)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # extended codes keep the base
    return "locked" in str(exc) or "busy" in str(exc)


_GENERATED = operator.itemgetter(12)  # Outcome.generated_id


def _created(outcomes: Sequence[Outcome], known: dict[str, str]) -> tuple[Result, Sequence[Outcome]]:
    """The statuses of a submission (or its 409) and its outcomes to store; `known` learns their ids."""
    if all(map(_GENERATED, outcomes)):
        # Fresh random uuid7s only (a batch without client ids): none is stored already or repeats,
        # so every one is created; no per-outcome bookkeeping for the commonest batch.
        return ["created"] * len(outcomes), outcomes
    result = _statuses(outcomes, known)
    if isinstance(result, BaseException):
        return result, ()
    created = (
        outcomes
        if "duplicate" not in result
        else [o for o, status in zip(outcomes, result, strict=True) if status == "created"]
    )
    known.update([(o[0], o[11]) for o in created])
    return result, created


def _statuses(outcomes: Sequence[Outcome], known: dict[str, str]) -> list[str] | BaseException:
    """created/duplicate per outcome, or an IdempotencyConflict for the whole submission."""
    statuses: list[str] = []
    seen: dict[str, str] = {}
    conflicts: list[dict[str, Any]] = []
    for index, outcome in enumerate(outcomes):
        previous = seen.get(outcome.outcome_id, known.get(outcome.outcome_id))
        if previous is None:
            statuses.append("created")
            seen[outcome.outcome_id] = outcome.fingerprint
        elif previous == outcome.fingerprint:
            statuses.append("duplicate")
        else:
            conflicts.append({"index": index, "outcome_id": outcome.outcome_id})
    if conflicts:
        return IdempotencyConflict(
            f"{len(conflicts)} outcome_id(s) already stored with a different body; nothing was stored",
            details=conflicts,
        )
    return statuses


def _decoded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(seq, row JSON) pairs as tuples in PENDING_COLUMNS order."""
    if not rows:
        return []
    # One orjson call for all rows: the row texts are JSON objects, so joining them makes one array.
    values = orjson.loads("[" + ",".join(r[1] for r in rows) + "]")
    return [(seq, *_fields(value)) for (seq, _), value in zip(rows, values, strict=True)]


def _fields(row: dict[str, Any]) -> tuple[Any, ...]:
    """A stored row object's values in PENDING_COLUMNS[1:] order."""
    return tuple(row[key] for key in ROW_KEYS)


def utc_from_us(value: int) -> dt.datetime:
    """A UTC datetime from microseconds since the epoch."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)


@contextmanager
def open_intake(path: Path, *, group_commit_ms: float = 2.0) -> Iterator[IntakeLog]:
    """An intake log that is closed (queued writes finished) on exit."""
    intake = IntakeLog(path, group_commit_ms=group_commit_ms)
    try:
        yield intake
    finally:
        intake.close()
