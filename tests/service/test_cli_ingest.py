"""Tests of `hindsight ingest files` as a user runs it: summaries, exit codes, progress, --follow."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ingest.file_logs import REPO, expected, ids_in, qline, run_cli


def _logs(folder: Path, numbers: range, *, bad: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "queries.log").open("ab") as fh:
        for i in numbers:
            fh.write(qline(i))
        fh.write(b"garbage line\n" * bad)
    return folder


def test_json_summary_is_one_object_on_stdout_and_bad_lines_exit_0(tmp_path: Path) -> None:
    logs = _logs(tmp_path / "logs", range(4), bad=2)
    result = run_cli(tmp_path / "root", "ingest", "files", str(logs), "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("files", "records", "days", "skipped", "quarantined", "lost_bytes")} == {
        "files": 1,
        "records": 4,
        "days": 1,
        "skipped": 0,
        "quarantined": 2,
        "lost_bytes": 0,
    }
    assert summary["first_day"] == summary["last_day"] == "2026-03-02"


def test_table_summary_is_one_line(tmp_path: Path) -> None:
    logs = _logs(tmp_path / "logs", range(3))
    result = run_cli(tmp_path / "root", "ingest", "files", str(logs))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "1 files (1 read, 0 waiting), 3 records over 1 days, 0 skipped, 0 quarantined, 0 lost bytes\n"
    )
    assert "ingesting" not in result.stderr and "\x1b[" not in result.stderr  # no progress off a terminal


@pytest.mark.parametrize("follow", [[], ["--follow"]], ids=["once", "follow"])
def test_a_missing_path_is_one_error_line_and_exit_2(tmp_path: Path, follow: list[str]) -> None:
    # --follow retried a mistyped path forever and exited 0 on SIGTERM (review finding); bad input is 2
    result = run_cli(tmp_path / "root", "ingest", "files", *follow, str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr == f"error: no such file or folder: {tmp_path / 'nope'}\n"
    assert result.stdout == ""
    assert not (tmp_path / "root").exists()  # nothing made under the root either


def test_an_unwritable_root_is_one_error_line(tmp_path: Path) -> None:
    logs = _logs(tmp_path / "logs", range(1))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = run_cli(blocker / "root", "ingest", "files", str(logs))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot write under root") and result.stderr.count("\n") == 1


def test_a_bad_source_zone_is_a_config_error(tmp_path: Path) -> None:
    logs = _logs(tmp_path / "logs", range(1))
    result = run_cli(tmp_path / "root", "ingest", "files", str(logs), "--source-tz", "Mars/Olympus")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Mars/Olympus" in result.stderr


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    logs = _logs(tmp_path / "logs", range(50))
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--root", str(tmp_path / "root"), "ingest", "files", str(logs)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert b"ingesting" in b"".join(chunks)
    assert out.decode().startswith("1 files (1 read")


FOLLOW = ("--follow", "--interval", "0.2", "--format", "json")


def _start_follower(root: Path, logs: Path) -> subprocess.Popen[str]:
    """`hindsight ingest files LOGS --follow` in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "HINDSIGHT_CRASH_AT"}
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--root", str(root), "ingest", "files", str(logs), *FOLLOW],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _follow(tmp_path: Path, sig: signal.Signals) -> None:
    logs = _logs(tmp_path / "logs", range(3))
    root = tmp_path / "root"
    proc = _start_follower(root, logs)
    try:
        _wait_for(lambda: ids_in(root) == expected(range(3)))
        _logs(logs, range(3, 6))
        _wait_for(lambda: ids_in(root) == expected(range(6)))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["records"] == 6
    assert ids_in(root) == expected(range(6))


def _wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_follow_picks_up_new_lines_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    _follow(tmp_path, sig)


def test_follow_outlives_a_log_folder_that_is_gone_for_a_while(tmp_path: Path) -> None:
    # a folder moved away during a redeploy ended the follower with "no such file or folder"
    logs = _logs(tmp_path / "logs", range(3))
    root = tmp_path / "root"
    proc = _start_follower(root, logs)
    try:
        _wait_for(lambda: ids_in(root) == expected(range(3)))
        moved = logs.rename(tmp_path / "moved")
        time.sleep(0.6)  # a few scans without the folder
        assert proc.poll() is None
        moved.rename(logs)
        _logs(logs, range(3, 6))
        _wait_for(lambda: ids_in(root) == expected(range(6)))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "scan failed: no such file or folder" in err
    assert ids_in(root) == expected(range(6))
