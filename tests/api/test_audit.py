"""Audit logging configuration: default JSON files, or a dictConfig file that replaces them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.audit import audit, auth_log, close_audit, configure_audit, outcomes_log
from service.errors import ConfigError


def test_default_handlers_write_json_lines_per_logger(tmp_path: Path) -> None:
    configure_audit(tmp_path / "logs")
    audit(auth_log, "auth_failed", key_id="abc", client_ip="127.0.0.1")
    audit(outcomes_log, "outcomes_written", key_id="abc", created=2)
    close_audit()
    auth = [json.loads(line) for line in (tmp_path / "logs" / "audit-auth.log").read_text().splitlines()]
    assert [(x["logger"], x["event"], x["key_id"], x["client_ip"]) for x in auth] == [
        ("hindsight.audit.auth", "auth_failed", "abc", "127.0.0.1")
    ]
    written = json.loads((tmp_path / "logs" / "audit-outcomes.log").read_text())
    assert (written["event"], written["created"]) == ("outcomes_written", 2)


def test_a_dictconfig_file_replaces_the_default_handlers(tmp_path: Path) -> None:
    target = tmp_path / "all-audit.jsonl"
    config = {
        "formatters": {"json": {"()": "api.audit.JsonFormatter"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target), "formatter": "json"}},
        "loggers": {
            "hindsight.audit.auth": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "hindsight.audit.outcomes": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }
    config_file = tmp_path / "logging.json"
    config_file.write_text(json.dumps(config))
    configure_audit(tmp_path / "logs", config_file=config_file)
    audit(auth_log, "auth_failed", key_id=None)
    audit(outcomes_log, "outcomes_written", key_id="k")
    close_audit()
    events = [json.loads(line)["event"] for line in target.read_text().splitlines()]
    assert events == ["auth_failed", "outcomes_written"]
    assert not (tmp_path / "logs").exists()


def test_a_broken_logging_config_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "logging.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot apply logging config"):
        configure_audit(tmp_path / "logs", config_file=bad)
