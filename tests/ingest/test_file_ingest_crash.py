"""Crash tests of file ingestion: the real CLI killed at each durable step, or at random, then rerun."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.file_ingest import FileIngestor
from tests.ingest.file_logs import REPO, expected, ids_in, qline, quarantine_rows, run_cli
from tests.ingest.lines import make_query_line

BAD = b"not json at all\n"


def _make_logs(folder: Path, lines: int) -> tuple[list[int], int]:
    """Rotated and live files with good lines (ids 0..lines-1), a bad line every 25; returns (ids, bads)."""
    folder.mkdir(parents=True)
    files = [folder / "queries.log.1", folder / "queries.log", folder / "audit.log"]
    bad = 0
    handles = [f.open("wb") for f in files]
    try:
        for i in range(lines):
            fh = handles[i % 3]
            if i % 3 == 2:
                fh.write(make_query_line("B", context={"transaction_id": f"T-{i}"}, newline="\n"))
            else:
                fh.write(qline(i))
            if i % 25 == 0:
                fh.write(BAD)
                bad += 1
    finally:
        for fh in handles:
            fh.close()
    return list(range(lines)), bad


def _assert_exactly_once(root: Path, ids: list[int], bad: int) -> None:
    assert ids_in(root) == expected(ids)
    rows = quarantine_rows(root)
    assert len(rows) == bad
    assert len({(name, position) for name, position, _, _ in rows}) == bad


STEPS = [
    "ingest.after_parse@2",
    "commit.lock@3",
    "commit.before@3",
    "commit.after@1",  # right after the first quarantine commit, before its predictions
    "commit.after@4",
    "ingest.after_quarantine@2",
    "ingest.after_commit@2",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_durable_step_then_a_rerun_gives_every_record_once(tmp_path: Path, step: str) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    ids, bad = _make_logs(logs, 240)
    env = {"HINDSIGHT_CRASH_AT": step, "HINDSIGHT_INGEST__BATCH_BYTES": "30000"}
    crashed = run_cli(root, "ingest", "files", str(logs), env=env)
    assert crashed.returncode == 137, crashed.stderr
    partial = ids_in(root)
    assert len(partial) == len(set(partial)) < len(ids)
    FileIngestor(root, batch_bytes=30000).run([logs])
    _assert_exactly_once(root, ids, bad)


def _commits(root: Path) -> int:
    """How many commits the predictions table has (cheap to poll: a directory listing)."""
    log = root / "tables" / "predictions" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def test_random_kill_9_loop_never_duplicates_or_loses(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    ids, bad = _make_logs(logs, 2000)
    rng = random.Random(int(os.environ.get("KILL_SEED", "7")))
    env = {**os.environ, "HINDSIGHT_INGEST__BATCH_BYTES": "20000"}
    env.pop("HINDSIGHT_CRASH_AT", None)
    command = [sys.executable, "-m", "service", "--root", str(root), "ingest", "files", str(logs)]
    kills = 0
    for _ in range(8):
        before = _commits(root)
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Kill only once this run has committed something, at a random moment after that.
        deadline = time.monotonic() + 30
        while proc.poll() is None and _commits(root) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            assert proc.returncode == 0
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        seen = ids_in(root)
        assert len(seen) == len(set(seen))  # never a duplicate, even mid-way
    assert kills >= 2
    FileIngestor(root).run([logs])  # whatever is left, in one commit
    _assert_exactly_once(root, ids, bad)
