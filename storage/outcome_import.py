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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from service.errors import InputError, InvalidOutcome, SourceError
from storage.layout import Layout
from storage.outcome_flush import flush_once
from storage.outcome_intake import open_intake
from storage.outcome_model import Outcome, conflict_within, parse_outcomes, repeated_detail

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


Place = tuple[str, int]
"""Where a record is in its file: ("line", n) in CSV and JSONL (its first line, counted from 1 with the
CSV header), ("row", n) in Parquet (counted from 1)."""


def _bad(index: int, place: Place, field: str, message: str) -> InvalidOutcome:
    return InvalidOutcome(
        f"{place[0]} {place[1]}: {field}: {message}",
        details=[{"index": index, place[0]: place[1], "field": field, "loc": [field], "message": message}],
    )


def _json_cell(index: int, place: Place, name: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _bad(index, place, name, f"not valid JSON: {exc}") from exc


def _csv_value(text: str) -> Any:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return parsed if isinstance(parsed, bool | int | float) else text


def _fold_key_columns(index: int, place: Place, row: dict[str, Any]) -> dict[str, Any]:
    pairs = {name[len("key.") :]: row.pop(name) for name in [n for n in row if n.startswith("key.")]}
    if pairs:
        if "key" in row:
            raise _bad(index, place, "key", "give key.<path> columns or a key column, not both")
        row["key"] = pairs
    return row


def _csv_items(path: Path) -> Iterator[tuple[Place, dict[str, Any]]]:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which became part of the first
    # column's name (`\ufeffoutcome_id: Extra inputs are not permitted`; review finding)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            # a dict of the row kept the last cell of a repeated column: value,value with fraud,ok stored ok
            raise InvalidOutcome(
                f"the CSV header names column(s) {repeated} more than once",
                details=[
                    {"index": None, "field": "header", "loc": ["header"], "message": "repeated columns"}
                ],
            )
        # csv.reader, not DictReader: DictReader skips blank lines unseen, which put the line numbers of
        # the records after one a line early (review finding)
        ended, index = reader.line_num, 0  # the line the previous row ended on (a quoted cell may span lines)
        for cells in reader:
            place, ended = ("line", ended + 1), reader.line_num
            if not cells:
                continue  # a blank line
            if len(cells) > len(header):
                raise _bad(index, place, "row", "more cells than header columns")
            if len(cells) < len(header):
                # a short row read its missing cells as absent fields (review finding)
                raise _bad(index, place, "row", "fewer cells than header columns")
            row: dict[str, Any] = {k: v for k, v in zip(header, cells, strict=True) if v != ""}
            for name in _JSON_CELLS:
                if name in row:
                    row[name] = _json_cell(index, place, name, row[name])
            if "value" in row:
                row["value"] = _csv_value(row["value"])
            yield place, _fold_key_columns(index, place, row)
            index += 1


def _jsonl_items(path: Path) -> Iterator[tuple[Place, Any]]:
    with path.open("rb") as fh:
        index = 0
        for number, line in enumerate(fh, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a byte-order mark, as some editors write
            if not line.strip():
                continue
            try:
                item = orjson.loads(line.rstrip(b"\r\n"))
            except orjson.JSONDecodeError as exc:
                # orjson's own position ("line 1 column 18") is within this one line: give the column
                raise _bad(
                    index, ("line", number), "line", f"not valid JSON: {exc.msg} at column {exc.colno}"
                ) from exc
            yield ("line", number), item
            index += 1


def _parquet_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # naive = UTC
        return aware.isoformat()
    return value


def _parquet_items(path: Path) -> Iterator[tuple[Place, dict[str, Any]]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read Parquet file {path}: {exc}") from exc
    for index, raw in enumerate(rows):
        place = ("row", index + 1)
        row = {k: _parquet_cell(v) for k, v in raw.items() if v is not None}
        for name in _JSON_CELLS:
            if isinstance(row.get(name), str):
                row[name] = _json_cell(index, place, name, row[name])
            elif isinstance(row.get(name), list):  # a Parquet MAP reads as a list of (key, value) pairs
                row[name] = dict(row[name])
        yield place, _fold_key_columns(index, place, row)


def read_outcome_file(path: Path, fmt: str) -> tuple[list[Any], list[Place]]:
    """The outcome objects of a file, as the API would receive them, and where each one is."""
    readers = {"csv": _csv_items, "jsonl": _jsonl_items, "parquet": _parquet_items}
    try:
        records = list(readers[fmt](path))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    return [item for _, item in records], [place for place, _ in records]


def validate_file(path: Path, fmt: str) -> list[Outcome]:
    """Every outcome of the file, validated: any invalid record rejects the file, and errors name it by its
    line (row in Parquet), not by its position among the records (review finding)."""
    items, places = read_outcome_file(path, fmt)
    try:
        outcomes = parse_outcomes(items)
    except InvalidOutcome as exc:
        raise _placed(exc, places) from exc
    conflict = conflict_within(outcomes)
    if conflict is not None:
        earlier, later = (places[i] for i in conflict)
        raise InvalidOutcome(
            f"outcome_id {outcomes[conflict[1]].outcome_id!r} comes twice in the file with different "
            f"contents ({earlier[0]}s {earlier[1]} and {later[1]}); nothing was stored",
            details=[_place_detail(repeated_detail(conflict[1]), places)],
        )
    return outcomes


def _place_detail(detail: dict[str, Any], places: list[Place]) -> dict[str, Any]:
    index = detail.get("index")
    if not isinstance(index, int) or not 0 <= index < len(places):
        return detail
    unit, number = places[index]
    return {**detail, unit: number}


def _placed(exc: InvalidOutcome, places: list[Place]) -> InvalidOutcome:
    """The validator's error with each item's line (or row) added, and the first named by it."""
    details = [_place_detail(d, places) for d in exc.details] if isinstance(exc.details, list) else []
    if not details or not isinstance(details[0].get("index"), int):
        return exc
    first = details[0]
    unit = places[first["index"]][0]
    more = f" (and {len(details) - 1} more problem(s))" if len(details) > 1 else ""
    return InvalidOutcome(
        f"{unit} {first[unit]}: {first['field']}: {first['message']}{more}", details=details
    )


def import_id(file_digest: bytes, index: int) -> str:
    """The outcome_id of the file's `index`th record when it gives none: a UUID (version 8, RFC 9562) from
    the file's content and the record's place, so that importing the same file again (after an
    interrupted run, say) finds its records stored instead of adding them twice."""
    raw = bytearray(blake2b(file_digest + index.to_bytes(8, "big"), digest_size=16).digest())
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10
    return str(uuid.UUID(bytes=bytes(raw)))


def _file_digest(path: Path) -> bytes:
    digest = blake2b(digest_size=16)
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    return digest.digest()


def import_outcomes(
    root: Path,
    path: Path,
    *,
    fmt: str | None = None,
    group_commit_ms: float = 0.0,
    stored: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Validate a file, store its outcomes in the intake log (one transaction), then flush to Delta.

    A record without an outcome_id gets `import_id()`, so a second import of the same file is all
    "duplicate". `stored(created, duplicate)` is called once the outcomes are durable in the intake log,
    before the flush (which may wait for another process's flush, or fail and leave them to the next)."""
    chosen = file_format(path, fmt)
    outcomes = validate_file(path, chosen)
    if any(o.generated_id for o in outcomes):
        digest = _file_digest(path)
        outcomes = [
            o._replace(outcome_id=import_id(digest, index), generated_id=False) if o.generated_id else o
            for index, o in enumerate(outcomes)
        ]
    layout = Layout(root)
    with open_intake(layout.intake_db, group_commit_ms=group_commit_ms) as intake:
        statuses = intake.append(outcomes, key_id=None)
        created = statuses.count("created")
        if stored is not None:
            stored(created, len(statuses) - created)
        flushed = flush_once(intake, root)
    return ImportReport(path, chosen, created, len(statuses) - created, flushed.rows_written)
