"""The API runtime: what it changes in the process while it serves, and that it undoes it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.config import ApiConfig
from api.runtime import GC_THRESHOLDS, Runtime
from tests.api.conftest import free_port
from tests.ingest.file_logs import REPO


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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_serve_exits_0_after_a_clean_stop(tmp_path: Path, stop: signal.Signals) -> None:
    # uvicorn raised the signal again after its clean shutdown: exit 143, or "aborted" and 130
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--root", str(tmp_path), "serve", "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        server.send_signal(stop)
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err
    assert "aborted" not in err
