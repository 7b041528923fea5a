"""Labelled training sets: one endpoint's labelled predictions in a file, with a manifest to replay it.

The manifest records everything that decides the rows (the Delta versions read, the as-of time, the
policies, every choice made), so the same file can be written again later by time travel.

Order, as everywhere: the data file is written under a temporary name, synced and renamed; then the
manifest, which names it, is written the same way. A crash leaves at most a `.partial-*` file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from service.errors import ConfigError, InputError, QueryError, StorageError
from storage.commit import open_table
from storage.label_sql import EXPORT_MACRO, WON_TABLE, labelled_export_macro
from storage.layout import Layout
from storage.metrics import check_days, check_known_endpoint, checked_as_of
from storage.policies import DEFAULT_OUTCOME_TYPE, Policy, policies_from_config, policy_to_mapping
from storage.views import DUCKDB_FAILURES, connect, failure_text, quote_ident, quote_literal

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_KIND = "hindsight-export"
MANIFEST_VERSION = 1
LABEL_STATES = ("observed", "implicit", "pending")
DEFAULT_LABEL_STATES = ("observed", "implicit")
PINNED_TABLES = ("predictions", "outcomes")
"""The tables a labelled export reads; a manifest records the Delta version of each (None: no table yet)."""


class ExportFormat(StrEnum):
    """The file format of an export."""

    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


class FeatureLayout(StrEnum):
    """How the predictions' features are written: one column per top-level feature, or the JSON text."""

    columns = "columns"
    json = "json"


@dataclass(frozen=True)
class ExportRequest:
    """What to export: one endpoint and outcome type, labels as known at `as_of` (None: now)."""

    endpoint: tuple[str, str]
    outcome_type: str | None = None
    as_of: dt.datetime | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    label_states: tuple[str, ...] = DEFAULT_LABEL_STATES
    features: FeatureLayout = FeatureLayout.columns
    fmt: ExportFormat = ExportFormat.parquet


