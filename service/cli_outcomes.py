"""`hindsight outcomes import FILE`: load outcomes from CSV, JSONL or Parquet through the intake log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.render import OutputFormat, render_rows

outcomes_app = typer.Typer(help="Record outcomes (what finally happened) in bulk.", no_args_is_help=True)


@outcomes_app.command("import")
def import_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file of outcomes.")],
    input_format: Annotated[
        str | None,
        typer.Option("--input-format", help="csv, jsonl or parquet (default: from the extension)."),
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """Validate a whole file, store it like POST /v1/outcomes would, flush it to Delta and summarise.

    Example: hindsight --root ./data outcomes import labels.csv
    """
    from api.audit import audit, outcomes_log
    from service.cli import audit_log, state_of
    from storage.outcome_import import import_outcomes

    settings = state_of(ctx).settings()

    def stored(created: int, duplicate: int) -> None:
        # audited and said once durable, before the flush: a Ctrl-C or a failure while it waits or writes
        # leaves the outcomes stored (the server's flusher or the next import moves them to Delta)
        audit(
            outcomes_log,
            "outcomes_imported",
            key_id=None,
            path=str(path),
            created=created,
            duplicate=duplicate,
        )
        typer.echo(
            f"stored {created} new outcome(s) ({duplicate} already stored) in the intake log; "
            "moving them to Delta",
            err=True,
        )

    with audit_log(settings):
        report = import_outcomes(settings.root, path, fmt=input_format, stored=stored)
    columns = ["file", "format", "created", "duplicate", "flushed"]
    row = [str(report.path), report.file_format, report.created, report.duplicate, report.flushed]
    typer.echo(render_rows(columns, [row], fmt))


def register(app: typer.Typer) -> None:
    """Attach the `outcomes` group to the main CLI."""
    app.add_typer(outcomes_app, name="outcomes")
