"""Command-line options that several commands share, declared once (`eval` and `export` read labels)."""

from __future__ import annotations

from typing import Annotated

import typer

AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Labels as known at this time (ISO 8601; default now).")
]
DayFromOption = Annotated[str | None, typer.Option("--from", help="First prediction day (YYYY-MM-DD).")]
DayToOption = Annotated[str | None, typer.Option("--to", help="Last prediction day (YYYY-MM-DD), included.")]
