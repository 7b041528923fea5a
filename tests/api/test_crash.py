"""Durability under crashes: the ack-then-kill -9 loop, and fail-stop when intake or Delta writes fail."""

from __future__ import annotations

import itertools
import random
import shutil
import threading
import time
from pathlib import Path

import httpx

from tests.api.conftest import Server, bearer, make_key, outcome_rows, post

# Each round runs the server until it dies: killed at a random moment (None) or at a named crash point.
ROUNDS = [
    None,
    "outcomes.intake_fsynced@7",
    None,
    "outcomes.before_response@5",
    "outcomes.flush_before_commit@3",
    "outcomes.flush_after_commit@3",
    "outcomes.intake_before_commit@4",
    "commit.after@2",
    None,
]


def _client(
    srv: Server,
    token: str,
    ids: itertools.count[int],
    acked: set[str],
    lock: threading.Lock,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    with httpx.Client(timeout=5, headers=bearer(token)) as client:
        while not stop.is_set():
            batch = [f"o{next(ids)}" for _ in range(rng.randint(1, 25))]
            body = {"outcomes": [{"outcome_id": i, "record_id": i, "value": 1} for i in batch]}
            try:
                response = client.post(f"{srv.url}/v1/outcomes", json=body)
            except httpx.TransportError:
                if srv.proc is None or srv.proc.poll() is not None:
                    return
                continue
            if response.status_code == 200:
                with lock:
                    acked.update(batch)


def test_every_acknowledged_outcome_survives_kill_9_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    token = make_key(root, "outcomes:write")
    srv = Server(root, env={"HINDSIGHT_API__FLUSH_INTERVAL": "0.1"})
    rng = random.Random(20261126)
    ids = itertools.count()
    acked: set[str] = set()
    lock = threading.Lock()
    for plan in ROUNDS:
        srv.start(**({"HINDSIGHT_CRASH_AT": plan} if plan else {}))
        stop = threading.Event()
        clients = [
            threading.Thread(target=_client, args=(srv, token, ids, acked, lock, stop, rng)) for _ in range(3)
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + (rng.uniform(0.3, 1.5) if plan is None else 6.0)
        while time.monotonic() < deadline and srv.proc is not None and srv.proc.poll() is None:
            time.sleep(0.01)
        srv.kill()
        stop.set()
        for thread in clients:
            thread.join()
        if plan is not None:
            assert srv.proc is not None and srv.proc.returncode == 137, f"{plan} was never reached"
    assert len(acked) > 100
    srv.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        counts = dict(outcome_rows(root, "SELECT outcome_id, count(*) FROM outcomes GROUP BY 1"))  # type: ignore[arg-type]
        if acked <= counts.keys():
            break
        time.sleep(0.2)
    srv.stop()
    counts = dict(outcome_rows(root, "SELECT outcome_id, count(*) FROM outcomes GROUP BY 1"))  # type: ignore[arg-type]
    assert sorted(acked - counts.keys()) == []
    assert {k: v for k, v in counts.items() if v != 1} == {}


def _wait_not_ready(srv: Server, token: str) -> httpx.Response:
    deadline = time.monotonic() + 10
    response = httpx.get(f"{srv.url}/readyz", headers=bearer(token))
    while response.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        response = httpx.get(f"{srv.url}/readyz", headers=bearer(token))
    return response


def test_failed_delta_commit_stops_writes_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    token = make_key(root, "outcomes:write", "read")
    srv = Server(root, env={"HINDSIGHT_API__FLUSH_INTERVAL": "0.1"})
    srv.start()
    assert post(srv, token, {"outcome_id": "before", "record_id": "r", "value": 1}).status_code == 200
    table = root / "tables" / "outcomes"
    deadline = time.monotonic() + 10
    while not (table / "_delta_log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.move(table, tmp_path / "saved-table")
    table.write_text("not a table")  # the flusher's next commit fails: fail-stop
    acked_after = post(srv, token, {"outcome_id": "racing", "record_id": "r", "value": 1}).status_code == 200
    not_ready = _wait_not_ready(srv, token)
    assert not_ready.status_code == 503
    assert not_ready.json()["error"]["type"] == "NotReady"
    refused = post(srv, token, {"outcome_id": "refused", "record_id": "r", "value": 1})
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "NotReady"
    assert "Retry-After" not in refused.headers  # only a restart helps: "retry in 1 s" misled clients
    # the cause names server paths and delta-rs text: for the log and /readyz, not for every client
    assert str(root) not in refused.text and "needs an operator" in refused.json()["error"]["message"]
    assert str(root) in not_ready.text  # /readyz (read scope) keeps the cause for operators
    srv.kill()
    table.unlink()
    shutil.move(tmp_path / "saved-table", table)
    srv.start()
    expected = ["before", "racing"] if acked_after else ["before"]
    deadline = time.monotonic() + 10
    while [r[0] for r in outcome_rows(root)] != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    srv.stop()
    assert [r[0] for r in outcome_rows(root)] == expected


def test_failed_intake_write_is_not_acknowledged_and_stops_writes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    token = make_key(root, "outcomes:write", "read")
    srv = Server(root, max_file_bytes=1024 * 1024)
    srv.start()
    assert post(srv, token, {"outcome_id": "small", "record_id": "r", "value": 1}).status_code == 200
    big = {
        "outcomes": [
            {"outcome_id": f"big{i}", "record_id": "r", "value": 1, "attributes": {"pad": "x" * 500}}
            for i in range(4000)
        ]
    }
    failed = post(srv, token, big)  # its WAL frames pass the 1 MiB file-size limit: the write fails
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["type"] == "NotReady"
    assert post(srv, token, {"outcome_id": "later", "record_id": "r", "value": 1}).status_code == 503
    assert _wait_not_ready(srv, token).status_code == 503
    srv.kill()
    srv.max_file_bytes = None
    srv.start()
    assert post(srv, token, {"outcome_id": "after-restart", "record_id": "r", "value": 1}).status_code == 200
    srv.stop()
    assert [r[0] for r in outcome_rows(root)] == ["after-restart", "small"]