@dataclass(frozen=True)
class ExportResult:
    """A written export: the data file, its manifest (also as a dict) and its row count."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


@dataclass(frozen=True)
class Manifest:
    """A manifest read back: everything needed to write the same export again."""

    path: Path
    root: Path
    request: ExportRequest
    policies: tuple[Policy, ...]
    versions: dict[str, int | None]
    rows: int
    sha256: str
    raw: dict[str, Any]


BASE_COLUMNS = (
    "record_id",
    "ts",
    "day",
    "service_id",
    "endpoint_id",
    "generation",
    "context",
    "prediction",
    "prediction_value",
    "probas",
    "outcome_type",
    "label",
    "label_value",
    "label_state",
    "labelled_at",
    "label_delay_seconds",
    "outcome_id",
    "outcome_occurred_at",
)
"""The columns of every export; the features come after `generation` (one column each, or `features`)."""


def manifest_path_for(out: Path) -> Path:
    """Where the manifest of the export written to `out` goes: beside it, `<name>.manifest.json`."""
    return out.with_name(out.name + MANIFEST_SUFFIX)


def export_labelled(
    root: Path | str,
    out: Path,
    request: ExportRequest,
    *,
    policies: Sequence[Policy],
    versions: Mapping[str, int | None] | None = None,
    overwrite: bool = False,
    replay_of: Path | None = None,
    feature_order: Sequence[str] = (),
) -> ExportResult:
    """Write the labelled rows of `request` to `out` and its manifest beside it.

    `versions` pins tables to Delta versions (a replay); the others are read at their latest version,
    which the manifest records. Without `overwrite`, an existing `out` or manifest is an InputError.
    Feature columns come in `feature_order` (a replay's: the original's), then by name.
    """
    _check_request(request)
    manifest_path = manifest_path_for(out)
    _check_targets(out, manifest_path, overwrite=overwrite)
    pinned = _resolve_versions(Path(root), versions or {})
    as_of = request.as_of or dt.datetime.now(dt.UTC)
    con = connect(root, policies=policies, versions=pinned)
    try:
        check_known_endpoint(con, request.endpoint)
        outcome_type = _outcome_type(request, policies)
        chosen = ExportRequest(
            endpoint=request.endpoint,
            outcome_type=outcome_type,
            as_of=as_of,
            date_from=request.date_from,
            date_to=request.date_to,
            label_states=tuple(s for s in LABEL_STATES if s in request.label_states),
            features=request.features,
            fmt=request.fmt,
        )
        con.execute(labelled_export_macro())
        _store_winners(con, as_of)
        source, params = _source(chosen)
        feature_columns = (
            _feature_columns(con, source, params, feature_order)
            if chosen.features is FeatureLayout.columns
            else []
        )
        if chosen.fmt is ExportFormat.jsonl:
            _refuse_non_finite_json(con, source, params, chosen, feature_columns)
        select = _select(source, chosen, feature_columns)
        columns = _describe(con, select, params)
        _make_folder(out)
        rows = _write(con, select, params, out, chosen.fmt)
    finally:
        con.close()
    manifest = {
        "kind": MANIFEST_KIND,
        "manifest_version": MANIFEST_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "root": str(Path(root).resolve()),
        "file": out.name,
        "format": chosen.fmt.value,
        "rows": rows,
        "sha256": file_sha256(out),
        "columns": columns,
        "request": _request_dict(chosen),
        "tables": pinned,
        "policies": [policy_to_mapping(p) for p in policies],
        "software": _software(),
    }
    if replay_of is not None:
        manifest["replay_of"] = str(replay_of.resolve())
    _write_atomically(manifest_path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    return ExportResult(out, manifest_path, manifest)


def read_manifest(path: Path) -> Manifest:
    """Read and validate an export manifest (an InputError names what is wrong with it)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"no export manifest at {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read export manifest {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") != MANIFEST_KIND:
        raise InputError(f'{path} is not a hindsight export manifest (no "kind": "{MANIFEST_KIND}")')
    if raw.get("manifest_version") != MANIFEST_VERSION:
        raise InputError(
            f"{path}: manifest_version {raw.get('manifest_version')!r} is not supported (this hindsight "
            f"reads version {MANIFEST_VERSION})"
        )
    try:
        req = raw["request"]
        service, endpoint = req["endpoint"].split("/", 1)
        request = ExportRequest(
            endpoint=(service, endpoint),
            outcome_type=req["outcome_type"],
            as_of=dt.datetime.fromisoformat(req["as_of"]),
            date_from=None if req["from"] is None else dt.date.fromisoformat(req["from"]),
            date_to=None if req["to"] is None else dt.date.fromisoformat(req["to"]),
            label_states=tuple(req["label_states"]),
            features=FeatureLayout(req["features"]),
            fmt=ExportFormat(raw["format"]),
        )
        if not isinstance(raw["file"], str) or not isinstance(raw["sha256"], str):
            raise ValueError("file and sha256 must be strings")
        versions = {name: raw["tables"][name] for name in PINNED_TABLES}
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in versions.values()):
            raise ValueError(f"table versions must be integers or null, got {versions}")
        try:
            policies = tuple(policies_from_config(raw["policies"]))
        except ConfigError as exc:
            raise ValueError(exc.message) from exc
        return Manifest(
            path=path,
            root=Path(raw["root"]),
            request=request,
            policies=policies,
            versions=versions,
            rows=int(raw["rows"]),
            sha256=str(raw["sha256"]),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"export manifest {path} is damaged: {type(exc).__name__}: {exc}") from exc


def replay_export(
    manifest: Manifest, out: Path, *, root: Path | None = None, overwrite: bool = False
) -> ExportResult:
    """Write the export `manifest` describes again, to `out`, from the same table versions, policies and
    as-of time; a QueryError (after writing it, for inspection) when the rows or bytes differ."""
    if out.resolve() == (manifest.path.parent / manifest.raw["file"]).resolve():
        raise InputError(f"{out} is the export this manifest describes; replay it to another file")
    result = export_labelled(
        root or manifest.root,
        out,
        manifest.request,
        policies=manifest.policies,
        versions=manifest.versions,
        overwrite=overwrite,
        replay_of=manifest.path,
        feature_order=_feature_order(manifest),
    )
    if result.manifest["sha256"] != manifest.sha256 or result.rows != manifest.rows:
        then, now = manifest.raw.get("software", {}), result.manifest["software"]
        raise QueryError(
            f"the replayed export {out} differs from the original: {result.rows} rows (original "
            f"{manifest.rows}), sha256 {result.manifest['sha256'][:12]}… (original {manifest.sha256[:12]}…); "
            f"software then {then}, now {now}; the new file and its manifest are kept for inspection",
            details={"rows": result.rows, "original_rows": manifest.rows},
        )
    return result


