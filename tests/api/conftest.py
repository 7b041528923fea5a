"""Fixtures for end-to-end API tests: a real server process on a loopback port, and API keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from storage.keys import KeyStore
from storage.layout import Layout

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_key(root: Path, *scopes: str, name: str = "test") -> str:
    """A new API key's token with `scopes` under `root`."""
    store = KeyStore(Layout(root).keys_db)
    try:
        return store.create(name, list(scopes)).token
    finally:
        store.close()


@dataclass
class Server:
    """A `hindsight serve` process (tests/api/server_main.py) that can be killed and restarted."""

    root: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    max_file_bytes: int | None = None  # RLIMIT_FSIZE of the server: writes past it fail with EFBIG

    @property
    def stderr_path(self) -> Path:
        return self.root.parent / "server-stderr.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, **env: str) -> None:
        base = {k: v for k, v in os.environ.items() if k != "HINDSIGHT_CRASH_AT"}
        full_env = {**base, **self.env, **env, "PYTHONPATH": str(REPO)}
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tests.api.server_main",
            "--root",
            str(self.root),
            "--port",
            str(self.port),
        ]
        with self.stderr_path.open("ab") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=self._limits if self.max_file_bytes is not None else None,
            )
        if wait:
            self.wait_healthy()

    def _limits(self) -> None:
        import resource

        assert self.max_file_bytes is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.stderr_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: graceful shutdown (final flush)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Keys:
    write: str
    read: str
    admin: str
    all: str


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    root = tmp_path / "root"
    return Keys(
        write=make_key(root, "outcomes:write", name="writer"),
        read=make_key(root, "read", name="reader"),
        admin=make_key(root, "admin", name="admin"),
        all=make_key(root, "outcomes:write", "read", "admin", name="all"),
    )


@pytest.fixture
def server(tmp_path: Path, keys: Keys) -> Iterator[Server]:
    srv = Server(tmp_path / "root", env={"HINDSIGHT_API__FLUSH_INTERVAL": "0.2"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(srv: Server, token: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/outcomes", json=body, headers=bearer(token), timeout=30, **kwargs)  # type: ignore[arg-type]


def outcome_rows(
    root: Path, sql: str = "SELECT outcome_id FROM outcomes ORDER BY outcome_id"
) -> list[tuple[object, ...]]:
    import storage

    con = storage.connect(root)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def wait_for_rows(root: Path, count: int, timeout: float = 15.0) -> list[tuple[object, ...]]:
    """Rows of the outcomes view once at least `count` are there (the flusher runs every 0.2 s here)."""
    deadline = time.monotonic() + timeout
    rows = outcome_rows(root)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = outcome_rows(root)
    return rows
