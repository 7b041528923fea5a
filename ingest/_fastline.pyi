"""Type stub of the C extension `ingest._fastline` (source in ingest/fastline-c/fastline.c)."""

from typing import Any

from typing_extensions import Buffer

RECORD: int
SKIP: int
FALLBACK: int

def parse(
    data: Buffer, offsets: Buffer, first: int, n: int, eligible: Buffer, a_is_utc: bool, /
) -> dict[str, Any]:
    """Parse rows [first, first + n) of an Arrow binary/string array given by its data and int32 offsets
    buffers; `eligible` holds one byte per row (0: leave the row to SQL). Returns the column buffers
    and one status byte per row (RECORD, SKIP or FALLBACK)."""

def md5_hex(data: Buffer, /) -> str:
    """The 32 lowercase hex digits of MD5(data)."""
