"""A log file's identity: a hash of its first complete line, so renames, gzip and moves keep it."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ingest.reader import gzip_size_hint, open_log
from service.errors import SourceError

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FileIdentity:
    """Who a file is (its fingerprint) and what the file system says about it now (hints)."""

    fingerprint: str
    first_line_bytes: int
    """Length of the first line including its newline (or to the end of a final file)."""
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
    """The identity of the file at `path`, or Pending when it has no complete first line yet.

    The first line is hashed as it is read in 64 KiB pieces, so an over-long first line is never held
    whole. In a final file (rotated, never growing) the first line may end at the end of the file.
    Raises SourceError when the file cannot be read.
    """
    digest = hashlib.blake2b(digest_size=16)
    length = 0
    ended = False
    with open_log(path, gzipped=gzipped) as stream:
        try:
            stat = os.fstat(stream.fileno())  # of the file opened, even if the path is renamed meanwhile
            while True:
                piece = stream.read(_CHUNK)
                if not piece:
                    break
                newline = piece.find(b"\n")
                if newline >= 0:
                    digest.update(piece[:newline])
                    length += newline + 1
                    ended = True
                    break
                digest.update(piece)
                length += len(piece)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # A gzip file still being written, or not gzip at all: reported, tried again next run.
            return Pending(f"not a complete gzip file ({exc})", corrupt=True)
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if length == 0:
        return Pending("empty")
    if not (ended or final):
        return Pending("no complete first line yet")
    size = stat.st_size
    if gzipped:
        size = gzip_size_hint(path) or 0
    return FileIdentity(
        fingerprint=digest.hexdigest(), first_line_bytes=length, dev=stat.st_dev, ino=stat.st_ino, size=size
    )
