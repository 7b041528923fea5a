"""Tests of the line reader: chunk boundaries, partial last lines, over-long lines, gzip streams."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from ingest.fingerprint import FileIdentity, Pending, identify
from ingest.reader import BOM, HEAD_BYTES, LineReader, gzip_size_hint, open_log


def _read(data: bytes, *, final: bool, max_line: int = 1000, chunk: int = 7, start: int = 0):
    stream = io.BytesIO(data)
    stream.seek(start)
    reader = LineReader(stream, start, final=final, max_line_bytes=max_line, chunk_bytes=chunk)
    rows = []
    for block in reader.blocks():
        rows += list(
            zip(block.lines.to_pylist(), block.positions.tolist(), block.line_bytes.tolist(), strict=True)
        )
    return rows, reader.end


@pytest.mark.parametrize("chunk", [1, 2, 5, 64, 10_000])
def test_lines_keep_their_offsets_whatever_the_chunk_size(chunk: int) -> None:
    data = b"first\nsecond line\n\nthird\n"
    rows, end = _read(data, final=False, chunk=chunk)
    assert rows == [(b"first\n", 0, 6), (b"second line\n", 6, 12), (b"\n", 18, 1), (b"third\n", 19, 6)]
    assert end == len(data)


@pytest.mark.parametrize("chunk", [1, 2, 4, 64])
def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_line(chunk: int) -> None:
    data = BOM + b"first\nsecond\n"
    assert _read(data, final=False, chunk=chunk) == ([(b"first\n", 3, 6), (b"second\n", 9, 7)], 16)
    # an unterminated only line of a final file, and the same bytes further into a file, where they stay
    assert _read(BOM + b"only", final=True, chunk=chunk) == ([(b"only", 3, 4)], 7)
    later = b"a\n" + BOM + b"b\n"
    assert _read(later, final=False, chunk=chunk)[0] == [(b"a\n", 0, 2), (BOM + b"b\n", 2, 5)]


def test_a_last_line_without_newline_waits_in_a_live_file_but_counts_in_a_final_one() -> None:
    data = b"a\nbb\ncc"
    assert _read(data, final=False) == ([(b"a\n", 0, 2), (b"bb\n", 2, 3)], 5)
    assert _read(data, final=True) == ([(b"a\n", 0, 2), (b"bb\n", 2, 3), (b"cc", 5, 2)], 7)


def test_reading_resumes_from_a_position() -> None:
    data = b"a\nbb\ncc\n"
    assert _read(data, final=False, start=2) == ([(b"bb\n", 2, 3), (b"cc\n", 5, 3)], 8)


@pytest.mark.parametrize("chunk", [3, 16, 4096])
def test_an_over_long_line_keeps_only_its_head_and_its_full_length(chunk: int) -> None:
    long_line = b"x" * 50 + b"\n"
    data = b"ok\n" + long_line + b"fine\n"
    rows, end = _read(data, final=False, max_line=20, chunk=chunk)
    # The head is what was read when the line proved too long: max_line + 1 bytes (64 KiB at most).
    assert rows == [(b"ok\n", 0, 3), (b"x" * 21, 3, 51), (b"fine\n", 54, 5)]
    assert end == len(data)


def test_a_line_at_the_limit_is_kept_whole_and_one_byte_more_is_cut() -> None:
    rows, _ = _read(b"y" * 20 + b"\n" + b"z" * 21 + b"\n", final=False, max_line=20, chunk=8)
    assert rows[0] == (b"y" * 20 + b"\n", 0, 21)
    assert rows[1] == (b"z" * 21, 21, 22)


class _Watched(io.BytesIO):
    """A stream that remembers the largest read it was asked for."""

    largest = 0

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        self.largest = max(self.largest, len(memoryview(buffer)))
        return super().readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        self.largest = max(self.largest, size or 0)
        return super().read(size)


def test_a_huge_line_is_never_held_whole() -> None:
    huge = b"{" + b"h" * (3 * 1024 * 1024) + b"}\n"
    stream = _Watched(b"before\n" + huge + b"after\n")
    reader = LineReader(stream, 0, final=False, max_line_bytes=256 * 1024, chunk_bytes=64 * 1024)
    rows = [r for b in reader.blocks() for r in zip(b.lines.to_pylist(), b.line_bytes.tolist(), strict=True)]
    assert [n for _, n in rows] == [7, len(huge), 6]
    assert rows[1][0] == huge[:HEAD_BYTES]
    assert stream.largest <= 256 * 1024 + 1


def test_an_over_long_last_line_waits_in_a_live_file() -> None:
    rows, end = _read(b"a\n" + b"q" * 40, final=False, max_line=10, chunk=4)
    assert (rows, end) == ([(b"a\n", 0, 2)], 2)
    rows, end = _read(b"a\n" + b"q" * 40, final=True, max_line=10, chunk=4)
    assert [r[1:] for r in rows] == [(0, 2), (2, 40)] and end == 42


def test_gzip_files_read_as_their_decompressed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "queries.log.1.gz"
    content = b"".join(f"line {i}\n".encode() for i in range(1000))
    path.write_bytes(gzip.compress(content))
    assert gzip_size_hint(path) == len(content)
    with open_log(path, gzipped=True) as stream:
        stream.seek(7 * 10)
        reader = LineReader(stream, 70, final=True, max_line_bytes=100, chunk_bytes=333)
        lines = [line for b in reader.blocks() for line in b.lines.to_pylist()]
    assert b"".join(lines) == content[70:]
    assert reader.end == len(content) and reader.broken is None


def test_a_cut_gzip_file_stops_at_its_last_complete_line_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "queries.log.1.gz"
    content = b"".join(f"line number {i} with some text\n".encode() for i in range(20_000))
    packed = gzip.compress(content)
    path.write_bytes(packed[: len(packed) // 2])
    with open_log(path, gzipped=True) as stream:
        reader = LineReader(stream, 0, final=True, max_line_bytes=1000, chunk_bytes=4096)
        lines = [line for b in reader.blocks() for line in b.lines.to_pylist()]
    assert reader.broken is not None and "ends early" in reader.broken
    assert lines and all(line.endswith(b"\n") for line in lines)
    assert b"".join(lines) == content[: reader.end]


def test_identity_follows_content_not_name(tmp_path: Path) -> None:
    plain = tmp_path / "queries.log"
    plain.write_bytes(b"the first line of it\nsecond\n")
    packed = tmp_path / "elsewhere.log.1.gz"
    packed.write_bytes(gzip.compress(b"the first line of it\nother content\n"))
    a = identify(plain, gzipped=False, final=False)
    b = identify(packed, gzipped=True, final=True)
    assert isinstance(a, FileIdentity) and isinstance(b, FileIdentity)
    assert a.fingerprint == b.fingerprint and a.app_id == f"file:{a.fingerprint}"
    assert (a.first_line_bytes, a.size) == (21, 28)
    other = tmp_path / "other.log"
    other.write_bytes(b"the first line of it!\n")
    c = identify(other, gzipped=False, final=False)
    assert isinstance(c, FileIdentity) and c.fingerprint != a.fingerprint


def test_blank_or_short_leading_lines_do_not_make_different_files_one(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    a.write_bytes(b"\n   \n# log\n" + b'{"timestamp": "2026-03-02T10:00:00Z", "n": 1}\n')
    b.write_bytes(b"\n   \n# log\n" + b'{"timestamp": "2026-03-02T10:00:00Z", "n": 2}\n')
    c.write_bytes(b"\n# log\n" + b'{"timestamp": "2026-03-02T10:00:00Z", "n": 1}\n')
    ids = [identify(p, gzipped=False, final=False) for p in (a, b, c)]
    assert all(isinstance(i, FileIdentity) for i in ids)
    fingerprints = [i.fingerprint for i in ids if isinstance(i, FileIdentity)]
    assert len(set(fingerprints)) == 3
    assert [i.first_line_bytes for i in ids if isinstance(i, FileIdentity)] == [57, 57, 53]
    short = tmp_path / "short.log"
    short.write_bytes(b"\n# log\n")
    assert identify(short, gzipped=False, final=False) == Pending("no complete significant first line yet")


def test_a_file_without_a_complete_first_line_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "queries.log"
    path.write_bytes(b"")
    assert identify(path, gzipped=False, final=False) == Pending("empty")
    path.write_bytes(b'{"partial": ')
    assert identify(path, gzipped=False, final=False) == Pending("no complete significant first line yet")
    final = identify(path, gzipped=False, final=True)
    assert isinstance(final, FileIdentity) and final.first_line_bytes == 12
    broken = tmp_path / "queries.log.2.gz"
    broken.write_bytes(b"not gzip at all\n")
    result = identify(broken, gzipped=True, final=True)
    assert isinstance(result, Pending) and result.corrupt
