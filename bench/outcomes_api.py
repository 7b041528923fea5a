"""Benchmark POST /v1/outcomes: the real server vs a bare FastAPI endpoint that validates and stores nothing.

Both run as one uvicorn worker on loopback. `wrk` (installed with apt-get when missing; else an async
Python load generator is used and named in the report) drives single-outcome POSTs to each: rate and
p99 latency. Then 10,000-outcome batches are posted by two concurrent clients: outcomes/s. Targets:
single POSTs >= 0.75x the bare rate, batches >= 100,000 outcomes/s. Figures go into docs/benchmarks.md
between `<!-- BEGIN outcomes_api -->` and `<!-- END outcomes_api -->`.

    .venv/bin/python bench/outcomes_api.py [--seconds 10] [--connections 16] [--batches 30] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN outcomes_api -->", "<!-- END outcomes_api -->"

REAL_SERVER = """
import sys
from pathlib import Path
import uvicorn
from api.app import create_app
from service.cli_serve import api_config
from service.settings import load_settings
uvicorn.run(create_app(api_config(load_settings(root=Path(sys.argv[1])))), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""

BARE_SERVER = """
import sys
import uvicorn
from fastapi import FastAPI
from storage.outcome_model import OutcomeIn
app = FastAPI()
@app.post("/v1/outcomes")
async def bare(outcome: OutcomeIn) -> dict:
    return {"results": [{"outcome_id": outcome.outcome_id or "x", "status": "created"}]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

ONE = {"record_id": "rec-1", "value": "fraud", "occurred_at": "2026-01-01T00:00:00Z", "service_id": "svc"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", *args], cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def ensure_wrk() -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    return shutil.which("wrk")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    wrk: str, url: str, token: str | None, seconds: int, connections: int, tmp: Path
) -> tuple[float, float]:
    script = tmp / "post.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{orjson.dumps(ONE).decode()}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + auth
    )
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the distribution line "     99%   12.34ms", not a "+/- Stdev" column such as "89.99%"
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return rate, p99


async def _python_load(url: str, token: str | None, seconds: int, connections: int) -> tuple[float, float]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    body = orjson.dumps(ONE)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    latencies.sort()
    return len(latencies) / seconds, latencies[int(len(latencies) * 0.99)]


def batch_rate(url: str, token: str, batches: int, size: int) -> float:
    bodies = [
        orjson.dumps({"outcomes": [{**ONE, "record_id": f"b{b}-{i}"} for i in range(size)]})
        for b in range(batches)
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lock = threading.Lock()
    queue = list(bodies)

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                http.post(url, content=body, headers=headers).raise_for_status()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return batches * size / (time.perf_counter() - t0)


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    ordered = sorted(runs)
    return ordered[len(ordered) // 2]


def write_section(text: str) -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    section = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in current and END in current:
        current = current[: current.index(BEGIN)] + section + current[current.index(END) + len(END) :]
    else:
        current = current.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(current, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved load rounds per endpoint.")
    parser.add_argument("--wide-connections", type=int, default=64, help="Connections of the extra round.")
    parser.add_argument(
        "--no-write", action="store_true", help="Print the figures without updating docs/benchmarks.md."
    )
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HINDSIGHT_CRASH_AT", None)
    with tempfile.TemporaryDirectory(prefix="bench-outcomes-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        from storage.keys import KeyStore
        from storage.layout import Layout

        store = KeyStore(Layout(root).keys_db)
        token = store.create("bench", ["outcomes:write"]).token
        store.close()
        real_port, bare_port = free_port(), free_port()
        real = start([REAL_SERVER, str(root), str(real_port)], real_port, env)
        bare = start([BARE_SERVER, str(bare_port)], bare_port, env)
        try:
            wrk = ensure_wrk()
            tool = f"wrk -t2 -c{args.connections} -d{args.seconds}s" if wrk else "async httpx load generator"

            def load(port: int, key: str | None, connections: int = args.connections) -> tuple[float, float]:
                url = f"http://127.0.0.1:{port}/v1/outcomes"
                if wrk:
                    return run_wrk(wrk, url, key, args.seconds, connections, tmp)
                return asyncio.run(_python_load(url, key, args.seconds, connections))

            # Interleaved rounds (bare, real, bare, real, ...): the machine is shared, so load from other
            # processes hits both sides alike; the median round of each side is reported.
            bare_runs, real_runs = [], []
            for _ in range(args.rounds):
                bare_runs.append(load(bare_port, None))
                real_runs.append(load(real_port, token))
            bare_rate, bare_p99 = _median(bare_runs)
            real_rate, real_p99 = _median(real_runs)
            # One round at more connections: larger groups share each fsync (context, no target).
            wide_bare = load(bare_port, None, args.wide_connections)
            wide_real = load(real_port, token, args.wide_connections)
            url = f"http://127.0.0.1:{real_port}/v1/outcomes"
            rate = batch_rate(url, token, args.batches, args.batch_size)
        finally:
            real.terminate()
            bare.terminate()
            real.wait()
            bare.wait()
    ratio = real_rate / bare_rate
    single_ok, batch_ok = ratio >= 0.75, rate >= 100_000
    text = f"""## Outcomes API (`bench/outcomes_api.py`)

Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} cores, shared
with other work), one uvicorn worker each, loopback, load by {tool}, {args.rounds} interleaved rounds
per endpoint at {args.connections} connections (median round shown). The hindsight server
authenticates every request, fsyncs the intake log (group commit) before answering and writes the
audit line; the bare endpoint only validates the same pydantic model (`OutcomeIn`) and stores nothing.

| | requests/s | p99 latency |
|---|---:|---:|
| bare FastAPI endpoint (validate only) | {bare_rate:,.0f} | {bare_p99:.1f} ms |
| hindsight `POST /v1/outcomes`, one outcome | {real_rate:,.0f} | {real_p99:.1f} ms |
| ratio (target >= 0.75) | {ratio:.2f} {"(met)" if single_ok else "(MISSED)"} | |
| bare, {args.wide_connections} connections (one round) | {wide_bare[0]:,.0f} | {wide_bare[1]:.1f} ms |
| hindsight, {args.wide_connections} connections (one round) | {wide_real[0]:,.0f} | {wide_real[1]:.1f} ms |
| ratio at {args.wide_connections} connections | {wide_real[0] / wide_bare[0]:.2f} | |

Batches of {args.batch_size:,} outcomes ({args.batches} batches, 2 concurrent clients, server-generated
outcome_ids): **{rate:,.0f} outcomes/s** (target >= 100,000: {"met" if batch_ok else "MISSED"}).
"""
    if not args.no_write:
        write_section(text)
    print(text)
    return 0 if single_ok and batch_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
