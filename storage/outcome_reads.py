"""Reads for the API: outcomes of a target and a prediction with its outcomes, including unflushed ones."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson

from service.errors import InputError, NotFound, QueryError, StorageError
from storage.layout import Layout
from storage.outcome_intake import PENDING_COLUMNS, IntakeLog, utc_from_us
from storage.outcome_model import canonical_key
from storage.policies import Policy, load_policies
from storage.views import DUCKDB_FAILURES, VIEWS, failure_text

_JSON_TEXT_COLUMNS = ("features", "context", "timing", "extra")
_OUTCOME_COLUMNS = (
    "outcome_id, record_id, key, service_id, endpoint_id, outcome_type, value_json, occurred_at, "
    "received_at, attributes, key_id, intake_seq"
)


MAX_KEY_PATHS = 8
"""Most `key.<path>` parameters one read may give (2^8 = 256 candidate keys at most)."""


def key_candidates(pairs: dict[str, str]) -> list[str]:
    """Canonical keys a query-string key may mean: each text value also as a JSON number or boolean.

    A query string carries only text, while a key may have been posted with `"context.n": 42`;
    trying both forms (at most 2^n for n paths) finds it either way.
    """
    if len(pairs) > MAX_KEY_PATHS:
        # Each path can double the candidates: bound the product before building it.
        raise InputError(
            f"a key has at most {MAX_KEY_PATHS} paths, got {len(pairs)}", details={"paths": sorted(pairs)}
        )
    options: list[list[Any]] = []
    for value in pairs.values():
        forms: list[Any] = [value]
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, bool | int | float):
            forms.append(parsed)
        options.append(forms)
    names = list(pairs)
    return [canonical_key(dict(zip(names, combo, strict=True))) for combo in itertools.product(*options)]


def _connect(root: Path, names: Sequence[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    layout = Layout(root)
    for spec in VIEWS:
        if spec.name in names:
            spec.create(con, layout)
    return con


def _records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _outcome_view(row: dict[str, Any], *, flushed: bool) -> dict[str, Any]:
    return {
        "outcome_id": row["outcome_id"],
        "record_id": row["record_id"],
        "key": None if row["key"] is None else orjson.loads(row["key"]),
        "service_id": row["service_id"],
        "endpoint_id": row["endpoint_id"],
        "outcome_type": row["outcome_type"],
        "value": orjson.loads(row["value_json"]),
        "occurred_at": row["occurred_at"],
        "received_at": row["received_at"],
        "attributes": None if row["attributes"] is None else orjson.loads(row["attributes"]),
        "key_id": row["key_id"],
        "flushed": flushed,
    }


def _pending_view(raw: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(PENDING_COLUMNS, raw, strict=True))
    row["occurred_at"] = utc_from_us(row["occurred_at_us"])
    row["received_at"] = utc_from_us(row["received_at_us"])
    return _outcome_view(row, flushed=False)


def _sort_key(item: dict[str, Any]) -> tuple[dt.datetime, dt.datetime, str]:
    return (item["occurred_at"], item["received_at"], item["outcome_id"])


def find_outcomes(
    root: Path, intake: IntakeLog | None, *, record_id: str | None = None, keys: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every outcome event of a record_id, or of any of the canonical `keys`, oldest first.

    Events still in the intake log (acknowledged, not yet flushed) are included: read-your-writes.
    """
    if (record_id is None) == (not keys):
        raise QueryError("give either record_id or key.<path> parameters")
    # The intake log first, Delta second: the flusher commits to Delta BEFORE it deletes pending
    # rows, so an outcome missing from the pending snapshot was already in Delta when Delta is read.
    # (Delta first could miss an outcome flushed in between.)
    pending = [] if intake is None else intake.pending_matching(record_id=record_id, keys=keys)
    try:
        con = _connect(root, ("outcomes",))
        try:
            if record_id is not None:
                cur = con.execute(f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE record_id = ?", [record_id])
            else:
                marks = ", ".join("?" for _ in keys)
                cur = con.execute(
                    f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE key IN ({marks})", list(keys)
                )
            found = [_outcome_view(r, flushed=True) for r in _records(cur)]
        finally:
            con.close()
    except DUCKDB_FAILURES as exc:
        # our own SQL with bound values: a failure is the storage's (a damaged file), not the request's
        raise StorageError(f"cannot read outcomes: {failure_text(exc)}") from exc
    seen = {item["outcome_id"] for item in found}
    found.extend(item for item in map(_pending_view, pending) if item["outcome_id"] not in seen)
    return sorted(found, key=_sort_key)


def _decode_json_text(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_TEXT_COLUMNS:
        text = row.get(name)
        if isinstance(text, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # not JSON: keep the text as logged
                row[name] = orjson.loads(text)
    return row


def prediction_with_outcomes(
    root: Path, intake: IntakeLog | None, record_id: str, policies: Sequence[Policy] | None = None
) -> dict[str, Any]:
    """The prediction of `record_id` (from the `predictions` view) and its outcomes; NotFound if none.

    Its outcomes are those posted for its record_id, and those posted for its key under each policy of
    its endpoint that joins on a key (of that policy's outcome_type, naming no other endpoint): for the
    endpoints joined by a business key, the record_id alone found none (review finding). An outcome of a
    key shared by several predictions may have gone to another of them; `labelled` says which.
    `policies` None: those of `<root>/hindsight.toml`."""
    try:
        con = _connect(root, ("predictions",))
        try:
            cur = con.execute(
                "SELECT * FROM predictions WHERE record_id = ? ORDER BY ts LIMIT 1", [record_id]
            )
            rows = _records(cur)
        finally:
            con.close()
    except DUCKDB_FAILURES as exc:
        raise StorageError(f"cannot read predictions: {failure_text(exc)}") from exc
    if not rows:
        raise NotFound(f"no prediction with record_id {record_id!r}", details={"record_id": record_id})
    logged = {name: rows[0].get(name) for name in ("context", "features")}  # before decoding
    prediction = _decode_json_text(rows[0])
    outcomes = find_outcomes(root, intake, record_id=record_id)
    seen = {item["outcome_id"] for item in outcomes}
    for policy in load_policies(root) if policies is None else policies:
        if (policy.service_id, policy.endpoint_id) != (prediction["service_id"], prediction["endpoint_id"]):
            continue
        pairs = _key_of(logged, policy)
        if pairs is None:
            continue
        for item in find_outcomes(root, intake, keys=key_candidates(pairs)):
            named = (item["service_id"], item["endpoint_id"])
            fits = named[0] in (None, policy.service_id) and named[1] in (None, policy.endpoint_id)
            if fits and item["outcome_type"] == policy.outcome_type and item["outcome_id"] not in seen:
                seen.add(item["outcome_id"])
                outcomes.append(item)
    return {"prediction": prediction, "outcomes": sorted(outcomes, key=_sort_key)}


def _key_of(logged: dict[str, Any], policy: Policy) -> dict[str, str] | None:
    """The prediction's value of each of the policy's key paths as text (None: a record_id policy, or a
    path the prediction lacks), read from the logged JSON text: an integer keeps its digits (orjson made
    one beyond 64 bits a float, which no outcome key matched, review finding)."""
    if policy.joins_on_record_id:
        return None
    pairs = {}
    for path in policy.join_on:
        head, *names = path.split(".")
        text = logged.get(head)
        try:
            node: Any = json.loads(text, parse_int=str) if isinstance(text, str) else None
        except ValueError:
            return None
        for name in names:
            node = node.get(name) if isinstance(node, dict) else None
        if node is None or isinstance(node, dict | list):
            return None
        pairs[path] = node if isinstance(node, str) else orjson.dumps(node).decode()
    return pairs
