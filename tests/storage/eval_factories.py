"""Small factories for evaluation tests: prediction and outcome rows written into real Delta tables."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.commit import SourceBatch, commit_sources
from storage.layout import Layout
from storage.schemas import OUTCOMES, PREDICTIONS

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_batches = itertools.count()


def at(days: float = 0, hours: float = 0) -> dt.datetime:
    """A timestamp `days` and `hours` after T0."""
    return T0 + dt.timedelta(days=days, hours=hours)


def prediction(record_id: str, ts: dt.datetime, **overrides: Any) -> dict[str, Any]:
    """One predictions row; context/features may be given as dicts."""
    row: dict[str, Any] = {
        "record_id": record_id,
        "ts": ts,
        "day": ts.date(),
        "service_id": "fraud",
        "endpoint_id": "score",
        "generation": "g1",
        "msg_type": "prediction",
        "features": None,
        "context": None,
        "prediction": "OK",
        "prediction_value": None,
        "probas": None,
        "proba_percentile": None,
        "ignored": False,
        "ignore_reason": None,
        "timing": None,
        "extra": None,
        "source": "test",
        "source_position": 0,
        "ingested_at": ts,
    }
    row.update(overrides)
    for name in ("features", "context"):
        if isinstance(row[name], dict):
            row[name] = json.dumps(row[name])
    if isinstance(row["probas"], dict):
        row["probas"] = list(row["probas"].items())
    return row


def outcome(outcome_id: str, value: Any, occurred_at: dt.datetime, **overrides: Any) -> dict[str, Any]:
    """One outcomes row; `key` may be given as a dict (stored as canonical JSON, sorted paths)."""
    received_at = overrides.pop("received_at", occurred_at)
    row: dict[str, Any] = {
        "outcome_id": outcome_id,
        "record_id": None,
        "key": None,
        "service_id": None,
        "endpoint_id": None,
        "outcome_type": "label",
        "value": None if value is None else str(value),
        "value_number": float(value) if isinstance(value, int | float) else None,
        "value_json": json.dumps(value),
        "occurred_at": occurred_at,
        "received_at": received_at,
        "attributes": None,
        "key_id": None,
        "intake_seq": 0,
        "day": received_at.date(),
    }
    row.update(overrides)
    if isinstance(row["key"], dict):
        row["key"] = json.dumps(dict(sorted(row["key"].items())), separators=(",", ":"))
    return row


def _write(root: Path, name: str, schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> None:
    layout = Layout(root)
    n = next(_batches)
    positioned = [{**row, "source_position": i, "intake_seq": i} for i, row in enumerate(rows)]
    table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in positioned], schema=schema)
    commit_sources(
        layout.table(name),
        layout.lock_file(name),
        schema,
        [SourceBatch(f"test-{name}-{n}", table, len(rows))],
        position_column="intake_seq" if name == "outcomes" else "source_position",
    )


def write_predictions(root: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append prediction rows to `<root>/tables/predictions` in one commit."""
    _write(root, "predictions", PREDICTIONS, rows)


def write_outcomes(root: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append outcome rows to `<root>/tables/outcomes` in one commit."""
    _write(root, "outcomes", OUTCOMES, rows)
