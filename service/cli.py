"""The `hindsight` command line: global options, error handling, and the `sql` command.

Commands stay thin: parse, call one library function, render. Command groups live in their own
modules (`service/cli_*.py`) and are attached in `_attach_commands()`.
"""

from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from service.errors import ConfigError, HindsightError, QueryError
from service.render import OutputFormat, render_rows, to_json
from service.settings import Settings, SettingsLoadError, load_settings

app = typer.Typer(
    name="hindsight",
    help="Join logged ML prediction queries with what finally happened.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class CliState:
    """What the global options say, passed to every command through the Typer context."""

    root: Path | None
    config: Path | None
    debug: bool

    def settings(self, **overrides: Any) -> Settings:
        """Settings with the command's flags on top (None values mean 'not given')."""
        try:
            return load_settings(root=self.root, config=self.config, overrides=_drop_none(overrides))
        except SettingsLoadError as exc:
            raise ConfigError(exc.message, details=exc.details) from exc


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            inner = _drop_none(value)
            if inner:
                cleaned[key] = inner
        elif value is not None:
            cleaned[key] = value
    return cleaned


RootOption = Annotated[
    Path | None,
    typer.Option("--root", envvar="HINDSIGHT_ROOT", help="Data folder (default ./hindsight-data)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default <root>/hindsight.toml if present)."),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]


@app.callback()
def _global(
    ctx: typer.Context,
    root: RootOption = None,
    config: ConfigOption = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Join logged ML prediction queries with what finally happened.

    Example: hindsight --root ./data ingest files /opt/dss/run/api-queries
    """
    ctx.obj = CliState(root=root, config=config, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def state_of(ctx: typer.Context) -> CliState:
    """The global options of the running command."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="SQL over the views (predictions, quarantine, ...).")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Run one SQL query over the views and print the result.

    Example: hindsight sql "SELECT day, count(*) FROM predictions GROUP BY day ORDER BY day"
    """
    from storage import connect
    from storage.policies import policies_from_config
    from storage.views import DUCKDB_FAILURES

    settings = state_of(ctx).settings()
    con = connect(settings.root, policies=policies_from_config([p.model_dump() for p in settings.policies]))
    try:
        result = con.execute(query)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall()
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"query failed: {exc}") from exc
    finally:
        con.close()
    typer.echo(render_rows(columns, rows, fmt))


def _attach_commands() -> None:
    """Attach the command groups defined in their own modules."""
    import importlib

    for module_name in (
        "service.cli_ingest",
        "service.cli_kafka",
        "service.cli_outcomes",
        "service.cli_keys",
        "service.cli_serve",
        "service.cli_eval",
        "service.cli_demo",
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)


_attach_commands()


def main() -> None:
    """Run the CLI; a HindsightError becomes one line on stderr and a non-zero exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (surrogate escapes in Python) must print, not end the command.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    debug = "--debug" in sys.argv
    fmt_json = "--format" in sys.argv and "json" in sys.argv
    try:
        app(standalone_mode=False)
    except HindsightError as exc:
        if debug:
            raise
        if fmt_json:
            typer.echo(to_json(exc.to_dict()), err=True)
        else:
            typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
