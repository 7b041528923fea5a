"""The `hindsight` command line: global options, error handling, and the `sql` command.

Commands stay thin: parse, call one library function, render. Command groups live in their own
modules (`service/cli_*.py`) and are attached in `_attach_commands()`.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from service.errors import ConfigError, HindsightError, InputError, QueryError
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
            settings = load_settings(root=self.root, config=self.config, overrides=_drop_none(overrides))
        except SettingsLoadError as exc:
            raise ConfigError(exc.message, details=exc.details) from exc
        if not self.debug:  # --debug shows everything; otherwise the setting decides, for every command
            logging.getLogger().setLevel(settings.log_level)
        return settings


@contextmanager
def audit_log(settings: Settings) -> Iterator[None]:
    """The audit log (api.audit), set up BEFORE a command changes anything and closed after it.

    `outcomes import` and `keys create|revoke` set it up after acting: a broken logs_dir or
    logging_config failed the command with the outcomes stored (a rerun stored those without an
    outcome_id twice) or with a live key whose secret was never shown (review finding)."""
    from api.audit import close_audit, configure_audit

    configure_audit(settings.api.logs_dir or settings.root / "logs", config_file=settings.api.logging_config)
    try:
        yield
    finally:
        close_audit()


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
    str | None,
    typer.Option("--root", envvar="HINDSIGHT_ROOT", help="Data folder (default ./hindsight-data)."),
]


def root_path(text: str | None, flag: str) -> Path | None:
    """The folder given to `flag`, or None; an empty one is an InputError (it used to mean the current
    folder: an unset shell variable in HINDSIGHT_ROOT put tables/ and state/ wherever the command ran)."""
    if text is None:
        return None
    if not text.strip():
        raise InputError(f"{flag} is an empty path; give a folder")
    return Path(text)


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
    ctx.obj = CliState(root=root_path(root, "--root (or HINDSIGHT_ROOT)"), config=config, debug=debug)
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
    from storage.interrupt import run_interruptibly
    from storage.policies import policies_from_config
    from storage.views import DUCKDB_FAILURES

    _read_only(query)
    settings = state_of(ctx).settings()
    con = connect(settings.root, policies=policies_from_config([p.model_dump() for p in settings.policies]))

    def run() -> tuple[list[str], list[tuple[Any, ...]]]:
        # a query may read any file (read_csv, ...), but must not fetch extensions from the network
        con.execute("SET autoinstall_known_extensions = false")
        result = con.execute(query)
        return [d[0] for d in result.description or []], result.fetchall()

    try:
        columns, rows = run_interruptibly(run, connections=[con])
    except DUCKDB_FAILURES as exc:
        raise _query_error(exc) from exc
    finally:
        con.close()
    typer.echo(render_rows(columns, rows, fmt))


_READ_STATEMENTS = frozenset({"SELECT"})
"""What `hindsight sql` runs: SELECT, which includes WITH, FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE.
Not EXPLAIN: `EXPLAIN ANALYZE COPY ... TO ...` runs the COPY, and its inner statement is not typed."""


def _read_only(query: str) -> None:
    """An InputError unless `query` is one read-only statement. It used to run anything on a connection
    that can write files: a COPY ... TO <root>/tables/outcomes (OVERWRITE) emptied the outcomes table, and
    a COPY over state/keys.sqlite destroyed the API keys (review finding)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise _query_error(exc) from exc
    kinds = [str(s.type).rsplit(".", 1)[-1] for s in statements]
    if len(kinds) != 1 or kinds[0] not in _READ_STATEMENTS:
        raise InputError(
            "hindsight sql runs one read-only query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW or "
            f"SUMMARIZE); got {', '.join(kinds) or 'no statement'}",
            details={"statements": kinds},
        )


def _query_error(exc: BaseException) -> HindsightError:
    """One line for a failed query: an error in the query itself (syntax, unknown name) is bad input
    (InputError, exit 2), anything else a QueryError. DuckDB's message adds the query line and a caret
    below its first line; those made the error several lines long."""
    import duckdb

    from storage.views import failure_text

    message = f"query failed: {failure_text(exc).splitlines()[0]}"
    user_errors = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)
    return InputError(message) if isinstance(exc, user_errors) else QueryError(message)


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
        "service.cli_export",
        "service.cli_compact",
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


