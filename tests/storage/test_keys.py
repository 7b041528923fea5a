"""API keys: hashed at rest, shown once, revocable, scopes checked."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service.errors import AuthError, InputError, NotFound
from storage.keys import KeyStore


def test_create_authenticate_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    created = store.create("crm", ["read", "outcomes:write"])
    assert store.authenticate(created.token) == created.key
    assert created.key.scopes == ("outcomes:write", "read")
    assert [k.id for k in store.list()] == [created.key.id]
    revoked = store.revoke(created.key.id)
    assert revoked.revoked
    with pytest.raises(AuthError, match="revoked") as caught:
        store.authenticate(created.token)
    assert caught.value.details == {"key_id": created.key.id}
    store.close()


def test_only_a_hash_is_stored(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    token = store.create("x", ["read"]).token
    store.close()
    raw = (tmp_path / "keys.sqlite").read_bytes() + b"".join(
        row[0] if isinstance(row[0], bytes) else str(row[0]).encode()
        for row in sqlite3.connect(tmp_path / "keys.sqlite").execute("SELECT * FROM api_keys").fetchall()
    )
    assert token.split("_", 2)[2].encode() not in raw


@pytest.mark.parametrize("token", ["", "nope", "hsk_zzzzzzzzzzzz_x", "hsk_000000000000_secret"])
def test_unknown_or_malformed_tokens_are_refused(tmp_path: Path, token: str) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    real = store.create("x", ["read"])
    with pytest.raises(AuthError, match="invalid API key"):
        store.authenticate(token)
    with pytest.raises(AuthError, match="invalid API key"):
        store.authenticate(real.token[:-1] + ("a" if real.token[-1] != "a" else "b"))
    store.close()


def test_bad_scopes_names_and_ids(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    with pytest.raises(InputError, match="unknown scope"):
        store.create("x", ["root"])
    with pytest.raises(InputError, match="at least one scope"):
        store.create("x", [])
    with pytest.raises(InputError, match="non-empty name"):
        store.create(" ", ["read"])
    with pytest.raises(NotFound):
        store.revoke("000000000000")
    store.close()


def test_a_revocation_by_another_process_is_seen(tmp_path: Path) -> None:
    import time

    from storage.keys import CHECK_INTERVAL

    server_side = KeyStore(tmp_path / "keys.sqlite")
    created = server_side.create("x", ["read"])
    assert server_side.authenticate(created.token) == created.key  # now cached
    cli_side = KeyStore(tmp_path / "keys.sqlite")
    cli_side.revoke(created.key.id)
    cli_side.close()
    time.sleep(CHECK_INTERVAL + 0.05)  # the documented bound on seeing another process's change
    with pytest.raises(AuthError, match="revoked"):
        server_side.authenticate(created.token)
    server_side.close()


def test_a_revocation_by_another_process_is_seen_whatever_the_files_look_like(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store used to compare the files' size and mtime, which change before a commit is visible to
    # readers: a check in between cached the old row for good. What it looks at now is SQLite's own
    # commit counter, so files that look unchanged (here: every stat the same) must not hide a revocation.
    import os
    import time

    from storage.keys import CHECK_INTERVAL

    real_stat = os.stat
    frozen = real_stat(tmp_path)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return (
            frozen
            if str(path).startswith(str(tmp_path / "keys.sqlite"))
            else real_stat(path, *args, **kwargs)
        )

    server_side = KeyStore(tmp_path / "keys.sqlite")
    created = server_side.create("x", ["read"])
    monkeypatch.setattr(os, "stat", stat)
    assert server_side.authenticate(created.token) == created.key
    time.sleep(CHECK_INTERVAL + 0.05)
    assert server_side.authenticate(created.token) == created.key  # checked once more, now cached
    cli_side = KeyStore(tmp_path / "keys.sqlite")
    cli_side.revoke(created.key.id)
    cli_side.close()
    time.sleep(CHECK_INTERVAL + 0.05)
    with pytest.raises(AuthError, match="revoked"):
        server_side.authenticate(created.token)
    server_side.close()


def test_a_row_read_before_a_revocation_is_not_cached_after_another_request_saw_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # request A reads the row, the CLI revokes, request B's check clears the cache and notes the new
    # version, then A cached its stale row: the version never changed again, the key worked for good
    server = KeyStore(tmp_path / "keys.sqlite")
    victim = server.create("victim", ["read"])
    other = server.create("other", ["read"])
    original = server._authenticate_stored
    interleaved: list[bool] = []

    def read_then_interleave(key_id: str, token: str):  # type: ignore[no-untyped-def]
        result = original(key_id, token)
        if key_id == victim.key.id and not interleaved:
            interleaved.append(True)
            cli = KeyStore(tmp_path / "keys.sqlite")
            cli.revoke(victim.key.id)
            cli.close()
            server._next_check = 0.0  # request B arrives and checks
            server.authenticate(other.token)
        return result

    monkeypatch.setattr(server, "_authenticate_stored", read_then_interleave)
    assert server.authenticate(victim.token) == victim.key  # A: read before the revocation
    with pytest.raises(AuthError, match="revoked"):
        server.authenticate(victim.token)
    server.close()
