"""`hindsight demo`: sample logs and outcomes in; records per day, label coverage and metrics out."""

from __future__ import annotations

from typing import Annotated

import typer

from service.render import OutputFormat, render_rows


def demo_command(
    ctx: typer.Context,
    root: Annotated[
        str | None, typer.Option("--root", help="Data folder for the demo (default: the global --root).")
    ] = None,
) -> None:
    """Generate a week of sample DSS query logs and their outcomes, ingest both, and evaluate the models.

    Safe to run again: the sample folder is kept and nothing is ingested or recorded twice.

    Example: hindsight demo --root ./demo-data
    """
    from service.cli import root_path, state_of
    from service.demo import run_demo

    chosen = root_path(root, "--root") or state_of(ctx).settings().root
    report = run_demo(chosen)
    if report.generated is not None:
        g = report.generated
        typer.echo(
            f"generated {g.lines} log lines ({g.records} records, {g.bad_lines} bad lines, "
            f"{g.other_topic_lines} other audit topics) in {len(g.files)} files under {report.logs}"
        )
    else:
        typer.echo(f"sample logs already under {report.logs}")
    typer.echo(f"ingested: {report.ingest.line()}")
    typer.echo("")
    typer.echo(
        render_rows(report.per_day.columns, report.per_day.rows, OutputFormat.table, title="records per day")
    )
    typer.echo("")
    typer.echo(f'sample query (hindsight --root {chosen} sql "..."):\n{report.sample_sql}')
    typer.echo(render_rows(report.sample.columns, report.sample.rows, OutputFormat.table))
    o = report.outcomes
    typer.echo("")
    typer.echo(f"outcomes: {o.created} recorded, {o.duplicate} already known, from {o.path}")
    typer.echo(render_rows(report.coverage.columns, report.coverage.rows, OutputFormat.table, title="labels"))
    typer.echo("")
    typer.echo(f"metrics by model generation (hindsight --root {chosen} eval --by generation):")
    typer.echo(render_rows(report.metrics.columns, report.metrics.rows, OutputFormat.table))


def register(app: typer.Typer) -> None:
    """Attach the `demo` command to the main CLI."""
    app.command("demo")(demo_command)
