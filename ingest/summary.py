"""What one scan of `hindsight ingest files` did: counts for the summary line and `--format json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass
class IngestSummary:
    """What one scan did; `lost_bytes` counts bytes that disappeared before they could be read."""

    files: int = 0
    files_read: int = 0
    files_waiting: int = 0
    bytes_read: int = 0
    lines: int = 0
    records: int = 0
    days: set[date] = field(default_factory=set)
    skipped: int = 0
    quarantined: int = 0
    lost_bytes: int = 0
    truncations: int = 0
    commits: int = 0
    warnings: list[str] = field(default_factory=list)
    read_ids: set[str] = field(default_factory=set)
    """The files (by fingerprint) read from: --follow counts each once, not once per scan."""

    def add(self, other: IngestSummary) -> None:
        """Accumulate another scan (used by --follow)."""
        for name in ("bytes_read", "lines", "records", "skipped", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        # distinct files: a file read by 14 scans was "102 read" of "14 files" (review finding)
        self.read_ids |= other.read_ids
        self.files_read = len(self.read_ids)
        for name in ("lost_bytes", "truncations", "commits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files = max(self.files, other.files)
        self.files_waiting = other.files_waiting
        self.days |= other.days
        self.warnings.extend(other.warnings)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values (days as a count, first and last day)."""
        days = sorted(self.days)
        return {
            "files": self.files,
            "files_read": self.files_read,
            "files_waiting": self.files_waiting,
            "bytes_read": self.bytes_read,
            "lines": self.lines,
            "records": self.records,
            "days": len(days),
            "first_day": days[0].isoformat() if days else None,
            "last_day": days[-1].isoformat() if days else None,
            "skipped": self.skipped,
            "quarantined": self.quarantined,
            "lost_bytes": self.lost_bytes,
            "truncations": self.truncations,
            "commits": self.commits,
            "warnings": list(self.warnings),
        }

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        return (
            f"{self.files} files ({self.files_read} read, {self.files_waiting} waiting), "
            f"{self.records} records over {len(self.days)} days, {self.skipped} skipped, "
            f"{self.quarantined} quarantined, {self.lost_bytes} lost bytes"
        )