def _feature_order(manifest: Manifest) -> list[str]:
    """The feature columns of the original export, in its order (its columns past the base ones)."""
    columns = manifest.raw.get("columns")
    if manifest.request.features is not FeatureLayout.columns or not isinstance(columns, list):
        return []
    names = [c.get("name") for c in columns if isinstance(c, dict)]
    return [n for n in names if isinstance(n, str) and n not in BASE_COLUMNS]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_request(request: ExportRequest) -> None:
    if not request.label_states or any(s not in LABEL_STATES for s in request.label_states):
        given = ", ".join(request.label_states) or "none"
        raise InputError(f"label states must be some of {', '.join(LABEL_STATES)}; got {given}")
    check_days(request.date_from, request.date_to)
    if request.as_of is not None:
        if request.as_of.tzinfo is None:
            raise InputError("the as-of time needs a time zone")
        checked_as_of(request.as_of)


def _check_targets(out: Path, manifest_path: Path, *, overwrite: bool) -> None:
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the path of the file to write")
    if out.name.endswith(MANIFEST_SUFFIX):
        raise InputError(f"{out} is named like a manifest; give the path of the data file to write")
    if not overwrite:
        for path in (out, manifest_path):
            if path.exists():
                raise InputError(f"{path} exists; pass --force to replace it")
    # a folder that cannot be made fails now, with its reason (it was "unexpected FileExistsError" after
    # the whole label join, review finding); it is made only when the file is written, so that an export
    # refused for another reason leaves no empty folder behind
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(f"cannot create the folder {out.parent}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"cannot create the folder {out.parent}: {existing} is not writable")


def _make_folder(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder {out.parent}: {exc.strerror or exc}") from exc


def _resolve_versions(root: Path, versions: Mapping[str, int | None]) -> dict[str, int | None]:
    """Every table of PINNED_TABLES with a version: the one asked, else the latest (None: no table)."""
    unknown = sorted(set(versions) - set(PINNED_TABLES))
    if unknown:
        raise InputError(f"an export reads only {', '.join(PINNED_TABLES)}; cannot pin {', '.join(unknown)}")
    layout = Layout(root)
    resolved: dict[str, int | None] = {}
    for name in PINNED_TABLES:
        if name in versions:
            resolved[name] = versions[name]
        else:
            table = open_table(layout.table(name))
            resolved[name] = None if table is None else table.version()
    return resolved


def _outcome_type(request: ExportRequest, policies: Sequence[Policy]) -> str:
    """The outcome type to export: the one asked, or the endpoint's only one (`label` without policies)."""
    types = [p.outcome_type for p in policies if (p.service_id, p.endpoint_id) == request.endpoint]
    available = types or [DEFAULT_OUTCOME_TYPE]
    name = "/".join(request.endpoint)
    if request.outcome_type is None:
        if len(available) > 1:
            raise InputError(
                f"{name} has policies for several outcome types ({', '.join(available)}); choose one with "
                "--outcome-type"
            )
        return available[0]
    if request.outcome_type not in available:
        where = "its policies use" if types else "it has no policy, so only the default applies:"
        raise InputError(
            f"{name} has no labels of outcome type {request.outcome_type!r}; {where} {', '.join(available)}"
        )
    return request.outcome_type


def _source(request: ExportRequest) -> tuple[str, list[Any]]:
    """The filtered labelled rows (with features and context) as a subquery, and its parameters."""
    states = ", ".join("?" for _ in request.label_states)
    sql = (
        f"(SELECT * FROM {EXPORT_MACRO}(?::TIMESTAMPTZ) WHERE service_id = ? AND endpoint_id = ? "
        f"AND outcome_type = ? AND label_state IN ({states}) "
        "AND (?::DATE IS NULL OR day >= ?::DATE) AND (?::DATE IS NULL OR day <= ?::DATE))"
    )
    params: list[Any] = [
        request.as_of,
        *request.endpoint,
        request.outcome_type,
        *request.label_states,
        request.date_from,
        request.date_from,
        request.date_to,
        request.date_to,
    ]
    return sql, params


_SCALAR_TYPES = {
    "VARCHAR": "VARCHAR",
    "BIGINT": "BIGINT",
    "UBIGINT": "BIGINT",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
}
"""JSON structure types (json_group_structure) -> the column type a feature gets; any other (objects,
arrays, mixed types: JSON, or only nulls: NULL) is written as JSON text."""


@dataclass(frozen=True)
class _Feature:
    name: str
    kind: str  # a key of _SCALAR_TYPES, or "JSON"


def _store_winners(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> None:
    """The winning outcome per prediction at `as_of`, in the `_hs_won` table the export macro reads."""
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {WON_TABLE} AS SELECT * FROM _hs_won_as_of(?::TIMESTAMPTZ)",
            [as_of],
        )
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"cannot join the outcomes to the predictions: {failure_text(exc)}") from exc


def _feature_columns(
    con: duckdb.DuckDBPyConnection, source: str, params: list[Any], order: Sequence[str] = ()
) -> list[_Feature]:
    """One column per top-level feature name of the exported rows, typed by what all their values share,
    in `order` and then by name. Not in the order `json_group_structure` gives: it merges the day files'
    partial structures in whatever order the threads finish, so two runs of one export could order the
    columns differently when days list their features differently, and a replay failed at random
    (review finding)."""
    try:
        row = con.execute(f"SELECT json_group_structure(features::JSON) FROM {source}", params).fetchone()
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"cannot read the features of the exported rows: {failure_text(exc)}") from exc
    structure = None if row is None or row[0] is None else json.loads(row[0])
    if structure is None or structure == "NULL":
        return []  # no rows, or no features at all
    if not isinstance(structure, dict):
        raise InputError(
            "the features of some exported predictions are not JSON objects, so they cannot be written as "
            "columns; export them with --features json"
        )
    taken = {c.lower(): c for c in BASE_COLUMNS}
    features: list[_Feature] = []
    place = {name: index for index, name in enumerate(order)}
    for name, kind in sorted(structure.items(), key=lambda item: (place.get(item[0], len(place)), item[0])):
        clash = taken.get(name.lower())
        if not name or clash is not None:
            what = "an empty name" if not name else f"the name {name!r}, as the column {clash!r}"
            raise InputError(
                f"a feature has {what} (column names ignore case); export the features with --features json"
            )
        taken[name.lower()] = name
        features.append(_Feature(name, kind if isinstance(kind, str) and kind in _SCALAR_TYPES else "JSON"))
    _refuse_inexact_doubles(con, source, params, [f for f in features if f.kind == "DOUBLE"])
    return features


