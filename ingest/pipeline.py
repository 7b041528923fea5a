"""Overlap the stages of ingestion: read ahead in one thread, commit in order in another.

Reading (file I/O, numpy), parsing (DuckDB) and committing (delta-rs Parquet writes) all release
the GIL, so running them on three threads keeps both cores busy. Order is kept: one reader, one
committer, bounded queues (so at most a few batches are in memory), and errors raised in a worker
come out of the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Generator[T, None, None], *, depth: int = 1) -> Generator[T, None, None]:
    """Yield the items of `items`, produced by a background thread that stays `depth` items ahead."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    cancelled = threading.Event()

    def put(value: object) -> bool:
        while not cancelled.is_set():
            try:
                slots.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for value in items:
                if not put(value):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))
        finally:
            items.close()

    thread = threading.Thread(target=work, name="hindsight-reader", daemon=True)
    thread.start()
    try:
        while True:
            value = slots.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.exc
            yield value  # type: ignore[misc]
    finally:
        cancelled.set()
        thread.join()


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, name: str = "hindsight-map"
) -> Generator[R, None, None]:
    """`fn` over `items` on `workers` threads; results come in input order, at most `workers` in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        inflight: deque[Future[R]] = deque()
        try:
            for item in items:
                inflight.append(pool.submit(fn, item))
                del item
                if len(inflight) >= workers:
                    yield inflight.popleft().result()
            while inflight:
                yield inflight.popleft().result()
        finally:
            for future in inflight:
                future.cancel()


class OrderedWorker(Generic[T]):
    """Runs `handle` on submitted items one at a time, in submission order, on its own thread.

    Used as a context manager: leaving the block waits for every submitted item, then raises the
    first error `handle` raised (items after a failure are dropped, never handled out of order).
    """

    def __init__(self, handle: Callable[[T], None], *, name: str = "hindsight-worker") -> None:
        self._handle = handle
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def __enter__(self) -> OrderedWorker[T]:
        self._thread.start()
        return self

    def submit(self, item: T) -> None:
        """Hand `item` over once the worker has finished the previous one; raises if that one failed.

        Waiting for the worker to be idle (rather than queueing) keeps at most one item in work
        and one being prepared by the caller: memory stays bounded by two items.
        """
        self._queue.join()
        self._raise_if_failed()
        self._queue.put(item)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if exc is None:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _DONE:
                    return
                if self._error is None:  # after a failure, drain without handling: order first
                    self._handle(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc
            finally:
                del item
                self._queue.task_done()
