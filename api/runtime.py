"""The running service's parts (intake log, flusher, key store), opened at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from api.audit import close_audit, configure_audit
from api.config import ApiConfig
from storage.keys import KeyStore
from storage.layout import Layout
from storage.outcome_flush import Flusher
from storage.outcome_intake import Callback, Deliver, IntakeLog, Result
from storage.outcome_model import Outcome

log = logging.getLogger("hindsight.api")

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic garbage collector's thresholds while the API serves (Python's default: 700, 10, 10).

A 10,000-outcome batch allocates ~30,000 container objects (the parsed items, the `Outcome` tuples,
the intake rows, the response), none of them in reference cycles. At the default thresholds they
set off ~40 young collections per batch and a full collection of the whole heap (FastAPI, pydantic,
Arrow, DuckDB, delta-rs: hundreds of thousands of objects) every few batches, all holding the GIL:
measured 48-53 ms per batch to parse, validate and render the answer, 35-37 ms at these thresholds
(docs/design.md, "Outcomes API speed", third pass). Cycles are still collected, just less often."""


@dataclass
class Runtime:
    """What the handlers use; one per app."""

    config: ApiConfig
    intake: IntakeLog
    flusher: Flusher
    keys: KeyStore
    gc_before: tuple[int, int, int] = GC_THRESHOLDS
    """The collector's thresholds before `open` (restored by `close`)."""

    @classmethod
    def open(cls, config: ApiConfig) -> Runtime:
        """Configure audit logs, open the stores and start the flusher (it flushes at once)."""
        layout = Layout(config.root)
        configure_audit(config.audit_dir, config_file=config.logging_config)
        keys = KeyStore(layout.keys_db)
        loop = asyncio.get_running_loop()
        intake = IntakeLog(
            layout.intake_db,
            group_commit_ms=config.group_commit_ms,
            deliver=_on_loop(loop),
            call_soon=loop.call_soon if config.intake_commit == "loop" else None,
        )
        flusher = Flusher(intake, config.root, interval=config.flush_interval)
        flusher.start()
        log.info("outcome intake %s open (source %s)", layout.intake_db, intake.app_id)
        gc_before = gc.get_threshold()  # set last: an open that fails leaves the process's GC alone
        gc.set_threshold(*GC_THRESHOLDS)
        return cls(config, intake, flusher, keys, gc_before)

    def store(
        self, outcomes: Sequence[Outcome], key_id: str | None, *, large: bool = False
    ) -> asyncio.Future[list[str]]:
        """Submit outcomes to the intake log; the future resolves on the event loop after the fsync
        (`large`: from a large body, committed on the writer thread, see IntakeLog.submit_callback)."""
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        def done(result: Result) -> None:
            if future.done():  # the request was cancelled (client gone): nobody waits
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.intake.submit_callback(outcomes, key_id, done, large=large)
        return future

    def close(self) -> None:
        """Stop accepting, finish queued writes, flush once more, close everything."""
        self.flusher.stop()
        self.intake.close()
        self.keys.close()
        close_audit()
        gc.set_threshold(*self.gc_before)

    def readiness(self) -> dict[str, Any]:
        """Each readiness check and its state."""
        return {
            "intake_writable": self.intake.failure is None and self.intake.writer_alive,
            "flusher_alive": self.flusher.alive,
            "flusher_stalled": self.flusher.stalled,
            "seconds_since_flush": round(self.flusher.seconds_since_flush, 1),
            "fail_stop": self.intake.failure,
        }


def _on_loop(loop: asyncio.AbstractEventLoop) -> Deliver:
    """Deliver a whole group's results with one wake-up of the event loop."""

    def deliver(calls: list[tuple[Callback, Result]]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone, nobody waits
            loop.call_soon_threadsafe(_run_callbacks, calls)

    return deliver


def _run_callbacks(calls: list[tuple[Callback, Result]]) -> None:
    for callback, result in calls:
        callback(result)


def runtime_of(request: Request) -> Runtime:
    """The app's Runtime (for handlers that take no dependencies)."""
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


async def _runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, a costly hop per request
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
"""The app's Runtime, as a dependency."""