def _refuse_inexact_doubles(
    con: duckdb.DuckDBPyConnection, source: str, params: list[Any], doubles: list[_Feature]
) -> None:
    """An InputError when a DOUBLE feature holds an integer literal a double cannot hold exactly: an integer
    of 2^64 or more (DuckDB's JSON reader types it DOUBLE: `12345678901234567890123` was exported as
    1.2345678901234568e+22, silently; review finding), or one beyond 2^53 among other rows' decimals."""
    if not doubles:
        return
    checks = []
    for feature in doubles:
        pointer = _pointer(feature)
        text = f"json_extract(features, {pointer})::VARCHAR"
        exact = f"TRY_CAST({text} AS HUGEINT)"
        rounded = f"TRY_CAST(CAST({text} AS DOUBLE) AS HUGEINT)"
        # a number literal, not NaN or (-)Infinity, which the ingest accepts and a double holds as they are
        literal = f"regexp_matches({text}, '^-?[0-9]')"
        checks.append(
            f"""count(*) FILTER (WHERE {literal} AND NOT regexp_matches({text}, '[.eE]')
                AND ({exact} IS NULL OR {rounded} IS DISTINCT FROM {exact}))"""
        )
        # 1e400 became inf, silently (review finding)
        checks.append(f"count(*) FILTER (WHERE {literal} AND NOT isfinite(CAST({text} AS DOUBLE)))")
    try:
        row = con.execute(f"SELECT {', '.join(checks)} FROM {source}", params).fetchone()
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"cannot read the features of the exported rows: {failure_text(exc)}") from exc
    counts = list(row or ())
    inexact = [f.name for f, count in zip(doubles, counts[0::2], strict=True) if count]
    if inexact:
        raise InputError(
            f"feature(s) {inexact} hold integers too large for a number column without rounding; export the "
            "features with --features json"
        )
    beyond = [f.name for f, count in zip(doubles, counts[1::2], strict=True) if count]
    if beyond:
        raise InputError(
            f"feature(s) {beyond} hold numbers beyond a double's range (such as 1e400); export the features "
            "with --features json"
        )


