"""The record_id rule: md5 of the newline-stripped line bytes, `-<item>` appended for batch items.

The parser computes the same value in DuckDB (`md5(s)` over the stripped text); this module is the
reference used by tests and by anyone who needs the id of a known line without parsing it.
Byte-identical lines are one event: they get the same id whatever their source (a file line or a
Kafka value, with or without a trailing newline or carriage return).
"""

from __future__ import annotations

import hashlib


def normalise_line(line: bytes) -> bytes:
    """The bytes the id is computed from: the line without any trailing "\\n" / "\\r"."""
    return line.rstrip(b"\r\n")


def record_id(line: bytes, item: int | None = None) -> str:
    """The id of the record parsed from `line`; `item` is the index inside a batch event."""
    digest = hashlib.md5(normalise_line(line), usedforsecurity=False).hexdigest()
    return digest if item is None else f"{digest}-{item}"
