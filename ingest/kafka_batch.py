"""Messages gathered between two commits, turned into the parser's Arrow input table in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ingest.reader import DEFAULT_MAX_LINE_BYTES, HEAD_BYTES

UTC_US = pa.timestamp("us", tz="UTC")

_MAX_MS = (2**63 - 1) // 1000
"""The largest Kafka timestamp (ms) whose microseconds fit in int64."""


class KafkaMessage(Protocol):
    """The part of `confluent_kafka.Message` a batch reads (a seam for the real message type)."""

    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class PendingBatch:
    """Values, partitions, offsets and timestamps of consumed messages, held as plain lists.

    Only list appends happen per message; everything else is done once per batch in Arrow.
    """

    values: list[bytes | None] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    value_bytes: int = 0
    """The bytes of every gathered value: a batch is committed before they pass the byte limit."""

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, messages: Sequence[KafkaMessage]) -> None:
        """Add messages that carry no error (the caller removed error events)."""
        values = [m.value() for m in messages]
        self.values.extend(values)
        self.value_bytes += sum(len(v) for v in values if v is not None)
        self.partitions.extend([m.partition() for m in messages])  # type: ignore[misc]
        self.offsets.extend([m.offset() for m in messages])  # type: ignore[misc]
        self.timestamps.extend([m.timestamp()[1] for m in messages])

    def clear(self) -> None:
        """Forget every gathered message (after a commit, or when partitions were lost)."""
        self.values.clear()
        self.partitions.clear()
        self.offsets.clear()
        self.timestamps.clear()
        self.value_bytes = 0

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the messages of `partitions` (they were re-seeked or taken away); returns how many."""
        keep = [i for i, p in enumerate(self.partitions) if p not in partitions]
        dropped = len(self.partitions) - len(keep)
        if dropped:
            self.values = [self.values[i] for i in keep]
            self.partitions = [self.partitions[i] for i in keep]
            self.offsets = [self.offsets[i] for i in keep]
            self.timestamps = [self.timestamps[i] for i in keep]
            self.value_bytes = sum(len(v) for v in self.values if v is not None)
        return dropped

    def ends(self) -> dict[int, int]:
        """Per partition, the last offset seen + 1: offsets can have gaps, so never a message count."""
        if not self.offsets:
            return {}
        grouped = (
            pa.table({"p": pa.array(self.partitions, pa.int32()), "o": pa.array(self.offsets, pa.int64())})
            .group_by("p")
            .aggregate([("o", "max")])
        )
        return {
            int(p): int(o) + 1
            for p, o in zip(grouped["p"].to_pylist(), grouped["o_max"].to_pylist(), strict=True)
        }


@dataclass(frozen=True)
class LineTable:
    """The parser's input for one batch, and how many tombstones (null values) were left out."""

    lines: pa.Table
    tombstones: int


def build_lines(
    batch: PendingBatch, source_names: dict[int, str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> LineTable:
    """The parser input table: line, source ("<topic>/<partition>"), source_position, line_bytes, fallback_ts.

    A tombstone (null value) carries no event: it is left out and counted, and its offset still
    counts toward the partition's position. `fallback_ts` is the message timestamp (milliseconds;
    -1 when the producer set none, which becomes null). A value longer than `max_line_bytes` keeps
    only its head and its full length in `line_bytes`: the parser quarantines it exactly as it does an
    over-long line of a log file (it used to be parsed whole, whatever `ingest.max_line_bytes` said).
    """
    values = pa.array(batch.values, pa.binary())
    partitions = pa.array(batch.partitions, pa.int32())
    offsets = pa.array(batch.offsets, pa.int64())
    stamps = pa.array(batch.timestamps, pa.int64())
    tombstones = values.null_count
    if tombstones:
        present = pc.is_valid(values)
        values, partitions, offsets, stamps = (
            pc.filter(values, present),
            pc.filter(partitions, present),
            pc.filter(offsets, present),
            pc.filter(stamps, present),
        )
    lengths = pc.binary_length(values).cast(pa.int64())
    if pc.any(pc.greater(lengths, max_line_bytes)).as_py():
        head = pc.binary_slice(values, 0, min(HEAD_BYTES, max_line_bytes))
        values = pc.if_else(pc.greater(lengths, max_line_bytes), head, values)
    known = sorted(source_names)
    names = pa.array([source_names[p] for p in known], pa.string())
    index = pc.index_in(partitions, value_set=pa.array(known, pa.int32()))
    # clamped first: a stamp past int64 microseconds wrapped round to 1970 and was stored as a record of
    # that day; clamped, it is quarantined as out of range like any other (review finding)
    micros = pc.multiply(pc.min_element_wise(stamps, pa.scalar(_MAX_MS, pa.int64())), 1000)
    fallback = pc.if_else(pc.less(stamps, 0), pa.scalar(None, pa.int64()), micros).cast(UTC_US)
    lines = pa.table(
        {
            "line": values,
            "source": pc.take(names, index),
            "source_position": offsets,
            "line_bytes": lengths,
            "fallback_ts": fallback,
        }
    )
    return LineTable(lines=lines, tombstones=tombstones)