_NON_FINITE_TOKEN = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*?[\[:,]\s*-?(?:NaN|Infinity)'
"""A NaN or (-)Infinity token outside the strings of a JSON text (the ingest accepts them, JSON has none)."""


def _refuse_non_finite_json(
    con: duckdb.DuckDBPyConnection,
    source: str,
    params: list[Any],
    request: ExportRequest,
    features: list[_Feature],
) -> None:
    """An InputError when a JSON value a JSONL export writes as it was logged holds NaN or Infinity: the
    line would not be JSON (review finding). Number columns and probas are made null instead."""
    texts = {"context": "context"}
    if request.features is FeatureLayout.json:
        texts["features"] = "features"
    for feature in features:
        if feature.kind == "JSON":
            texts[feature.name] = f"json_extract(features, {_pointer(feature)})::VARCHAR"
    pattern = quote_literal(_NON_FINITE_TOKEN)
    counts = ", ".join(
        f"count(*) FILTER (WHERE regexp_matches({text}, {pattern}))" for text in texts.values()
    )
    try:
        row = con.execute(f"SELECT {counts} FROM {source}", params).fetchone()
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"cannot read the exported rows: {failure_text(exc)}") from exc
    bad = [name for name, count in zip(texts, row or (), strict=True) if count]
    if bad:
        raise InputError(
            f"{', '.join(bad)} of some rows hold NaN or Infinity, which JSON cannot hold: export them as "
            "Parquet or CSV (which keep them)"
        )


def _pointer(feature: _Feature) -> str:
    """The SQL literal of the feature's RFC 6901 pointer in `features` (`~` and `/` escaped)."""
    return quote_literal("/" + feature.name.replace("~", "~0").replace("/", "~1"))


def _feature_expr(feature: _Feature, json_type: str) -> str:
    pointer = _pointer(feature)
    if feature.kind == "VARCHAR":
        value = f"json_extract_string(features, {pointer})"
    elif feature.kind == "JSON":
        # a JSON null is no value (it was the text 'null' in Parquet and CSV, review finding)
        extracted = f"json_extract(features, {pointer})"
        value = f"CASE WHEN json_type({extracted}) <> 'NULL' THEN {extracted}::{json_type} END"
    else:
        # a strict cast: a value the type cannot hold (an integer over 2^63) fails the export, never a NULL
        value = f"CAST(json_extract(features, {pointer}) AS {_SCALAR_TYPES[feature.kind]})"
        if feature.kind == "DOUBLE" and json_type == "JSON":
            value = _finite(value)
    return f"{value} AS {quote_ident(feature.name)}"


def _finite(value: str) -> str:
    """JSON has no NaN or Infinity (a JSONL line holding one is not JSON, review finding): they are null
    in JSONL; Parquet and CSV keep them (pandas reads both)."""
    return f"CASE WHEN isfinite({value}) THEN {value} END"


