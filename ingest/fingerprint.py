"""A log file's identity: a hash of its first significant line, so renames, gzip and moves keep it."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ingest.reader import Stream, gzip_size_hint, open_log
from service.errors import SourceError

_CHUNK = 64 * 1024
MIN_SIGNIFICANT_BYTES = 16
"""A line identifies a file only with at least this many bytes other than blanks: leading blank or
very short lines (a banner, an empty line) would make different files look the same, so they are
hashed together with the lines that follow, up to the first line long enough to tell files apart."""
_BLANKS = b" \t\r"


@dataclass(frozen=True)
class FileIdentity:
    """Who a file is (its fingerprint) and what the file system says about it now (hints)."""

    fingerprint: str
    first_line_bytes: int
    """Length of the identifying prefix: the leading lines up to and including the first significant
    one, with its newline (or to the end of a final file)."""
    dev: int
    ino: int
    size: int
    """Bytes on disk; for a gzip file, the decompressed size modulo 2**32 from its trailer, if any."""

    @property
    def app_id(self) -> str:
        """The Delta application-transaction id holding this file's position."""
        return f"file:{self.fingerprint}"


@dataclass(frozen=True)
class Pending:
    """A file that cannot be identified yet: no complete first line, or a gzip file not readable yet."""

    reason: str
    corrupt: bool = False


def identify(path: Path, *, gzipped: bool, final: bool) -> FileIdentity | Pending:
    """The identity of the file at `path`, or Pending when it has no complete significant line yet.

    The prefix up to the end of the first line with MIN_SIGNIFICANT_BYTES non-blank bytes is hashed as
    it is read in 64 KiB pieces, so an over-long line is never held whole. In a final file (rotated,
    never growing) the prefix may end at the end of the file. Raises SourceError when the file cannot
    be read.
    """
    with open_log(path, gzipped=gzipped) as stream:
        try:
            stat = os.fstat(stream.fileno())  # of the file opened, even if the path is renamed meanwhile
            fingerprint, length, ended = hash_prefix(stream)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # A gzip file still being written, or not gzip at all: reported, tried again next run.
            return Pending(f"not a complete gzip file ({exc})", corrupt=True)
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if length == 0:
        return Pending("empty")
    if not (ended or final):
        return Pending("no complete significant first line yet")
    size = stat.st_size
    if gzipped:
        size = gzip_size_hint(path) or 0
    return FileIdentity(
        fingerprint=fingerprint, first_line_bytes=length, dev=stat.st_dev, ino=stat.st_ino, size=size
    )


def hash_prefix(stream: Stream) -> tuple[str, int, bool]:
    """(fingerprint, prefix length, whether a significant line ended it) of `stream` read from where it
    stands (its start, for an identity). Reads 64 KiB pieces, so an over-long line is never held whole;
    raises what the stream raises (OSError, and EOFError / zlib.error / BadGzipFile for gzip)."""
    digest = hashlib.blake2b(digest_size=16)
    length = 0
    ended = False
    significant = 0  # non-blank bytes in the line being read
    while not ended:
        piece = stream.read(_CHUNK)
        if not piece:
            break
        start = 0
        while start < len(piece):
            newline = piece.find(b"\n", start)
            stop = len(piece) if newline < 0 else newline
            segment = piece[start:stop]
            significant += len(segment.translate(None, _BLANKS))
            if newline < 0:
                digest.update(segment)
                length += len(segment)
                break
            length += len(segment) + 1
            if significant >= MIN_SIGNIFICANT_BYTES:
                digest.update(segment)  # the identifying line, hashed without its newline
                ended = True
                break
            digest.update(segment + b"\n")  # a short line: part of the prefix
            significant = 0
            start = newline + 1
    return digest.hexdigest(), length, ended
