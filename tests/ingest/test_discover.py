"""Tests of log discovery: which names count, rotated files oldest first, clear errors for bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.discover import classify, discover, in_scope, list_logs
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


@pytest.mark.parametrize(
    ("name", "rotation", "gzipped"),
    [
        # logrotate's dateext (review finding: not found, so their unread lines were lost)
        ("queries.log-20261125", (0, "20261125", 0), False),
        ("queries.log-20261125.gz", (0, "20261125", 0), True),
        ("queries.log-2026112513", (0, "2026112513", 0), False),
        ("queries.log.2026-11-25", (0, "20261125", 0), False),
        ("queries.log.2026-11-25-13", (0, "2026112513", 0), False),
        # log4j monthly, weekly and half-daily, logrotate to the second and with %s (review finding:
        # not found, so their unread lines were lost)
        ("queries.log.2026-11", (0, "202611", 0), False),
        ("queries.log.2026-47", (0, "202647", 0), False),
        ("queries.log.2026-11-25-AM", (0, "202611250", 0), False),
        ("queries.log.2026-11-25-pm", (0, "202611251", 0), False),
        ("queries.log-20261125093000", (0, "20261125093000", 0), False),
        ("queries.log-20261125-1764028800.gz", (0, "202611251764028800", 0), True),
        ("queries.log.12", (1, "", -12), False),
        # digits alone after a dot are a date only as before (8, 10 or 12 of them): these stay numbered
        ("queries.log.111111", (1, "", -111111), False),
        ("queries.log.11111111111111", (1, "", -11111111111111), False),
        ("queries.log.20261125", (0, "20261125", 0), False),
        ("a\nb.log", (2, "", 0), False),  # a newline in a name
    ],
)
def test_rotated_names(name: str, rotation: tuple[int, str, int], gzipped: bool) -> None:
    found = classify(Path(name))
    assert found is not None and (found.rotation, found.gzipped) == (rotation, gzipped)


@pytest.mark.parametrize(
    "name", ["queries.log\n", "queries.log-1", "queries.log.tmp", "queries.log-2026", "queries.log.bak"]
)
def test_names_that_are_not_logs(name: str) -> None:
    assert classify(Path(name)) is None


def test_dateext_and_dated_files_sort_by_date_together(tmp_path: Path) -> None:
    _touch(tmp_path, "q.log", "q.log-20261126.gz", "q.log.2026-11-25", "q.log-20261124")
    assert _names(tmp_path, discover([tmp_path])) == [
        "q.log-20261124",
        "q.log.2026-11-25",
        "q.log-20261126.gz",
        "q.log",
    ]


def test_a_symlinked_folder_is_searched_once_and_a_loop_ends(tmp_path: Path) -> None:
    # run/api-queries -> /bigdisk/api-queries was skipped without a word (review finding)
    _touch(tmp_path / "bigdisk", "api.log")
    _touch(tmp_path / "run", "audit.log")
    (tmp_path / "run" / "api-queries").symlink_to(tmp_path / "bigdisk")
    (tmp_path / "bigdisk" / "up").symlink_to(tmp_path / "run")  # a loop back up
    found = _names(tmp_path / "run", discover([tmp_path / "run"]))
    assert found == ["api-queries/api.log", "audit.log"]


def test_a_path_that_is_not_a_file_or_folder_is_a_source_error(tmp_path: Path) -> None:
    fifo = tmp_path / "queries.log"
    os.mkfifo(fifo)  # opening it to look for gzip's magic bytes waited forever
    with pytest.raises(SourceError, match="is not a regular file or a folder"):
        discover([fifo])


def test_a_live_log_named_alone_brings_its_rotated_files(tmp_path: Path) -> None:
    _touch(
        tmp_path, "queries.log", "queries.log.1", "queries.log-20261125.gz", "other.log.1", "queries.log.tmp"
    )
    found = discover([tmp_path / "queries.log"])
    assert _names(tmp_path, found) == ["queries.log-20261125.gz", "queries.log.1", "queries.log"]
    rotated_alone = discover([tmp_path / "queries.log.1"])  # a rotated file named alone is just that file
    assert _names(tmp_path, rotated_alone) == ["queries.log.1"]


def test_half_days_sort_morning_first(tmp_path: Path) -> None:
    _touch(tmp_path, "q.log", "q.log.2026-11-25-PM", "q.log.2026-11-26-AM", "q.log.2026-11-25-AM")
    assert _names(tmp_path, discover([tmp_path])) == [
        "q.log.2026-11-25-AM",
        "q.log.2026-11-25-PM",
        "q.log.2026-11-26-AM",
        "q.log",
    ]


def test_a_live_log_named_through_a_link_brings_the_rotated_files_beside_its_target(tmp_path: Path) -> None:
    _touch(tmp_path / "real", "queries.log", "queries.log.1", "queries.log.2")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "queries.log").symlink_to(tmp_path / "real" / "queries.log")
    found = discover([tmp_path / "link" / "queries.log"])
    assert _names(tmp_path, found) == ["real/queries.log.2", "real/queries.log.1", "link/queries.log"]
    assert in_scope(tmp_path / "real" / "queries.log.5", [tmp_path / "link" / "queries.log"])
    assert not in_scope(tmp_path / "real" / "other.log.1", [tmp_path / "link" / "queries.log"])


def test_a_folder_that_cannot_be_listed_still_gives_the_live_log_named_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mode 0711: its files open, its listing does not. The live log used to be read; looking for its
    # rotated files made every scan fail (review finding). Root ignores modes: the refusal is simulated.
    _touch(tmp_path / "real", "queries.log", "queries.log.1")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "queries.log").symlink_to(tmp_path / "real" / "queries.log")
    listdir = os.listdir

    def refuse(path: object = ".") -> list[str]:
        if Path(str(path)) == tmp_path / "real":
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(os, "listdir", refuse)
    for named in (tmp_path / "link" / "queries.log", tmp_path / "real" / "queries.log"):
        listing = list_logs([named])
        assert [f.path for f in listing.logs] == [named]
        assert listing.skipped == [(tmp_path / "real", "Permission denied")]
