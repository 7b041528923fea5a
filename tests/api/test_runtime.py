"""The API runtime: what it changes in the process while it serves, and that it undoes it."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from api.config import ApiConfig
from api.runtime import GC_THRESHOLDS, Runtime


def test_the_collector_thresholds_are_raised_while_serving_and_restored_after(tmp_path: Path) -> None:
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS  # else the test could not tell

    async def serve() -> tuple[int, int, int]:
        runtime = Runtime.open(ApiConfig(root=tmp_path))
        try:
            return gc.get_threshold()
        finally:
            runtime.close()

    assert asyncio.run(serve()) == GC_THRESHOLDS
    assert gc.get_threshold() == before
