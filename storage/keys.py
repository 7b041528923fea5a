"""API keys: created with a random secret, stored hashed in `<root>/state/keys.sqlite`, checked per request.

A key reads `hsk_<id>_<secret>`: the id (public, 12 hex digits) finds the row and names the key in
logs; the secret is 32 random bytes (256 bits) and only its SHA-256 is stored. A fast unsalted hash
is enough because the secret is uniformly random and long: brute force over 2^256 is hopeless, and
salts and slow hashes (bcrypt, argon2) exist for low-entropy passwords; a slow hash would instead
cost tens of milliseconds on every request.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import AuthError, InputError, NotFound, StorageError
from storage.layout import writable_hint

SCOPES = ("outcomes:write", "read", "admin")
"""Every scope a key can hold: write outcomes, read outcomes/predictions/metrics, manage keys."""

PREFIX = "hsk_"
CHECK_INTERVAL = 0.5
"""Seconds between checks of the key files for changes made by another process."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time its full text (`token`) exists outside the client."""

    key: ApiKey
    token: str


def key_id_of(token: str) -> str | None:
    """The id part of a presented token, or None when it does not look like one of our keys."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 12 or not secret or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


_TOKEN = re.compile(re.escape(PREFIX) + r"([0-9a-f]{12})_[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """`text` with the secret part of every API key in it replaced: for paths and messages that are logged."""
    return _TOKEN.sub(lambda m: f"{PREFIX}{m.group(1)}_<redacted>", text)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _validate_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InputError(f"unknown scope(s) {unknown}; use {list(SCOPES)}", details={"scopes": unknown})
    if not scopes:
        raise InputError(f"give at least one scope: {list(SCOPES)}", details={"scopes": []})
    return tuple(s for s in SCOPES if s in scopes)


MAX_NAME = 200
"""The longest key name, on the command line and in the API (`KeyCreate`)."""


class KeyStore:
    """The API keys of one root (thread-safe: one connection behind a lock).

    `authenticate` keeps verified keys in memory while no other connection has committed a change.
    Changes made through this store (the admin API) apply at once; a commit by another process (a
    revocation on the command line) changes this connection's `PRAGMA data_version`, which is read
    at most every CHECK_INTERVAL. A SQLite lookup per request cost a third of a millisecond under load.

    `data_version`, not the files' size and mtime: SQLite writes a commit's pages to the WAL before it
    syncs them and publishes them in the shared index, so a check that fell between the two saw new
    metadata, re-read the old row and then never looked again (review finding: a key revoked on the
    command line kept working until the next change, in 2 of 100 revocations).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[bytes, ApiKey]] = {}
        self._data_version = -1
        self._next_check = 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open key store {path}: {exc}{writable_hint(path)}") from exc

    def close(self) -> None:
        self._con.close()

    def create(self, name: str, scopes: Sequence[str]) -> NewKey:
        """Create a key; its token is returned once and never stored."""
        if not name.strip():
            raise InputError("a key needs a non-empty name", details={"name": name})
        # the API's limit (KeyCreate) holds on the command line too; a newline split the row of `keys list`
        if len(name) > MAX_NAME or not name.isprintable():
            raise InputError(
                f"a key name is at most {MAX_NAME} printable characters (no control characters)",
                details={"name": name},
            )
        chosen = _validate_scopes(scopes)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, chosen, _now(), None)
        self._execute(
            "INSERT INTO api_keys (id, name, scopes, secret_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, name, " ".join(chosen), _digest(secret), key.created_at),
        )
        return NewKey(key, f"{PREFIX}{key_id}_{secret}")

    def list(self) -> builtins.list[ApiKey]:
        rows = self._fetch(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, id"
        )
        return [ApiKey(r[0], r[1], tuple(r[2].split()), r[3], r[4]) for r in rows]

    def get(self, key_id: str) -> ApiKey:
        """The key with this id; a whole key (token) stands for its id and is never echoed back."""
        key_id = key_id_of(key_id) or key_id
        rows = self._fetch(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE id = ?", (key_id,)
        )
        if not rows:
            shown = redact(key_id)
            raise NotFound(f"no API key with id {shown!r}", details={"id": shown})
        r = rows[0]
        return ApiKey(r[0], r[1], tuple(r[2].split()), r[3], r[4])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent); it is refused from the next request on.

        A whole key pasted instead of its id (what one has in hand when a key leaked) revokes that key:
        it used to be a 404 that wrote the secret into the response and the call log (review finding)."""
        key = self.get(key_id)
        key_id = key.id
        if key.revoked_at is None:
            self._execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_now(), key_id)
            )
        self._cache.pop(key_id, None)  # refused from the next request on, in this process at once
        return self.get(key_id)

    def authenticate(self, token: str) -> ApiKey:
        """The key a token belongs to; AuthError (with the key id when known) if unknown, wrong or revoked."""
        key_id = key_id_of(token)
        if key_id is None:
            raise AuthError("invalid API key", details={"key_id": None})
        now = time.monotonic()
        if now >= self._next_check:  # other processes' changes (CLI revoke) show within CHECK_INTERVAL
            self._next_check = now + CHECK_INTERVAL
            version = self._fetch("PRAGMA data_version")[0][0]
            if version != self._data_version:
                self._cache.clear()
                self._data_version = version
        cached = self._cache.get(key_id)
        if cached is not None and hmac.compare_digest(cached[0], _digest(token[len(PREFIX) + 13 :])):
            return cached[1]
        read_at, key = self._authenticate_stored(key_id, token)
        # cached only if no commit was seen since the row was read: a check by a concurrent request may
        # have cleared the cache in between, and a row read before a revocation cached after that check
        # stayed cached for good (review finding)
        if read_at == self._data_version:
            self._cache[key_id] = (_digest(token[len(PREFIX) + 13 :]), key)
        return key

    def _authenticate_stored(self, key_id: str, token: str) -> tuple[int, ApiKey]:
        """The store's data_version read before the row, and the key the row says the token is."""
        with self._lock:
            try:
                read_at = self._con.execute("PRAGMA data_version").fetchone()[0]
                rows = self._con.execute(
                    "SELECT id, name, scopes, created_at, revoked_at, secret_sha256 FROM api_keys "
                    "WHERE id = ?",
                    (key_id,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read key store {self.path}: {exc}") from exc
        secret = token[len(PREFIX) + len(key_id) + 1 :]
        # compare_digest even on a miss, so timing does not tell whether the id exists
        stored = rows[0][5] if rows else b"\0" * 32
        if not hmac.compare_digest(stored, _digest(secret)) or not rows:
            raise AuthError("invalid API key", details={"key_id": key_id})
        r = rows[0]
        if r[4] is not None:
            raise AuthError("API key revoked", details={"key_id": key_id})
        return read_at, ApiKey(r[0], r[1], tuple(r[2].split()), r[3], r[4])

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._con.execute(sql, params)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write key store {self.path}: {exc}") from exc

    def _fetch(self, sql: str, params: tuple[object, ...] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read key store {self.path}: {exc}") from exc
