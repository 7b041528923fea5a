"""`hindsight compact`: merge the tables' small files per day, and on request vacuum unneeded old files."""

from __future__ import annotations

from typing import Annotated

import typer

from service.errors import InputError

TABLE_NAMES = ("predictions", "quarantine", "outcomes")


def compact_command(
    ctx: typer.Context,
    min_files: Annotated[
        int, typer.Option("--min-files", help="Compact a day once it has this many small files.", min=2)
    ] = 32,
    vacuum_older_than: Annotated[
        str | None,
        typer.Option(
            "--vacuum-older-than",
            help="Also delete files no version younger than this needs (e.g. 7d); older versions, and "
            "export manifests naming them, can no longer be read.",
        ),
    ] = None,
) -> None:
    """Merge each day's small Parquet files of every table into few (every version stays readable).

    The API's flusher, `ingest files --follow` and `ingest kafka` already do this every 10 minutes for
    the tables they write; run it after bulk loads, or from cron with --vacuum-older-than.

    Example: hindsight compact --vacuum-older-than 7d
    """
    from service.cli import state_of
    from storage.compact import check_vacuum_retention, compact_table, vacuum_table
    from storage.layout import Layout
    from storage.policies import parse_duration

    settings = state_of(ctx).settings()
    retention = (
        None
        if vacuum_older_than is None
        else parse_duration(vacuum_older_than, field="--vacuum-older-than", where="compact")
    )
    if not Layout(settings.root).tables.is_dir():
        # a mistyped --root used to get lock files created and "0 files merged" reported
        raise InputError(f"no tables under {settings.root} (is --root right?)")
    layout = Layout(settings.root)
    if retention is not None:  # refused before anything is compacted
        for name in TABLE_NAMES:
            check_vacuum_retention(layout.table(name), retention)
    for name in TABLE_NAMES:
        report = compact_table(layout.table(name), layout.lock_file(name), min_files=min_files)
        days = len(report.days)
        line = f"{name}: {report.files_removed} files merged into {report.files_added} over {days} day(s)"
        if retention is not None:
            removed = vacuum_table(layout.table(name), layout.lock_file(name), older_than=retention)
            line += f"; {len(removed)} unneeded files deleted"
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Attach `hindsight compact` to the main CLI."""
    app.command("compact")(compact_command)
