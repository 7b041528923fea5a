"""The CLI's shell around the commands: usage errors, repeated options, empty roots, the log level."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.ingest.file_logs import REPO, run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # typer's own click errors used to print "error: unexpected NoSuchOption: ..." with exit code 1
        (["eval", "--bogus"], "error: No such option: --bogus\n"),
        (["serve", "--port", "abc"], "error: Invalid value for '--port': "),
        (["sql"], "error: Missing argument 'query'.\n"),
        # click kept the last of a repeated option: --by day --by none gave cohorts by none
        (
            ["eval", "--by", "day", "--by", "none"],
            "error: option(s) ['--by'] given more than once; give each once\n",
        ),
        (["eval", "--format=json", "--format", "csv"], "error: option(s) ['--format'] given more than once"),
        (
            ["ingest", "files", ".", "--interval", "2"],
            "error: --interval sets the time between scans of --follow",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "json_error"),
    [
        (["eval", "--format=json", "--by", "month"], True),  # was plain text: only `--format json` was seen
        (["eval", "--format", "json", "--by", "month"], True),
        (["ingest", "files", "json", "--format", "table"], False),  # a folder named json is not the format
        (["eval", "--format", "csv", "--by", "month"], False),
    ],
)
def test_errors_are_json_exactly_when_the_format_is_json(
    tmp_path: Path, args: list[str], json_error: bool
) -> None:
    result = run_cli(tmp_path, *args)
    assert result.returncode != 0
    assert result.stderr.startswith('{"error"') is json_error, result.stderr


def test_a_global_option_and_the_commands_own_are_counted_apart(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "keys", "create", "--name", "a", "--scope", "read", "--scope", "admin")
    assert result.returncode == 0, result.stderr  # --scope may be repeated


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_root_is_refused(tmp_path: Path, value: str) -> None:
    # HINDSIGHT_ROOT= (an unset shell variable) put tables/ and state/ in the current folder
    result = subprocess.run(
        [sys.executable, "-m", "service", "sql", "SELECT 1"],
        cwd=tmp_path,
        env={**os.environ, "HINDSIGHT_ROOT": value, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "empty path" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_log_level_setting_applies_to_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only `serve` read it: HINDSIGHT_LOG_LEVEL=ERROR left `ingest files --follow` printing INFO lines
    monkeypatch.setenv("HINDSIGHT_LOG_LEVEL", "error")
    root_logger = logging.getLogger()
    before = root_logger.level
    try:
        result = CliRunner().invoke(app, ["--root", str(tmp_path), "sql", "SELECT 1"])
        assert result.exit_code == 0, result.output
        assert root_logger.level == logging.ERROR
    finally:
        root_logger.setLevel(before)


def test_keys_revoke_takes_a_whole_key_and_never_prints_its_secret(tmp_path: Path) -> None:
    missing = run_cli(tmp_path / "typo", "keys", "revoke", "hsk_0123456789ab_s3cret")
    assert (
        missing.returncode == 2 and "s3cret" not in missing.stderr and "hsk_0123456789ab_" in missing.stderr
    )
    created = run_cli(tmp_path, "keys", "create", "--name", "a", "--scope", "read")
    assert f" in {tmp_path / 'state' / 'keys.sqlite'}; keep it safe" in created.stderr  # where it went
    token = created.stdout.strip()
    unknown = run_cli(tmp_path, "keys", "revoke", "hsk_0123456789ab_s3cret")
    assert unknown.returncode == 2 and "s3cret" not in unknown.stderr  # bad input, as documented
    revoked = run_cli(tmp_path, "keys", "revoke", token)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked key {token.split('_')[1]} (a) at ")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert token.split("_", 2)[2] not in revoked.stdout + revoked.stderr + logs


@pytest.mark.parametrize(
    "interrupt",
    [
        lambda: 130,  # typer's own Ctrl-C handling returns Exit(130)'s code with standalone_mode off
        lambda: (_ for _ in ()).throw(RuntimeError("Query interrupted")),  # DuckDB's form of Ctrl-C
    ],
    ids=["typer", "duckdb"],
)
def test_ctrl_c_is_an_abort_not_a_success(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], interrupt: Any
) -> None:
    from service import cli

    monkeypatch.setattr(cli, "app", lambda **_: interrupt())
    monkeypatch.setattr(sys, "argv", ["hindsight", "sql", "SELECT 1"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("aborted")


def test_ctrl_c_during_a_query_exits_130(tmp_path: Path) -> None:
    import signal

    import psutil

    query = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"
    child = subprocess.Popen(
        [sys.executable, "-m", "service", "--root", str(tmp_path), "sql", query],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as started from a terminal: a suite run as a background job of a non-interactive shell ignores
        # SIGINT, and its children inherit that (the query then ran on until killed)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        process = psutil.Process(child.pid)
        while sum(process.cpu_times()[:2]) < 2.0:  # start-up takes well under a second of CPU: now it queries
            assert child.poll() is None
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:  # a query Ctrl-C missed would otherwise run on for hours after the test
        child.kill()
        child.communicate()
    assert (child.returncode, out) == (130, "")
    assert err.startswith("aborted")
