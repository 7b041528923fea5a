"""Tests of settings loading: defaults, TOML file, environment and flags, and clear errors."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import SettingsLoadError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("HINDSIGHT_"):
            monkeypatch.delenv(name)


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(root=tmp_path)
    assert settings.root == tmp_path
    assert settings.ingest.source_tz == "UTC"
    assert settings.ingest.max_line_bytes == 8 * 1024 * 1024
    assert settings.api.max_body_bytes == 16 * 1024 * 1024
    assert settings.policies == []


def test_toml_in_root_env_and_overrides_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hindsight.toml").write_text(
        '[ingest]\nsource_tz = "Europe/Paris"\n[kafka]\ntopic = "from-file"\ngroup = "g-file"\n'
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = "context.transaction_id"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("HINDSIGHT_KAFKA__TOPIC", "from-env")
    settings = load_settings(root=tmp_path, overrides={"kafka": {"group": "g-flag"}})
    assert settings.ingest.source_tz == "Europe/Paris"
    assert settings.kafka.topic == "from-env"
    assert settings.kafka.group == "g-flag"
    assert [(p.service_id, p.endpoint_id, p.join_on) for p in settings.policies] == [
        ("fraud", "score", "context.transaction_id")
    ]


def test_explicit_config_file_wins_over_root_file(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text('[kafka]\ntopic = "root"\n', encoding="utf-8")
    other = tmp_path / "other.toml"
    other.write_text('[kafka]\ntopic = "other"\n', encoding="utf-8")
    assert load_settings(root=tmp_path, config=other).kafka.topic == "other"


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HINDSIGHT_ROOT", str(tmp_path / "env-root"))
    assert load_settings().root == tmp_path / "env-root"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[api]\nport = -3\n", "api.port"),
        ("[ingest]\nno_such_setting = 1\n", "ingest.no_such_setting"),
        ("[ingest\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "hindsight.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SettingsLoadError, match=expected.replace(".", r"\.")):
        load_settings(root=tmp_path)


def test_missing_config_file_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "--root",
            str(tmp_path),
            "--config",
            str(tmp_path / "nope.toml"),
            "sql",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config file not found: {tmp_path / 'nope.toml'}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # inf passed validation, then crashed the scheduler (OverflowError) or killed the flusher thread
        ("[ingest]\nfollow_interval = inf\n", "ingest.follow_interval: Input should be a finite number"),
        ("[api]\nflush_interval = inf\n", "api.flush_interval: Input should be a finite number"),
        ("[api]\nflush_interval = 1e10\n", "api.flush_interval: Input should be less than or equal to 3600"),
        (
            "[api]\nmax_body_bytes = 1073741824\n",
            "api.max_body_bytes: Input should be less than or equal to 536870912",
        ),
        ("[kafka]\nbatch_max_seconds = nan\n", "kafka.batch_max_seconds: Input should be a finite number"),
        (
            'log_level = "garbage"\n',
            "log_level: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
        ),
        # an empty path was the current folder
        ('[api]\nlogs_dir = ""\n', "api.logs_dir: Value error, api.logs_dir is an empty path"),
        (
            '[api]\nlogging_config = " "\n',
            "api.logging_config: Value error, api.logging_config is an empty path",
        ),
        # review findings: true was 1 and 16 quarantined every line, for good; "" listened on every interface
        (
            "[ingest]\nmax_line_bytes = true\n",
            "ingest.max_line_bytes: Value error, a number is needed, not true",
        ),
        (
            "[ingest]\nmax_line_bytes = 16\n",
            "ingest.max_line_bytes: Input should be greater than or equal to 65536",
        ),
        ('[api]\nhost = ""\n', "api.host: Value error, is empty; give an interface"),
        ('[kafka]\ntopic = " "\n', "kafka.topic: Value error, is empty"),
        (
            '[[policies]]\nservice_id = "s"\nendpoint_id = "e"\nwindow = 90\n',
            'policies[0].window: Value error, a duration is a number and a unit in quotes, e.g. "90d"',
        ),
        (
            '[[policies]]\nservice_id = "s"\nendpoint_id = "e"\nwindw = "9d"\n',
            "policies[0].windw: unknown setting; known: service_id, endpoint_id, outcome_type, join_on,",
        ),
    ],
)
def test_values_that_cannot_work_are_refused_when_loading(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "hindsight.toml").write_text(text, encoding="utf-8")
    where, message = expected.split(": ", 1)
    with pytest.raises(
        SettingsLoadError, match=re.escape(f"{where} (in {tmp_path / 'hindsight.toml'}): {message}")
    ):
        load_settings(root=tmp_path)


def test_errors_name_the_environment_variable_and_other_programs_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HINDSIGHT_KEY", "hsk_for_curl")  # broke every command ("key: Extra inputs ...")
    with caplog.at_level(logging.WARNING, logger="service.settings"):
        assert load_settings(root=tmp_path).api.port == 8000
    assert "ignoring environment variable HINDSIGHT_KEY: not a hindsight setting" in caplog.text
    monkeypatch.setenv("HINDSIGHT_API__PROT", "9000")
    with pytest.raises(SettingsLoadError) as caught:
        load_settings(root=tmp_path)
    where = "api.prot (environment variable HINDSIGHT_API__PROT)"
    assert caught.value.message.startswith(f"invalid settings: {where}: unknown setting; known: host, port,")


def test_a_class_given_as_a_number_is_its_text_and_a_dangling_config_link_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "hindsight.toml"
    config.write_text('[[policies]]\nservice_id = "s"\nendpoint_id = "e"\npositive = 1\n', encoding="utf-8")
    assert load_settings(root=tmp_path).policies[0].positive == "1"
    config.unlink()
    config.symlink_to(tmp_path / "moved.toml")  # was "no config": every label pending, exit 0
    with pytest.raises(
        SettingsLoadError, match=r"hindsight.toml links to .*moved.toml, which does not exist"
    ):
        load_settings(root=tmp_path)


def test_log_level_is_read_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HINDSIGHT_LOG_LEVEL", "warning")
    assert load_settings(root=tmp_path).log_level == "WARNING"


def test_an_empty_root_from_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HINDSIGHT_ROOT", "")
    with pytest.raises(SettingsLoadError, match="root is an empty path"):
        load_settings()


def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[kafka]\ntopic = "café"\n'.encode("latin-1"))
    with pytest.raises(SettingsLoadError, match=f"config file {re.escape(str(path))} is not UTF-8 text"):
        load_settings(root=tmp_path, config=path)


def test_relative_paths_in_a_file_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # they were relative to wherever the command ran: audit logs landed in the current folder
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "h.toml").write_text('root = "data"\n[api]\nlogs_dir = "audit-logs"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config=folder / "h.toml")
    assert (settings.root, settings.api.logs_dir) == (folder / "data", folder / "audit-logs")
    monkeypatch.setenv("HINDSIGHT_API__LOGS_DIR", "here")  # the environment's stay the current folder's
    assert load_settings(config=folder / "h.toml").api.logs_dir == Path("here")
    (folder / "h.toml").write_text('root = "~/hs-data"\n', encoding="utf-8")  # was a folder named ~
    assert load_settings(config=folder / "h.toml").root == Path.home() / "hs-data"


def test_a_config_file_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    from storage.policies import load_policies

    text = '[api]\nport = 9000\n[[policies]]\nservice_id = "s"\nendpoint_id = "e"\n'
    (tmp_path / "hindsight.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_settings(root=tmp_path).api.port == 9000
    assert [p.service_id for p in load_policies(tmp_path)] == ["s"]
