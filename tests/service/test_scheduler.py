"""Tests of the interval runner: runs until stopped; a signal ends it after the current job or its sleep."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from service.scheduler import run_every
from tests.ingest.file_logs import REPO

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from service.scheduler import run_every, stop_on_signals
    runs = []
    def job():
        runs.append(1)
        print("run", len(runs), flush=True)
        if len(runs) == 2 and sys.argv[1] == "inside":
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))
            time.sleep(0.2)  # the job is not interrupted
            print("job finished", flush=True)
    with stop_on_signals() as stop:
        n = run_every(float(sys.argv[3]), job, stop)
    print("runs", n, flush=True)
    """
)


def test_runs_until_the_stop_event_is_set() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            stop.set()

    assert run_every(0.001, job, stop) == 3
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="positive"):
        run_every(0, job, stop)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_a_job_lets_it_finish_then_stops(sig: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "inside", sig, "0.01"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "run 1\nrun 2\njob finished\nruns 2\n"


def test_a_signal_during_the_wait_stops_at_once() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "outside", "-", "600"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "run 1\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)  # far less than the 600 s interval
    assert proc.returncode == 0, err
    assert out == "runs 1\n"
