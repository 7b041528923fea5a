"""The CLI's shell around the commands: usage errors, repeated options, empty roots, the log level."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

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
        missing.returncode != 0 and "s3cret" not in missing.stderr and "hsk_0123456789ab_" in missing.stderr
    )
    token = run_cli(tmp_path, "keys", "create", "--name", "a", "--scope", "read").stdout.strip()
    unknown = run_cli(tmp_path, "keys", "revoke", "hsk_0123456789ab_s3cret")
    assert unknown.returncode != 0 and "s3cret" not in unknown.stderr
    revoked = run_cli(tmp_path, "keys", "revoke", token)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked key {token.split('_')[1]} (a) at ")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert token.split("_", 2)[2] not in revoked.stdout + revoked.stderr + logs
