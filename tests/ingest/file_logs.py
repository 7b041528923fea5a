"""Helpers of the file-ingestion tests: numbered query lines, what the tables hold, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage import connect
from tests.ingest.lines import make_query_line

REPO = Path(__file__).resolve().parents[2]


def qline(i: int, envelope: str = "A") -> bytes:
    """A complete prediction-query line whose context carries the unique id `T-<i>`."""
    return make_query_line(envelope, context={"transaction_id": f"T-{i}"}, newline="\n")  # type: ignore[arg-type]


def ids_in(root: Path) -> list[str]:
    """The transaction ids of every row of the predictions table, sorted, duplicates kept."""
    con = connect(root)
    try:
        rows = con.execute("SELECT context FROM predictions").fetchall()
    finally:
        con.close()
    return sorted(json.loads(c)["transaction_id"] for (c,) in rows)


def expected(numbers: range | list[int]) -> list[str]:
    return sorted(f"T-{i}" for i in numbers)


def quarantine_rows(root: Path) -> list[tuple[str, int, str, int]]:
    """(source file name, position, reason, raw_bytes) of every quarantined line, sorted."""
    con = connect(root)
    try:
        rows = con.execute("SELECT source, source_position, reason, raw_bytes FROM quarantine").fetchall()
    finally:
        con.close()
    return sorted((Path(s).name, p, r, n) for s, p, r, n in rows)


def run_cli(
    root: Path | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m service --root ROOT ARGS...` in a subprocess, as a user would run it (root None: no
    `--root` and no HINDSIGHT_ROOT)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HINDSIGHT_ROOT", None)
    given = [] if root is None else ["--root", str(root)]
    return subprocess.run(
        [sys.executable, "-m", "service", *given, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
