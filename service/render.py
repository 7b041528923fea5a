"""Output for people and machines: tables on a terminal, CSV and JSON for scripts."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


class OutputFormat(enum.StrEnum):
    """How a command prints its result."""

    table = "table"
    csv = "csv"
    json = "json"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def to_json(value: Any) -> str:
    """JSON text for any result value (dates as ISO 8601, durations in seconds)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _cell(value: Any, *, rounded: bool) -> str:
    """One value as text: floats in full for CSV, to 6 significant digits on a table."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return to_json(value)
    if isinstance(value, float):
        # float's repr: the shortest text that reads back as the same double (numpy floats print alike)
        return f"{value:.6g}" if rounded else float.__repr__(value)
    return str(value)


def render_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: OutputFormat,
    *,
    title: str | None = None,
) -> str:
    """Render a result set as a rich table, CSV (with header) or a JSON array of objects.

    CSV and JSON carry every float in full; only the table rounds to 6 significant digits, for reading.
    """
    if fmt is OutputFormat.json:
        return to_json([dict(zip(columns, row, strict=True)) for row in rows])
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v, rounded=False) for v in row])
        return buf.getvalue().rstrip("\n")
    table = Table(title=title)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(v, rounded=True) for v in row])
    # On a terminal, fit its width; in a pipe or file, let wide tables stay readable.
    width = Console().width if is_terminal() else 160
    console = Console(file=io.StringIO(), width=max(80, width), force_terminal=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out).rstrip("\n")


def is_terminal() -> bool:
    """True when stderr is a terminal: progress bars go there only then."""
    return sys.stderr.isatty()
