"""Bulk import of outcomes from CSV, JSONL or Parquet through the same validation, intake log and flush.

Columns (CSV, Parquet) and fields (JSONL) are the API's outcome fields. The target key is given
either as one `key.<path>` column per path (`key.context.transaction_id`) or as a `key` column
holding a JSON object (a struct in Parquet). In CSV every cell is text: `value` is read as a number
or boolean when it is one in JSON syntax (`1`, `0.5`, `true`), otherwise as text; `key.<path>`
cells stay text (an id like `00123` must not become 123), and `key`/`attributes` cells are JSON.
Empty cells are absent fields. A file is validated whole before anything is stored.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from service.errors import InputError, InvalidOutcome, SourceError
from storage.layout import Layout
from storage.outcome_flush import flush_once
from storage.outcome_intake import open_intake
from storage.outcome_model import Outcome, parse_outcomes

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_JSON_CELLS = ("key", "attributes")


@dataclass(frozen=True)
class ImportReport:
    """What an import did: outcomes created, duplicates of stored ones, rows now in Delta."""

    path: Path
    file_format: str
    created: int
    duplicate: int
    flushed: int


def file_format(path: Path, explicit: str | None = None) -> str:
    """csv, jsonl or parquet: given, or from the file's extension."""
    chosen = explicit or FORMATS.get(path.suffix.lower())
    if chosen not in ("csv", "jsonl", "parquet"):
        raise InputError(
            f"cannot tell the format of {path.name}: use a .csv, .jsonl or .parquet file or --input-format",
            details={"path": str(path)},
        )
    return chosen


def _bad(index: int, field: str, message: str) -> InvalidOutcome:
    return InvalidOutcome(
        f"record {index}: {field}: {message}",
        details=[{"index": index, "field": field, "loc": [field], "message": message}],
    )


def _json_cell(index: int, name: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _bad(index, name, f"not valid JSON: {exc}") from exc


def _csv_value(text: str) -> Any:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return parsed if isinstance(parsed, bool | int | float) else text


def _fold_key_columns(index: int, row: dict[str, Any]) -> dict[str, Any]:
    pairs = {name[len("key.") :]: row.pop(name) for name in [n for n in row if n.startswith("key.")]}
    if pairs:
        if "key" in row:
            raise _bad(index, "key", "give key.<path> columns or a key column, not both")
        row["key"] = pairs
    return row


def _csv_items(path: Path) -> Iterator[dict[str, Any]]:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which became part of the first
    # column's name (`\ufeffoutcome_id: Extra inputs are not permitted`; review finding)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            # DictReader keeps the last cell of a repeated column: value,value with fraud,ok stored ok
            raise InvalidOutcome(
                f"the CSV header names column(s) {repeated} more than once",
                details=[
                    {"index": None, "field": "header", "loc": ["header"], "message": "repeated columns"}
                ],
            )
        for index, raw in enumerate(reader):
            if None in raw:
                raise _bad(index, "row", "more cells than header columns")
            if any(value is None for value in raw.values()):
                # DictReader fills a short row with None, which read as absent fields (review finding)
                raise _bad(index, "row", "fewer cells than header columns")
            row: dict[str, Any] = {k: v for k, v in raw.items() if v not in ("", None)}
            for name in _JSON_CELLS:
                if name in row:
                    row[name] = _json_cell(index, name, row[name])
            if "value" in row:
                row["value"] = _csv_value(row["value"])
            yield _fold_key_columns(index, row)


def _jsonl_items(path: Path) -> Iterator[Any]:
    with path.open("rb") as fh:
        index = 0
        for number, line in enumerate(fh):
            if number == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a byte-order mark, as some editors write
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise _bad(index, "line", f"not valid JSON: {exc}") from exc
            index += 1


def _parquet_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # naive = UTC
        return aware.isoformat()
    return value


def _parquet_items(path: Path) -> Iterator[dict[str, Any]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read Parquet file {path}: {exc}") from exc
    for index, raw in enumerate(rows):
        row = {k: _parquet_cell(v) for k, v in raw.items() if v is not None}
        for name in _JSON_CELLS:
            if isinstance(row.get(name), str):
                row[name] = _json_cell(index, name, row[name])
            elif isinstance(row.get(name), list):  # a Parquet MAP reads as a list of (key, value) pairs
                row[name] = dict(row[name])
        yield _fold_key_columns(index, row)


def read_outcome_file(path: Path, fmt: str) -> list[Any]:
    """The outcome objects of a file, as the API would receive them."""
    readers = {"csv": _csv_items, "jsonl": _jsonl_items, "parquet": _parquet_items}
    try:
        return list(readers[fmt](path))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc


def validate_file(path: Path, fmt: str | None = None) -> list[Outcome]:
    """Every outcome of the file, validated (any invalid record rejects the file)."""
    return parse_outcomes(read_outcome_file(path, file_format(path, fmt)))


def _refuse_conflicts_within(outcomes: list[Outcome]) -> None:
    """An InvalidOutcome when one outcome_id comes twice in the file with different contents: the intake
    log said "already stored with a different body", which sent people looking for an earlier import."""
    first: dict[str, tuple[int, str]] = {}
    for index, outcome in enumerate(outcomes):
        if outcome.generated_id:
            continue
        seen = first.setdefault(outcome.outcome_id, (index, outcome.fingerprint))
        if seen[1] != outcome.fingerprint:
            raise InvalidOutcome(
                f"outcome_id {outcome.outcome_id!r} comes twice in the file with different contents "
                f"(items {seen[0]} and {index}, counted from 0 without a CSV header); nothing was stored",
                details=[
                    {
                        "index": index,
                        "field": "outcome_id",
                        "loc": [index, "outcome_id"],
                        "message": "repeated",
                    }
                ],
            )


def import_outcomes(
    root: Path, path: Path, *, fmt: str | None = None, group_commit_ms: float = 0.0
) -> ImportReport:
    """Validate a file, store its outcomes in the intake log (one transaction), then flush to Delta."""
    chosen = file_format(path, fmt)
    outcomes = parse_outcomes(read_outcome_file(path, chosen))
    _refuse_conflicts_within(outcomes)
    layout = Layout(root)
    with open_intake(layout.intake_db, group_commit_ms=group_commit_ms) as intake:
        statuses = intake.append(outcomes, key_id=None)
        flushed = flush_once(intake, root)
    created = statuses.count("created")
    return ImportReport(path, chosen, created, len(statuses) - created, flushed.rows_written)
