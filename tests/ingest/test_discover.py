"""Tests of log discovery: which names count, rotated files oldest first, clear errors for bad paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.discover import classify, discover
from service.errors import SourceError


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x\n")


def _names(root: Path, found: list) -> list[str]:
    return [f.path.relative_to(root).as_posix() for f in found]


def test_rotated_files_come_oldest_first_then_the_live_file(tmp_path: Path) -> None:
    _touch(tmp_path, "queries.log", "queries.log.1", "queries.log.2", "queries.log.10", "queries.log.3.gz")
    found = discover([tmp_path])
    assert _names(tmp_path, found) == [
        "queries.log.10",
        "queries.log.3.gz",
        "queries.log.2",
        "queries.log.1",
        "queries.log",
    ]
    assert [f.live for f in found] == [False, False, False, False, True]


def test_dated_files_are_ordered_by_date_before_the_live_file(tmp_path: Path) -> None:
    _touch(tmp_path, "audit.log", "audit.log.2026-11-25.gz", "audit.log.2026-11-24", "audit.log.2026-02-28")
    assert _names(tmp_path, discover([tmp_path])) == [
        "audit.log.2026-02-28",
        "audit.log.2026-11-24",
        "audit.log.2026-11-25.gz",
        "audit.log",
    ]


def test_folders_are_searched_recursively_and_other_names_ignored(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "run/api-queries/queries.log",
        "run/audit/audit.log",
        "run/audit/audit.log.tmp",
        "run/audit/audit.log.1.tmp",
        "run/notes.txt",
        "run/queries.log.old",
        "run/backend.log.gz",
    )
    assert _names(tmp_path, discover([tmp_path])) == [
        "run/api-queries/queries.log",
        "run/audit/audit.log",
        "run/backend.log.gz",
    ]


def test_a_file_named_explicitly_is_taken_and_counted_once(tmp_path: Path) -> None:
    _touch(tmp_path, "events.json", "queries.log")
    found = discover([tmp_path / "events.json", tmp_path, tmp_path / "queries.log"])
    assert _names(tmp_path, found) == ["events.json", "queries.log"]


def test_gzipped_live_name_is_final(tmp_path: Path) -> None:
    log = classify(tmp_path / "queries.log.gz")
    assert log is not None
    assert (log.gzipped, log.live, log.base.name) == (True, False, "queries.log")
    assert classify(tmp_path / "queries.log.tmp") is None
    assert classify(tmp_path / "queries.txt") is None


def test_a_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        discover([tmp_path / "nope"])
