"""`hindsight ingest ...`: the command group that reads prediction query logs into the tables."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from service.errors import InputError, SourceError
from service.render import is_terminal, to_json

ingest_app = typer.Typer(help="Read prediction query logs into the predictions table.", no_args_is_help=True)

log = logging.getLogger(__name__)


class SummaryFormat(StrEnum):
    """How the end-of-run summary is printed."""

    table = "table"
    json = "json"


class _ProgressBar:
    """Byte progress of one scan as a rich bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, total_bytes: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("ingesting", total=max(total_bytes, 1))

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)


@ingest_app.command("files")
def files_command(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="Log files or folders (searched recursively for *.log*).")
    ],
    source_tz: Annotated[
        str | None, typer.Option("--source-tz", help="IANA zone of envelope-A timestamps (default UTC).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep scanning until SIGINT/SIGTERM (then exit 0).")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between scans with --follow (default 5).", min=0.001),
    ] = None,
    fmt: Annotated[SummaryFormat, typer.Option("--format", help="Summary format.")] = SummaryFormat.table,
) -> None:
    """Read DSS query log files into the predictions table, each complete line exactly once.

    Folders are searched for *.log, *.log.N, *.log.YYYY-MM-DD and their .gz forms; rotated files
    are read oldest first. Files are recognised by content, so renaming, gzipping or moving them
    never duplicates or skips a record. Bad lines go to the quarantine table (exit code 0).

    Example: hindsight ingest files /opt/dss/run/api-queries /opt/dss/run/audit --source-tz Europe/Paris
    """
    from ingest.file_ingest import FileIngestor
    from ingest.summary import IngestSummary
    from service.cli import state_of
    from service.scheduler import run_every, stop_on_signals
    from storage.compact import Compactor

    if interval is not None and not follow:
        raise InputError("--interval sets the time between scans of --follow; give --follow too")
    settings = state_of(ctx).settings(ingest={"source_tz": source_tz, "follow_interval": interval})
    ingest = settings.ingest
    # checked once, before anything is created under the root: --follow retried a mistyped path every
    # interval forever (review finding); a folder that goes away later is retried, as during a redeploy
    for given in paths:
        if not given.exists():
            raise InputError(f"no such file or folder: {given}")  # bad input: exit code 2
    ingestor = FileIngestor(
        settings.root,
        source_tz=ingest.source_tz,
        max_line_bytes=ingest.max_line_bytes,
        batch_bytes=ingest.batch_bytes,
        parse_threads=ingest.parse_threads,
    )
    total = IngestSummary()
    with _ProgressContext() as bar:
        if not follow:
            total = ingestor.run(paths, progress=bar)
        else:
            # each scan that finds lines is a commit with small files of its own: merged now and then
            compactors = [Compactor.of(settings.root, n) for n in ("predictions", "quarantine")]
            with stop_on_signals() as stop:

                def scan() -> None:
                    try:
                        summary = ingestor.run(paths, progress=bar, should_stop=stop.is_set)
                    except SourceError as exc:
                        # a log folder moved away for a moment (a redeploy) ended the follower
                        log.warning(
                            "scan failed: %s; trying again in %s s", exc.message, ingest.follow_interval
                        )
                        return
                    if summary.records or summary.quarantined or summary.lost_bytes:
                        log.info("scan: %s", summary.line())
                    total.add(summary)
                    for compactor in compactors:
                        compactor.maybe()

                run_every(ingest.follow_interval, scan, stop)
    typer.echo(to_json(total.to_dict()) if fmt is SummaryFormat.json else total.line())


class _ProgressContext:
    """A progress bar on a terminal, nothing otherwise (context manager)."""

    def __init__(self) -> None:
        self._rich: Progress | None = None

    def __enter__(self) -> _ProgressBar | None:
        if not is_terminal():
            return None
        self._rich = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._rich.start()
        return _ProgressBar(self._rich)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()


def register(app: typer.Typer) -> None:
    """Attach the `ingest` group to the main CLI."""
    app.add_typer(ingest_app, name="ingest")
