"""`hindsight ingest ...`: the command group that reads prediction query logs into the tables."""

from __future__ import annotations

import typer

ingest_app = typer.Typer(help="Read prediction query logs into the predictions table.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the `ingest` group to the main CLI."""
    app.add_typer(ingest_app, name="ingest")
