"""Tests of the ingestion pipeline threads: order kept, errors surface in the caller, early exit is clean."""

from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from ingest.pipeline import OrderedWorker, ordered_map, prefetch


def _numbers(
    n: int, fail_at: int | None = None, closed: list[bool] | None = None
) -> Generator[int, None, None]:
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad item {i}")
            yield i
    finally:
        if closed is not None:
            closed.append(True)


def test_prefetch_yields_everything_in_order() -> None:
    assert list(prefetch(_numbers(100), depth=2)) == list(range(100))


def test_prefetch_raises_the_producer_error_in_the_consumer() -> None:
    seen = []
    with pytest.raises(ValueError, match="bad item 5"):
        for value in prefetch(_numbers(10, fail_at=5)):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]


def test_stopping_early_closes_the_producer_and_its_thread() -> None:
    closed: list[bool] = []
    items = prefetch(_numbers(1000, closed=closed))
    assert next(items) == 0
    items.close()
    assert closed == [True]
    assert not any(t.name == "hindsight-reader" for t in threading.enumerate())


def test_ordered_worker_handles_items_in_order_on_another_thread() -> None:
    handled: list[tuple[int, str]] = []
    with OrderedWorker(lambda i: handled.append((i, threading.current_thread().name)), name="w") as worker:
        for i in range(50):
            worker.submit(i)
    assert handled == [(i, "w") for i in range(50)]


def test_ordered_worker_stops_at_the_first_error_and_raises_it() -> None:
    handled: list[int] = []

    def handle(i: int) -> None:
        if i == 3:
            raise RuntimeError("commit failed")
        handled.append(i)

    with pytest.raises(RuntimeError, match="commit failed"), OrderedWorker(handle) as worker:
        for i in range(10):
            worker.submit(i)  # raises once the worker has failed, or the block's exit does
    assert handled == [0, 1, 2]


def test_ordered_map_keeps_input_order_with_bounded_work_in_flight() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            started.append(i)
        threading.Event().wait(0.01 * (5 - i % 5))  # later items finish first
        return i * i

    results = []
    for value in ordered_map(slow_square, iter(range(20)), workers=2):
        results.append(value)
        assert len(started) <= len(results) + 2  # never more than `workers` ahead
    assert results == [i * i for i in range(20)]
