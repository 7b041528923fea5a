"""Arrow schemas of the Delta tables: the single definition every writer and view relies on."""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

PREDICTIONS = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("ts", UTC_TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("service_id", pa.string()),
        pa.field("endpoint_id", pa.string()),
        pa.field("generation", pa.string()),
        pa.field("msg_type", pa.string()),
        pa.field("features", pa.string()),
        pa.field("context", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("prediction_value", pa.float64()),
        pa.field("probas", pa.map_(pa.string(), pa.float64())),
        pa.field("proba_percentile", pa.int32()),
        pa.field("ignored", pa.bool_()),
        pa.field("ignore_reason", pa.string()),
        pa.field("timing", pa.string()),
        pa.field("extra", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_position", pa.int64(), nullable=False),
        pa.field("ingested_at", UTC_TS, nullable=False),
    ]
)
"""One row per predicted record: a batch event is exploded into one row per item, in order."""

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_position", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),
        pa.field("raw_bytes", pa.int64(), nullable=False),
        pa.field("ingested_at", UTC_TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
    ]
)
"""One row per input line that could not be used: `raw` is cut at 64 KiB, `raw_bytes` is its full size.
`day` is the UTC day it was ingested (a bad line has no trustworthy timestamp of its own)."""

OUTCOMES = pa.schema(
    [
        pa.field("outcome_id", pa.string(), nullable=False),
        pa.field("record_id", pa.string()),
        pa.field("key", pa.string()),
        pa.field("service_id", pa.string()),
        pa.field("endpoint_id", pa.string()),
        pa.field("outcome_type", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("value_number", pa.float64()),
        pa.field("value_json", pa.string(), nullable=False),
        pa.field("occurred_at", UTC_TS, nullable=False),
        pa.field("received_at", UTC_TS, nullable=False),
        pa.field("attributes", pa.string()),
        pa.field("key_id", pa.string()),
        pa.field("intake_seq", pa.int64(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
    ]
)
"""One row per acknowledged outcome event (append-only; corrections are new events).
`key` is canonical JSON of the target's {path: value} pairs with sorted paths, NULL when the target is
`record_id`; `value` is the value as text (true/false for booleans), `value_number` its numeric form
(booleans as 1/0), `value_json` the value exactly as JSON; `day` is the UTC day it was received;
`intake_seq` is its sequence number in the intake log (the flusher's exactly-once position)."""

TABLES: dict[str, pa.Schema] = {
    "predictions": PREDICTIONS,
    "quarantine": QUARANTINE,
    "outcomes": OUTCOMES,
}