def _select(source: str, request: ExportRequest, features: list[_Feature]) -> str:
    # JSON values (context, nested features, probas in text formats) are text in Parquet and CSV, and
    # objects in JSONL; Parquet keeps probas as a MAP
    jsonl = request.fmt is ExportFormat.jsonl
    json_type = "JSON" if jsonl else "VARCHAR"
    probas = "probas" if request.fmt is ExportFormat.parquet else f"to_json(probas)::{json_type}"
    if jsonl:
        entries = f"[{{'k': e.key, 'v': {_finite('e.value')}}} for e in map_entries(probas)]"
        probas = f"to_json(map_from_entries({entries}))"
    prediction_value, label_value = (_finite(c) if jsonl else c for c in ("prediction_value", "label_value"))
    if request.features is FeatureLayout.columns:
        feature_sql = "".join(f"{_feature_expr(f, json_type)}, " for f in features)
    else:
        feature_sql = f"features::{json_type} AS features, "
    return f"""SELECT record_id, ts, day, service_id, endpoint_id, generation, {feature_sql}
           context::{json_type} AS context, prediction, {prediction_value} AS prediction_value,
           {probas} AS probas, outcome_type, label, {label_value} AS label_value, label_state, labelled_at,
           epoch(label_delay) AS label_delay_seconds, outcome_id, outcome_occurred_at
    FROM {source}
    ORDER BY ts, record_id"""


def _describe(con: duckdb.DuckDBPyConnection, select: str, params: list[Any]) -> list[dict[str, str]]:
    try:
        result = con.execute(f"SELECT * FROM ({select}) LIMIT 0", params)
    except DUCKDB_FAILURES as exc:
        raise QueryError(f"cannot prepare the export: {failure_text(exc)}") from exc
    return [{"name": d[0], "type": str(d[1])} for d in result.description or []]


_COPY_OPTIONS = {
    ExportFormat.parquet: "FORMAT parquet",
    ExportFormat.csv: "FORMAT csv, HEADER true",
    ExportFormat.jsonl: "FORMAT json",
}


def _write(
    con: duckdb.DuckDBPyConnection, select: str, params: list[Any], out: Path, fmt: ExportFormat
) -> int:
    """COPY the rows to a temporary file beside `out`, sync it and rename it to `out`; the row count."""
    with _partial(out) as partial:
        # insertion order kept: the file's rows are in the query's order, so a replay gives the same bytes
        con.execute("SET preserve_insertion_order = true")
        try:
            row = con.execute(
                f"COPY ({select}) TO {quote_literal(str(partial))} ({_COPY_OPTIONS[fmt]})", params
            ).fetchone()
        except DUCKDB_FAILURES as exc:
            text = failure_text(exc)
            # the hint is for a feature that does not convert, not for a disk error whose message quotes
            # a path such as `train.jsonl` or `forecast.csv` (review finding)
            words = text.replace(str(partial), "").lower()
            converts = not isinstance(exc, duckdb.IOException) and ("json" in words or "cast" in words)
            hint = "; export the features with --features json" if converts else ""
            raise QueryError(f"cannot write the export: {text.splitlines()[0]}{hint}") from exc
        _fsync(partial)
        os.replace(partial, out)
        _fsync_dir(out.parent)
    return 0 if row is None else int(row[0])


def _write_atomically(path: Path, data: bytes) -> None:
    with _partial(path) as partial:
        partial.write_bytes(data)
        _fsync(partial)
        os.replace(partial, path)
        _fsync_dir(path.parent)


@contextmanager
def _partial(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, removed unless it was renamed."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _request_dict(request: ExportRequest) -> dict[str, Any]:
    assert request.as_of is not None
    return {
        "endpoint": "/".join(request.endpoint),
        "outcome_type": request.outcome_type,
        "as_of": request.as_of.isoformat(),
        "from": None if request.date_from is None else request.date_from.isoformat(),
        "to": None if request.date_to is None else request.date_to.isoformat(),
        "label_states": list(request.label_states),
        "features": request.features.value,
    }


def _software() -> dict[str, str]:
    """The versions that decide the exported bytes (a replay under others may differ in them)."""
    found: dict[str, str] = {}
    for name in ("hindsight", "duckdb", "deltalake"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found
