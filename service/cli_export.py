"""`hindsight export`: write one endpoint's labelled predictions to a file for retraining (storage.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli_options import AsOfOption, DayFromOption, DayToOption
from service.errors import InputError

_SUFFIX_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def export_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="The file to write (its manifest goes beside it).")],
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="The endpoint, as SERVICE/ENDPOINT (required).")
    ] = None,
    outcome_type: Annotated[
        str | None,
        typer.Option("--outcome-type", help="Whose labels (needed when the endpoint has several policies)."),
    ] = None,
    as_of: AsOfOption = None,
    date_from: DayFromOption = None,
    date_to: DayToOption = None,
    label_state: Annotated[
        str | None,
        typer.Option(
            "--label-state",
            help="Which rows, by label state: a comma list of observed, implicit, pending "
            "(default observed,implicit).",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="parquet, csv or jsonl (default: from OUT's suffix)."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features", help="columns (one per top-level feature, the default) or json (one text column)."
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay", help="Write the export this manifest describes again, from the same table versions."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace OUT and its manifest if they exist.")
    ] = False,
) -> None:
    """Write one endpoint's predictions with their labels (as of a time) to a Parquet, CSV or JSONL file.

    A manifest beside the file (OUT.manifest.json) records the Delta versions read, the as-of time and
    the policies; `--replay MANIFEST` writes the same rows again, byte for byte, whatever arrived since.

    Example: hindsight export train.parquet --endpoint fraud/score --as-of 2026-03-01
    """
    from service.cli import state_of
    from storage.export import (
        DEFAULT_LABEL_STATES,
        ExportFormat,
        ExportRequest,
        FeatureLayout,
        export_labelled,
        read_manifest,
        replay_export,
    )
    from storage.interrupt import run_interruptibly
    from storage.metrics import parse_as_of, parse_day, parse_endpoint
    from storage.policies import policies_from_config

    state = state_of(ctx)
    if replay is not None:
        given = {
            "--endpoint": endpoint,
            "--outcome-type": outcome_type,
            "--as-of": as_of,
            "--from": date_from,
            "--to": date_to,
            "--label-state": label_state,
            "--format": fmt,
            "--features": features,
        }
        clashing = [name for name, value in given.items() if value is not None]
        if clashing:
            raise InputError(
                f"--replay takes every choice from the manifest; do not combine it with {', '.join(clashing)}"
            )
        manifest = read_manifest(replay)
        _check_replay_name(out, manifest.request.fmt.value)
        root = state.settings().root if state.root is not None else None
        result = run_interruptibly(lambda: replay_export(manifest, out, root=root, overwrite=force))
        typer.echo(f"{_summary(result.rows, out, result.manifest)}; identical to {replay}")
        return
    if endpoint is None:
        raise InputError("--endpoint SERVICE/ENDPOINT is required (or --replay MANIFEST)")
    settings = state.settings()
    request = ExportRequest(
        endpoint=parse_endpoint(endpoint),
        outcome_type=outcome_type,
        as_of=None if as_of is None else parse_as_of(as_of, "--as-of"),
        date_from=parse_day(date_from, "--from"),
        date_to=parse_day(date_to, "--to"),
        label_states=DEFAULT_LABEL_STATES if label_state is None else _states(label_state),
        features=FeatureLayout(
            _choice(features or "columns", "--features", [f.value for f in FeatureLayout])
        ),
        fmt=ExportFormat(_choice(fmt or _format_of(out), "--format", list(ExportFormat))),
    )
    policies = policies_from_config([p.model_dump() for p in settings.policies])
    result = run_interruptibly(
        lambda: export_labelled(settings.root, out, request, policies=policies, overwrite=force)
    )
    typer.echo(_summary(result.rows, out, result.manifest))


def _format_of(out: Path) -> str:
    """The format OUT's suffix names; an InputError for another suffix (`train.json` and `x.csv.gz` were
    written as Parquet under those names, silently; review finding)."""
    suffix = out.suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    known = ", ".join(sorted(_SUFFIX_FORMATS))
    raise InputError(
        f"{out.name}: the suffix does not name a format ({known}); give --format parquet, csv or jsonl"
    )


def _check_replay_name(out: Path, fmt: str) -> None:
    """A replay writes the manifest's format: OUT must be named for it (a Parquet replay to `x.csv` was
    written as Parquet under that name; review finding)."""
    if _SUFFIX_FORMATS.get(out.suffix.lower()) != fmt:
        suffixes = ", ".join(sorted(s for s, f in _SUFFIX_FORMATS.items() if f == fmt))
        raise InputError(
            f"{out.name}: the manifest's export is {fmt}; replay it to a file named with {suffixes}",
            details={"format": fmt},
        )


def _states(text: str) -> tuple[str, ...]:
    from storage.export import LABEL_STATES

    states = tuple(part.strip() for part in text.split(","))
    unknown = [s for s in states if s not in LABEL_STATES]
    if unknown or not text.strip():
        raise InputError(f"--label-state takes a comma list of {', '.join(LABEL_STATES)}; got {text!r}")
    return states


def _choice(value: str, flag: str, allowed: list[str]) -> str:
    if value not in allowed:
        raise InputError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _summary(rows: int, out: Path, manifest: dict[str, object]) -> str:
    from storage.export import manifest_path_for

    request = manifest["request"]
    tables = manifest["tables"]
    assert isinstance(request, dict) and isinstance(tables, dict)
    versions = ", ".join(
        f"{name} v{version}" if version is not None else f"no {name}" for name, version in tables.items()
    )
    return (
        f"wrote {rows} rows to {out} ({request['endpoint']} {request['outcome_type']}, labels "
        f"{'/'.join(request['label_states'])} as of {request['as_of']}; read {versions}); "
        f"manifest {manifest_path_for(out)}"
    )


def register(app: typer.Typer) -> None:
    """Attach `hindsight export` to the main CLI."""
    app.command("export")(export_command)
