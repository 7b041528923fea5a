"""Factories of DSS query-log lines (envelopes A, B, C and bare messages) for tests across the suite."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa

Envelope = Literal["A", "B", "C", "bare"]

DROP: Any = object()
"""Pass as an override value to remove that key from the message (or envelope)."""

DEFAULT_TS = datetime(2026, 3, 2, 9, 15, 4, 112000, tzinfo=UTC)
"""The instant every factory line is stamped with unless told otherwise."""


def make_message(**overrides: Any) -> dict[str, Any]:
    """A single prediction-query message (the `%m` of the logger); `DROP` removes a key."""
    message: dict[str, Any] = {
        "msgType": "prediction-query",
        "serviceId": "churn",
        "endpointId": "predict",
        "serviceGenerationId": "v4",
        "features": {"customer_id": "C-1001", "tenure_months": 14, "plan": "pro", "monthly_spend": 49.9},
        "context": {"customer_id": "C-1001"},
        "result": {"prediction": "churn", "probas": {"churn": 0.71, "stay": 0.29}, "probaPercentile": 88},
        "timing": {"preProcessing": 91, "wait": 12, "prediction": 18211, "postProcessing": 14},
    }
    return _apply(message, overrides)


def make_batch_message(n: int = 2, **overrides: Any) -> dict[str, Any]:
    """A predict-multi message holding `items` and `results` arrays of length `n`."""
    items = [
        {"features": {"customer_id": f"C-{i}", "tenure_months": i}, "context": {"customer_id": f"C-{i}"}}
        for i in range(n)
    ]
    results = [
        {
            "prediction": "stay" if i % 2 else "churn",
            "probas": {"churn": 0.5 + i / 100, "stay": 0.5 - i / 100},
        }
        for i in range(n)
    ]
    message = make_message(features=DROP, context=DROP, result=DROP, items=items, results=results)
    return _apply(message, overrides)


def format_timestamp(envelope: Envelope, ts: datetime, tz: str = "UTC") -> str:
    """`ts` as the envelope writes it: A in local time of `tz` with a literal Z, others ISO with offset."""
    local = ts.astimezone(ZoneInfo(tz))
    if envelope == "A":
        return local.strftime("%Y/%m/%d-%H:%M:%S.") + f"{local.microsecond // 1000:03d}Z"
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" + local.strftime("%z")


def make_line(
    message: Any,
    envelope: Envelope = "A",
    *,
    ts: datetime = DEFAULT_TS,
    tz: str = "UTC",
    timestamp: Any = None,
    logger: str | None = None,
    topic: Any = "apinode-query",
    newline: str = "",
    **envelope_overrides: Any,
) -> bytes:
    """One log line carrying `message` (a dict, or raw text for envelope A) in `envelope`.

    `timestamp` replaces the formatted timestamp text (DROP removes it); `topic` is used by B only.
    """
    stamp = format_timestamp(envelope, ts, tz) if timestamp is None else timestamp
    if envelope == "A":
        body = message if isinstance(message, str) else json.dumps(message)
        head = "" if stamp is DROP else f'"timestamp" : "{stamp}", '
        text = (
            "{" + head + f'"logger": "{logger or "dku.apinode.audit.queries"}", "severity" : "INFO", '
            f'"message" : {body}' + "}"
        )
        if envelope_overrides:
            raise ValueError("envelope A has a fixed layout: no envelope overrides")
    elif envelope == "B":
        record: dict[str, Any] = {
            "severity": "INFO",
            "logger": logger or "dku.audit.apinode-query",
            "message": message,
            "mdc": {"apiKey": "k-1"},
            "callTime": 28,
            "timestamp": stamp,
        }
        record = _apply(record, {"topic": topic, "timestamp": stamp, **envelope_overrides})
        text = json.dumps(record, separators=(",", ":"))
    elif envelope == "C":
        record = {"clientEvent": message, "origAddress": "10.1.0.12"}
        text = json.dumps(_apply(record, {"serverTimestamp": stamp, **envelope_overrides}))
    else:
        record = dict(message) if isinstance(message, dict) else message
        if isinstance(record, dict) and timestamp is not DROP:
            record = {"timestamp": stamp, **record}
        text = json.dumps(record)
    return text.encode() + newline.encode()


def make_query_line(envelope: Envelope = "A", **overrides: Any) -> bytes:
    """A prediction-query line; keyword arguments override message keys (`DROP` removes one).

    Envelope keywords (`ts`, `tz`, `timestamp`, `logger`, `topic`, `newline`) go to `make_line`.
    """
    line_keys = {"ts", "tz", "timestamp", "logger", "topic", "newline"}
    line_args = {k: v for k, v in overrides.items() if k in line_keys}
    message_args = {k: v for k, v in overrides.items() if k not in line_keys}
    return make_line(make_message(**message_args), envelope, **line_args)


def lines_table(
    lines: list[bytes],
    *,
    source: str = "queries.log",
    positions: list[int] | None = None,
    line_bytes: list[int] | None = None,
    fallback_ts: list[datetime | None] | None = None,
) -> pa.Table:
    """The parser's input table for `lines`; positions default to byte offsets as a file reader gives."""
    if positions is None:
        positions, offset = [], 0
        for line in lines:
            positions.append(offset)
            offset += len(line)
    columns: dict[str, pa.Array] = {
        "line": pa.array(lines, pa.binary()),
        "source": pa.array([source] * len(lines), pa.string()),
        "source_position": pa.array(positions, pa.int64()),
        "line_bytes": pa.array(line_bytes or [len(x) for x in lines], pa.int64()),
    }
    if fallback_ts is not None:
        columns["fallback_ts"] = pa.array(fallback_ts, pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out