def _refuse_repeated_options(argv: list[str]) -> None:
    """An option given twice to the same command is an InputError (click keeps the last value:
    `--by day --by none` gave cohorts by none), except the options that take several values. The global
    options (before the command) and the command's own are counted apart: `hindsight --root A demo
    --root B` gives the demo its own folder, as documented."""
    start = 0  # the command's first token: after the global options and their values
    while start < len(argv) and argv[start].startswith("-"):
        start += 2 if argv[start] in _GLOBAL_VALUE_OPTIONS else 1
    repeated: list[str] = []
    for level in (argv[:start], argv[start:]):
        seen: set[str] = set()
        for token in level:
            if token == "--":
                break
            if not token.startswith("--"):
                continue
            name = token.split("=", 1)[0]
            if name in seen and name not in repeated:
                repeated.append(name)
            seen.add(name)
    repeated = [name for name in repeated if name not in _multiple_options()]
    if repeated:
        raise InputError(
            f"option(s) {repeated} given more than once; give each once", details={"repeated": repeated}
        )


_GLOBAL_VALUE_OPTIONS = frozenset({"--root", "--config"})
"""The global options that take a value (as the next token when not written --name=value)."""


def _multiple_options() -> set[str]:
    """The options of any command that may be given several times (`keys create --scope`)."""
    import typer.main

    found: set[str] = set()

    def walk(command: Any) -> None:  # typer's vendored click Command
        for param in command.params:
            if getattr(param, "multiple", False):
                found.update(param.opts)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def _wants_json(argv: list[str]) -> bool:
    """True when the command line asks for `--format json` or `--format=json`: errors are then JSON too.
    Read before parsing (a usage error has no parsed options); `--format=json` used to give plain text,
    and any argument that was just `json` (a folder, say) a JSON error."""
    formats: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token.startswith("--format="):
            formats.append(token.removeprefix("--format="))
        elif token == "--format":
            formats.extend(argv[i + 1 : i + 2])
    return bool(formats) and all(f == "json" for f in formats)


ABORTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def _interrupted(exc: BaseException) -> bool:
    """Whether `exc` is, or was caused by, Ctrl-C: DuckDB turns it into RuntimeError('Query interrupted')."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt) or (
            type(seen) is RuntimeError and str(seen) == "Query interrupted"
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _abort() -> NoReturn:
    typer.echo("aborted: what was committed before Ctrl-C stays committed", err=True)
    sys.exit(ABORTED)


def main() -> None:
    """Run the CLI; a HindsightError becomes one line on stderr and a non-zero exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (surrogate escapes in Python) must print, not end the command.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    debug = "--debug" in sys.argv
    fmt_json = _wants_json(sys.argv[1:])
    try:
        _refuse_repeated_options(sys.argv[1:])
        # typer turns Ctrl-C into Exit(130) and, with standalone_mode off, returns that code instead of
        # raising it: ignored, an interrupted command exited 0 without a word (review finding)
        code = app(standalone_mode=False)
        if code == ABORTED:
            raise typer.Abort()
        if isinstance(code, int) and code:
            sys.exit(code)
    except HindsightError as exc:
        if debug:
            raise
        if _interrupted(exc):
            _abort()
        if fmt_json:
            typer.echo(to_json(exc.to_dict()), err=True)
        else:
            typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _abort()
    except Exception as exc:  # click usage errors and the like
        if _interrupted(exc) and not debug:
            _abort()
        import click

        # typer vendors its own click: its usage errors are not click.ClickException (they used to
        # print as "error: unexpected NoSuchOption" with exit code 1)
        usage = isinstance(exc, click.ClickException) or (
            isinstance(exc, typer.TyperException) and callable(getattr(exc, "format_message", None))
        )
        if usage and not debug:
            message = exc.format_message()  # type: ignore[attr-defined]
            code = getattr(exc, "exit_code", 2)
            if fmt_json:
                typer.echo(to_json(InputError(message).to_dict()), err=True)
            else:
                typer.echo(f"error: {message}", err=True)
            sys.exit(code)
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
