"""Run periodic jobs until SIGINT/SIGTERM: a small interval runner with a clean shutdown.

A signal never interrupts a job midway: it sets a stop event, the running job sees it at its next
safe point (after its current commit), and the runner returns instead of sleeping again.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block, SIGINT and SIGTERM set the returned event instead of killing the process.

    The previous handlers come back on exit. Must be entered from the main thread (a rule of
    Python's `signal` module).
    """
    event = stop or threading.Event()

    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        event.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_every(interval: float, job: Callable[[], object], stop: threading.Event) -> int:
    """Run `job` now and then every `interval` seconds (start to start) until `stop` is set.

    Returns how many times the job ran. A job that takes longer than the interval is followed by
    the next run at once; runs never overlap.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    runs = 0
    while not stop.is_set():
        started = time.monotonic()
        job()
        runs += 1
        delay = interval - (time.monotonic() - started)
        if delay > 0 and stop.wait(delay):
            break
    return runs
