"""Read a log file from a byte position into Arrow blocks of complete lines, in large binary chunks.

Lines are split with numpy over chunks of bytes and handed on as zero-copy `pa.BinaryArray`s (each
line keeps its `\\n`). A line longer than `max_line_bytes` is never joined in memory: its first
`HEAD_BYTES` are kept, the rest is counted while it is skipped, and the block reports its full length
in `line_bytes` so the parser quarantines it. Memory per reader is bounded by about
`max_line_bytes + chunk_bytes` whatever the line lengths are.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from service.errors import SourceError

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""The longest line (or Kafka value) parsed; a longer one is quarantined with its head kept."""

HEAD_BYTES = 64 * 1024
"""How much of an over-long line is kept (the quarantine table's `raw` holds at most this)."""

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024

BOM = b"\xef\xbb\xbf"
"""A UTF-8 byte-order mark: skipped at the start of a file (a log saved by a Windows editor has one)."""

Stream = io.BufferedIOBase | io.RawIOBase
"""An open log: a plain file (unbuffered) or a gzip file (decompressed on the fly)."""

log = logging.getLogger(__name__)


def open_log(path: Path, *, gzipped: bool) -> Stream:
    """Open `path` for binary reading of its (decompressed) content; SourceError when it cannot be."""
    try:
        if gzipped:
            return gzip.open(path, "rb")
        return path.open("rb", buffering=0)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def gzip_size_hint(path: Path) -> int | None:
    """The decompressed size modulo 2**32 stored in a gzip file's trailer (RFC 1952 ISIZE), if readable."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            if fh.tell() < 18:  # smallest gzip member: 10-byte header + empty deflate + 8-byte trailer
                return None
            fh.seek(-4, 2)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


@dataclass(frozen=True)
class LineBlock:
    """Complete lines read from one file: the parser's `line`, `source_position` and `line_bytes`."""

    lines: pa.BinaryArray
    positions: np.ndarray
    line_bytes: np.ndarray
    end: int
    """The position right after the last line of the block: where reading resumes."""
    consumed: int
    """Bytes of the file this block covers (for progress), including skipped over-long bytes."""

    @classmethod
    def empty(cls, end: int, consumed: int) -> LineBlock:
        """No lines, only a position: bytes skipped up to `end` (their position is committed anyway)."""
        return cls(pa.array([], pa.binary()), np.empty(0, np.int64), np.empty(0, np.int64), end, consumed)


class LineReader:
    """Reads complete lines from `stream`, which is positioned at byte `start` of the file.

    With `final=True` (a rotated or gzipped file, which never grows) a last line without a newline is
    complete; otherwise it is left for the next run and `end` stops at its start. Each read takes at
    most `max_line_bytes + 1` bytes together with the carried partial line, so a line held whole is
    never over-long: one that is gets skipped chunk by chunk by `_skip`.
    """

    def __init__(
        self,
        stream: Stream,
        start: int,
        *,
        final: bool,
        max_line_bytes: int,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        name: str = "",
    ) -> None:
        self._stream = stream
        self._final = final
        self._max = max_line_bytes
        self._chunk = max(1, min(chunk_bytes, max_line_bytes))
        self._name = name
        self._carry: bytes = b""
        self._carry_pos = start
        self._eof = False
        self.end = start
        """The next position to read: right after the last complete line handed out."""
        self.broken: str | None = None
        """Why reading stopped early (a gzip file cut short or corrupt), or None."""

    def blocks(self) -> Iterator[LineBlock]:
        """Yield blocks of complete lines until the end of the file."""
        while not self._eof:
            data = self._read()
            if data is None:
                break
            arr = np.frombuffer(data, dtype=np.uint8)
            newlines = np.flatnonzero(arr == 10)
            if newlines.size:
                yield self._lines(data, newlines)
            elif len(data) > self._max:
                block = self._skip(data)
                if block is not None:
                    yield block
            else:
                self._carry = bytes(data)
        tail = self._tail()
        if tail is not None:
            yield tail

    def _read(self) -> bytearray | None:
        """The carry followed by the next chunk (at most max_line_bytes + 1 bytes), None at the end."""
        size = min(self._chunk, self._max + 1 - len(self._carry))
        buf = bytearray(len(self._carry) + size)
        buf[: len(self._carry)] = self._carry
        view = memoryview(buf)[len(self._carry) :]
        try:
            got = self._stream.readinto(view) or 0
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            self.broken = f"{self._name}: compressed data ends early or is corrupt ({exc})"
            got = 0
        except OSError as exc:
            raise SourceError(f"cannot read {self._name}: {exc.strerror or exc}") from exc
        finally:
            view.release()
        if not got:
            self._eof = True
            # Lines left in the carry after an over-long line still need splitting.
            return bytearray(self._carry) if b"\n" in self._carry else None
        if got < size:
            del buf[len(self._carry) + got :]
        return buf

    def _read_more(self) -> bytes:
        try:
            chunk = self._stream.read(self._chunk) or b""
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            self.broken = f"{self._name}: compressed data ends early or is corrupt ({exc})"
            chunk = b""
        except OSError as exc:
            raise SourceError(f"cannot read {self._name}: {exc.strerror or exc}") from exc
        if not chunk:
            self._eof = True
        return chunk

    def _lines(self, data: bytearray, newlines: np.ndarray) -> LineBlock:
        offsets = np.empty(newlines.size + 1, dtype=np.int32)
        start = self._carry_pos
        # a BOM is not part of the first line: kept, it sent the line to quarantine as unparsable
        offsets[0] = len(BOM) if start == 0 and data.startswith(BOM) else 0
        offsets[1:] = newlines + 1
        last = int(offsets[-1])
        self._carry = bytes(data[last:])
        self._carry_pos = start + last
        self.end = self._carry_pos
        count = newlines.size
        lines = pa.BinaryArray.from_buffers(
            pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        sizes = np.diff(offsets).astype(np.int64)
        positions = offsets[:-1].astype(np.int64) + start
        return LineBlock(lines, positions, sizes, self.end, last)

    def _skip(self, data: bytearray) -> LineBlock | None:
        """Pass over an over-long line without joining it: keep its head, count its length."""
        start = self._carry_pos
        head = bytes(data[:HEAD_BYTES])
        size = len(data)
        self._carry = b""
        while True:
            chunk = self._read_more()
            if not chunk:
                if self._final and not self.broken:
                    self._carry_pos = start + size
                    return self._single(head, start, size)
                return None  # still being written: the whole line is read again next run
            newline = chunk.find(b"\n")
            if newline >= 0:
                size += newline + 1
                self._carry = chunk[newline + 1 :]
                self._carry_pos = start + size
                return self._single(head, start, size)
            size += len(chunk)

    def _single(self, head: bytes, start: int, size: int) -> LineBlock:
        self.end = start + size
        lines = pa.array([head], pa.binary())
        assert isinstance(lines, pa.BinaryArray)
        positions = np.array([start], dtype=np.int64)
        return LineBlock(lines, positions, np.array([size], dtype=np.int64), self.end, size)

    def _tail(self) -> LineBlock | None:
        """The last line without a newline: complete in a final file, else left for the next run."""
        if not self._carry or not self._final or self.broken:
            return None
        data = bytes(self._carry)
        start = self._carry_pos
        self._carry = b""
        self._carry_pos = start + len(data)
        bom = len(BOM) if start == 0 and data.startswith(BOM) else 0
        block = self._single(data[bom:], start + bom, len(data) - bom)
        return replace(block, consumed=len(data))
