"""Ctrl-C for DuckDB work: run it on a worker thread and interrupt the connections it opened."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import duckdb

T = TypeVar("T")

_lock = threading.Lock()
_watched: list[duckdb.DuckDBPyConnection] | None = None
"""The connections opened by `connect` while `run_interruptibly` runs (None: nothing is watched, so a
long-lived process such as the API or a notebook keeps no reference to its connections)."""


def opened(con: duckdb.DuckDBPyConnection) -> None:
    """Called by `storage.connect` for each connection it opens."""
    with _lock:
        if _watched is not None:
            _watched.append(con)


def run_interruptibly(work: Callable[[], T], *, connections: Sequence[duckdb.DuckDBPyConnection] = ()) -> T:
    """`work()` on a worker thread while this (main) thread waits; Ctrl-C interrupts every DuckDB
    connection `work` opened (and `connections`, opened before), waits for it to stop and raises
    KeyboardInterrupt.

    DuckDB runs a query with the GIL released and turns a pending SIGINT into "Query interrupted" only
    when it checks for signals, which it did not always do: under load, `hindsight sql` went on after
    Ctrl-C until killed (3 runs of 5 in the test; review finding). Here the main thread stays in Python,
    where SIGINT raises at once, and `interrupt()` is the documented way to stop a running query."""
    global _watched
    done: list[T] = []
    failed: list[BaseException] = []

    finished = threading.Event()

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # handed to the main thread
            failed.append(exc)
        finally:
            finished.set()

    with _lock:
        _watched = list(connections)
    worker = threading.Thread(target=run, name="hindsight-query", daemon=True)
    try:
        worker.start()
        try:
            # an Event, not Thread.join: a join interrupted by SIGINT marks the thread stopped while it
            # runs (Python 3.11's _wait_for_tstate_lock releases the lock the worker holds)
            while not finished.wait(0.1):  # a timed wait: SIGINT interrupts it
                pass
        except KeyboardInterrupt:
            # Interrupt again until the work ends: a Ctrl-C that lands between two queries (or before
            # the first) finds nothing running, and `interrupt()` does not carry over to the next
            # query (review finding). A second Ctrl-C leaves this loop, and the daemon worker dies with
            # the process.
            _interrupt_all()
            while not finished.wait(0.05):
                _interrupt_all()
            raise
    finally:
        with _lock:
            _watched = None
    if failed:
        raise failed[0]
    return done[0]


def _interrupt_all() -> None:
    with _lock:
        connections = list(_watched or [])
    for con in connections:
        with contextlib.suppress(duckdb.Error):  # closed already
            con.interrupt()
