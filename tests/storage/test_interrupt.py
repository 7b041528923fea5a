"""Ctrl-C during DuckDB work run by `run_interruptibly`: the query stops and KeyboardInterrupt is raised."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import connect, interrupt
from storage.interrupt import run_interruptibly

ENDLESS = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"
LONG = "SELECT count(*) FROM range(1500000000) t(x) WHERE x % 7 = 3"  # seconds, so a miss fails, not hangs


@pytest.fixture(autouse=True)
def _ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in these tests, as in a terminal, even when the suite was started
    with SIGINT ignored (a background job of a non-interactive shell): they then hung or did not raise."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_query_of_a_connection_the_work_opened(tmp_path: Path) -> None:
    stopped: list[BaseException] = []

    def work() -> object:
        con = connect(tmp_path)
        try:
            return con.execute(ENDLESS).fetchall()
        except BaseException as exc:  # what the query itself ended with
            stopped.append(exc)
            raise
        finally:
            con.close()

    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(work)
    assert time.monotonic() - started < 60  # the query alone would run for hours
    assert len(stopped) == 1 and "interrupted" in str(stopped[0]).lower()  # DuckDB stopped it
    assert interrupt._watched is None  # nothing kept once the work is over


def test_results_and_errors_of_the_work_come_back_as_they_are(tmp_path: Path) -> None:
    con = connect(tmp_path)
    try:
        assert run_interruptibly(lambda: con.execute("SELECT 42").fetchall(), connections=[con]) == [(42,)]
        with pytest.raises(ZeroDivisionError):
            run_interruptibly(lambda: 1 / 0)
    finally:
        con.close()


def test_ctrl_c_between_queries_stops_the_next_one(tmp_path: Path) -> None:
    """The Ctrl-C lands while the work runs Python, before its query starts (review finding: it was
    lost, and the query then ran to its end)."""
    stopped: list[BaseException] = []

    def work() -> object:
        con = connect(tmp_path)
        try:
            time.sleep(1.0)  # no query is running when the Ctrl-C arrives at 0.3 s
            return con.execute(LONG).fetchall()
        except BaseException as exc:
            stopped.append(exc)
            raise
        finally:
            con.close()

    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(work)
    assert len(stopped) == 1 and "interrupted" in str(stopped[0]).lower()  # not run to its end
