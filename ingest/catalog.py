"""Hints about files seen before (last path, size, device, inode), kept in `<root>/state/files.json`.

The catalog is not authoritative: positions live in the predictions table's application
transactions. It only serves to notice bytes that disappeared before they could be read (a file
truncated, or deleted before it was read to its end) and to skip unchanged gzip files quickly.
A missing or unreadable catalog costs those reports, never a record.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import StorageError

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class FileHint:
    """What was last seen of one fingerprint."""

    path: str
    dev: int
    ino: int
    size: int
    """The largest size seen since the last loss report (decompressed bytes)."""
    position: int
    """The committed position when last seen (a copy of the table's, for reports only)."""
    truncated_to: int | None = None
    """The size at which an in-place truncation below `position` was reported (so it is reported once)."""


def load_catalog(path: Path) -> dict[str, FileHint]:
    """The hints stored at `path` by fingerprint; empty (with a warning) when unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != VERSION:
            raise ValueError(f"unknown version {raw.get('version')!r}")
        return {fp: FileHint(**hint) for fp, hint in raw["files"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring unreadable file catalog %s (%s); lost-byte reports start afresh", path, exc)
        return {}


def save_catalog(path: Path, hints: dict[str, FileHint]) -> None:
    """Write the hints atomically: a temporary file beside the target, fsync, then os.replace."""
    payload = {"version": VERSION, "files": {fp: asdict(h) for fp, h in sorted(hints.items())}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: two runs on one root must not write into each other's file.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic within one file system; tmp sits beside path for that reason
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write file catalog {path}: {exc.strerror}") from exc
