"""The `hindsight keys ...` and `hindsight outcomes import` commands, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import storage
from service.cli import app
from service.errors import InputError
from storage.keys import KeyStore
from tests.ingest.file_logs import run_cli


def run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--root", str(root), *args])
    return result.exit_code, result.stdout


def test_keys_create_prints_only_the_token_then_list_and_revoke(tmp_path: Path) -> None:
    code, out = run(
        tmp_path, "keys", "create", "--name", "crm", "--scope", "outcomes:write", "--scope", "read"
    )
    assert code == 0
    token = out.strip()
    assert token.startswith("hsk_") and "\n" not in token
    store = KeyStore(tmp_path / "state" / "keys.sqlite")
    key = store.authenticate(token)
    store.close()
    code, listing = run(tmp_path, "keys", "list", "--format", "csv")
    assert code == 0
    assert listing.splitlines()[0] == "id,name,scopes,created,revoked"
    assert listing.splitlines()[1].startswith(f"{key.id},crm,outcomes:write read,")
    assert token[len("hsk_") + 13 :] not in listing
    code, _ = run(tmp_path, "keys", "revoke", key.id)
    assert code == 0
    code, listing = run(tmp_path, "keys", "list", "--format", "json")
    assert '"revoked": ""' not in listing and key.id in listing
    admin_log = (tmp_path / "logs" / "audit-admin.log").read_text()
    assert admin_log.count(key.id) == 2 and token not in admin_log


def test_keys_list_and_revoke_on_a_root_without_keys_create_nothing(tmp_path: Path) -> None:
    # a mistyped --root used to leave an empty key store behind
    result = CliRunner().invoke(app, ["--root", str(tmp_path / "typo"), "keys", "list", "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout == "id,name,scopes,created,revoked\n"
    assert "no key store at" in result.stderr
    result = CliRunner().invoke(app, ["--root", str(tmp_path / "typo"), "keys", "revoke", "abc"])
    assert result.exit_code == 1
    assert "there is no key store at" in str(result.exception)
    assert not (tmp_path / "typo").exists()


def test_keys_create_refuses_unknown_scopes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--root", str(tmp_path), "keys", "create", "--name", "x", "--scope", "root"]
    )
    assert result.exit_code != 0
    assert "unknown scope" in str(result.exception)


def test_outcomes_import_summarises_and_flushes(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"outcome_id": "a", "record_id": "r1", "value": 1}\n'
        '{"outcome_id": "b", "record_id": "r2", "value": 0}\n'
    )
    code, out = run(tmp_path / "root", "outcomes", "import", str(path), "--format", "csv")
    assert code == 0
    assert out.splitlines() == ["file,format,created,duplicate,flushed", f"{path},jsonl,2,0,2"]
    again = CliRunner().invoke(app, ["--root", str(tmp_path / "root"), "outcomes", "import", str(path)])
    assert "jsonl" in again.stdout and "stored 0 new outcome(s) (2 already stored)" not in again.stdout
    assert "stored 0 new outcome(s) (2 already stored) in the intake log" in again.stderr
    code, out = run(tmp_path / "root", "outcomes", "import", str(path), "--format", "csv")
    assert out.splitlines()[1] == f"{path},jsonl,0,2,0"
    con = storage.connect(tmp_path / "root")
    assert con.execute("SELECT outcome_id FROM outcomes ORDER BY 1").fetchall() == [("a",), ("b",)]


def test_hindsight_serve_runs_the_api(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.api.conftest import REPO, free_port, make_key

    token = make_key(tmp_path, "read")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HINDSIGHT_CRASH_AT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--root", str(tmp_path), "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(
                    f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {token}"}
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready is not None and ready.status_code == 200
        assert ready.json()["ready"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown


def _broken_logs(root: Path) -> None:
    """A logs_dir the audit log cannot be created in (a file stands where the folder would be)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "not-a-folder").write_text("x")
    (root / "hindsight.toml").write_text(f'[api]\nlogs_dir = "{root / "not-a-folder" / "logs"}"\n')


def test_a_broken_audit_log_stops_an_import_before_it_stores_anything(tmp_path: Path) -> None:
    # the audit log was set up after the import: the command failed with the outcomes already stored,
    # and a rerun stored those without an outcome_id twice (review finding)
    root = tmp_path / "root"
    _broken_logs(root)
    path = tmp_path / "labels.jsonl"
    path.write_text('{"record_id": "r1", "value": 1}\n')
    result = run_cli(root, "outcomes", "import", str(path))
    assert result.returncode == 2 and "audit log" in result.stderr
    assert not (root / "state" / "outcomes-intake.sqlite").exists()
    assert not (root / "tables" / "outcomes").exists()


def test_a_broken_audit_log_stops_key_creation_before_the_key_exists(tmp_path: Path) -> None:
    # the key was created, then the command failed without printing its secret: a live key nobody has
    root = tmp_path / "root"
    _broken_logs(root)
    result = run_cli(root, "keys", "create", "--name", "ci", "--scope", "admin")
    assert result.returncode == 2 and result.stdout == ""
    store = KeyStore(root / "state" / "keys.sqlite")
    try:
        assert store.list() == []
    finally:
        store.close()


@pytest.mark.parametrize("name", ["x" * 201, "two\nlines", "tab\there"])
def test_a_key_name_is_short_and_printable(tmp_path: Path, name: str) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    try:
        with pytest.raises(InputError, match="at most 200 printable characters"):
            store.create(name, ["read"])
        assert store.list() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("blocked", "message"),
    [
        ("state", "error: cannot open key store"),  # a file where the key store's folder should be
        ("logs", "error: cannot create the audit log folder"),
    ],
)
def test_serve_on_a_root_it_cannot_write_is_one_error_line(
    tmp_path: Path, blocked: str, message: str
) -> None:
    from tests.ingest.file_logs import run_cli

    (tmp_path / blocked).write_text("not a folder")
    result = run_cli(tmp_path, "serve", "--port", "0", timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr
