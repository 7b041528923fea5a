"""Tests of file ingestion on real files and real Delta tables: exactly once across renames, gzip,
moves, reruns, truncation and partial lines; losses reported; ordering and batching."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ingest import file_ingest
from ingest.catalog import load_catalog
from ingest.discover import SETTLE_SECONDS, Listing
from ingest.file_ingest import FileIngestor
from ingest.summary import IngestSummary
from service.errors import SourceError, StorageError
from storage import connect
from storage.layout import Layout
from tests.ingest.file_logs import expected, ids_in, qline, quarantine_rows, run_cli
from tests.ingest.lines import DEFAULT_TS, make_query_line


def _ingest(root: Path, *paths: Path, **options: int) -> IngestSummary:
    return FileIngestor(root, **options).run(list(paths))  # type: ignore[arg-type]


def _write(path: Path, numbers: range | list[int], *, mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as fh:
        for i in numbers:
            fh.write(qline(i))


def test_a_second_run_on_the_same_files_adds_nothing(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", range(5))
    first = _ingest(root, logs)
    second = _ingest(root, logs)
    assert ids_in(root) == expected(range(5))
    assert (first.records, first.days, first.files_read) == (5, {DEFAULT_TS.date()}, 1)
    assert (second.records, second.lines, second.commits, second.bytes_read) == (0, 0, 0, 0)


def test_appended_lines_are_read_from_the_committed_position(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", range(3))
    _ingest(root, logs)
    _write(logs / "queries.log", range(3, 7))
    summary = _ingest(root, logs)
    assert (summary.records, summary.lines) == (4, 4)
    assert ids_in(root) == expected(range(7))


def test_rotation_by_rename_neither_duplicates_nor_skips(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    _ingest(root, logs)
    _write(live, range(3, 5))  # written after the last run, before the rotation
    live.rename(logs / "queries.log.1")
    _write(live, range(5, 8))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(8))
    assert (summary.records, summary.lost_bytes) == (5, 0)


def test_gzipping_a_rotated_file_keeps_its_position(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(4))
    _ingest(root, logs)
    _write(live, range(4, 6))
    rotated = logs / "queries.log.1"
    live.rename(rotated)
    (logs / "queries.log.1.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    _write(live, range(6, 9))
    _ingest(root, logs)
    assert ids_in(root) == expected(range(9))
    again = _ingest(root, logs)
    assert (again.records, again.bytes_read) == (0, 0)


def test_a_plain_and_a_gzipped_copy_of_one_file_are_read_once(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log.1", range(4))
    (logs / "queries.log.1.gz").write_bytes(gzip.compress((logs / "queries.log.1").read_bytes()))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(4))
    assert summary.files == 2 and summary.files_read == 1


def test_a_moved_folder_is_recognised_by_content(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = tmp_path / "old" / "logs"
    _write(old / "queries.log", range(3))
    _write(old / "queries.log.1", range(100, 103))
    _ingest(root, old)
    new = tmp_path / "new" / "logs"
    shutil.move(str(old), str(new))
    _write(new / "queries.log", range(3, 5))
    summary = _ingest(root, new)
    assert summary.records == 2 and summary.lost_bytes == 0
    assert ids_in(root) == expected([*range(5), *range(100, 103)])


def test_a_partial_last_line_waits_until_it_is_complete(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(2))
    text = qline(2)
    with live.open("ab") as fh:
        fh.write(text[:40])
    assert _ingest(root, logs).records == 2
    with live.open("ab") as fh:
        fh.write(text[40:])
    assert _ingest(root, logs).records == 1
    assert ids_in(root) == expected(range(3))
    assert quarantine_rows(root) == []


def test_the_unterminated_last_line_of_a_rotated_file_is_complete(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    rotated = logs / "queries.log.1"
    _write(rotated, range(2))
    with rotated.open("ab") as fh:
        fh.write(qline(2).rstrip(b"\n"))
    # Just written: logrotate's copytruncate may still be copying into it, so the cut line waits.
    _ingest(root, logs)
    assert ids_in(root) == expected(range(2))
    settled = time.time() - SETTLE_SECONDS - 1
    os.utime(rotated, (settled, settled))
    _ingest(root, logs)
    assert ids_in(root) == expected(range(3))


def test_a_file_without_a_complete_first_line_is_left_for_later(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    live.parent.mkdir()
    live.write_bytes(qline(0)[:30])
    summary = _ingest(root, logs)
    assert (summary.files, summary.files_waiting, summary.records) == (1, 1, 0)
    live.write_bytes(qline(0) + qline(1))
    assert _ingest(root, logs).records == 2


def test_copytruncate_loses_nothing_when_the_copy_has_every_byte(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    _ingest(root, logs)
    _write(live, range(3, 5))
    shutil.copyfile(live, logs / "queries.log.1")
    with live.open("r+b") as fh:
        fh.truncate(0)
    _write(live, range(5, 7))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(7))
    assert (summary.lost_bytes, summary.truncations, summary.warnings) == (0, 1, [])


def test_truncation_reports_the_bytes_seen_but_never_read(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    partial = qline(3)[:50]
    with live.open("ab") as fh:
        fh.write(partial)  # seen by this run, not readable yet
    _ingest(root, logs)
    with live.open("r+b") as fh:
        fh.truncate(0)
    _write(live, range(10, 12))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected([0, 1, 2, 10, 11])
    assert (summary.lost_bytes, summary.truncations) == (50, 1)
    assert summary.warnings == [f"{live} was truncated with 50 bytes never read (they are lost)"]


def test_truncation_in_place_below_the_position_is_reported(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(4))
    _ingest(root, logs)
    size = live.stat().st_size
    keep = len(qline(0))
    with live.open("r+b") as fh:
        fh.truncate(keep)  # the first line (the identity) survives
    summary = _ingest(root, logs)
    assert summary.lost_bytes == size - keep and summary.truncations == 1
    assert "truncated in place" in summary.warnings[0]
    assert ids_in(root) == expected(range(4))


def test_a_file_deleted_before_it_was_read_to_its_end_is_reported(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(2))
    with live.open("ab") as fh:
        fh.write(b'{"half a line')
    _ingest(root, logs)
    live.unlink()
    summary = _ingest(root, logs)
    assert (summary.lost_bytes, summary.truncations) == (13, 0)
    assert summary.warnings == [f"{live} disappeared with 13 bytes never read (they are lost)"]
    assert _ingest(root, logs).lost_bytes == 0  # reported once


def test_an_over_long_line_is_quarantined_and_its_neighbours_kept(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    long_line = make_query_line("A", context={"transaction_id": "T-big", "pad": "p" * 5000}, newline="\n")
    _write(logs / "queries.log", [0])
    with (logs / "queries.log").open("ab") as fh:
        fh.write(long_line)
    _write(logs / "queries.log", [1])
    summary = _ingest(root, logs, max_line_bytes=2000)
    assert ids_in(root) == expected(range(2))
    rows = quarantine_rows(root)
    assert len(rows) == 1 and rows[0][0] == "queries.log" and rows[0][1] == len(qline(0))
    assert rows[0][3] == len(long_line)
    assert summary.quarantined == 1


def test_a_file_starting_with_a_byte_order_mark_loses_no_line_to_quarantine(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    (logs).mkdir()
    (logs / "queries.log").write_bytes(b"\xef\xbb\xbf" + qline(0) + qline(1))
    first = _ingest(root, logs)
    _write(logs / "queries.log", [2])
    second = _ingest(root, logs)
    assert ids_in(root) == expected(range(3))
    assert quarantine_rows(root) == []
    assert (first.records, second.records, second.lines) == (2, 1, 1)


def test_bad_lines_are_quarantined_once_even_when_read_again(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, [0])
    with live.open("ab") as fh:
        fh.write(b"this is not json\n")
    _write(live, [1])
    _ingest(root, logs)
    live.rename(logs / "queries.log.1")
    _ingest(root, logs)
    assert ids_in(root) == expected(range(2))
    assert [r[:2] for r in quarantine_rows(root)] == [("queries.log", len(qline(0)))]


def test_tmp_files_are_ignored(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", [0])
    _write(logs / "queries.log.tmp", [1])
    _write(logs / "queries.log.1.tmp", [2])
    summary = _ingest(root, logs)
    assert ids_in(root) == expected([0]) and summary.files == 1


@pytest.mark.parametrize("parse_threads", [1, 2])
def test_rotated_files_are_committed_oldest_first(tmp_path: Path, parse_threads: int) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", range(20, 22))
    _write(logs / "queries.log.1", range(10, 12))
    _write(logs / "queries.log.2", range(0, 2))
    _ingest(root, logs, batch_bytes=1, parse_threads=parse_threads)  # one commit per file
    table = DeltaTable(str(Layout(root).predictions))
    seen: list[str] = []
    for version in range(table.version() + 1):
        table.load_as_version(version)
        names = {
            Path(s).name for s in table.to_pyarrow_table(columns=["source"]).column("source").to_pylist()
        }
        seen += sorted(names - set(seen))
    assert seen == ["queries.log.2", "queries.log.1", "queries.log"]
    assert ids_in(root) == expected([0, 1, 10, 11, 20, 21])


def test_small_files_share_one_commit_and_positions_move_without_rows(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "a" / "queries.log", range(3))
    _write(logs / "b" / "queries.log", range(3, 6))
    other = logs / "audit" / "audit.log"
    other.parent.mkdir()
    other.write_bytes(b'{"severity":"INFO","logger":"dku.audit.generic","topic":"generic","message":{}}\n')
    summary = _ingest(root, logs)
    assert (summary.commits, summary.records, summary.skipped, summary.files_read) == (1, 6, 1, 3)
    again = _ingest(root, logs)
    assert (again.lines, again.commits) == (0, 0)


def test_the_catalog_is_only_a_hint(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", range(3))
    _ingest(root, logs)
    catalog = Layout(root).state / "files.json"
    assert json.loads(catalog.read_text())["version"] == 1
    catalog.write_text("{ not json")
    _write(logs / "queries.log", range(3, 4))
    assert _ingest(root, logs).records == 1
    catalog.unlink()
    assert _ingest(root, logs).records == 0
    assert ids_in(root) == expected(range(4))


def test_a_gzip_file_still_being_written_is_retried(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    logs.mkdir()
    content = b"".join(qline(i) for i in range(300))
    packed = gzip.compress(content)
    target = logs / "queries.log.1.gz"
    target.write_bytes(packed[: len(packed) * 2 // 3])
    first = _ingest(root, logs)
    assert first.warnings and "ends early" in first.warnings[0]
    target.write_bytes(packed)
    second = _ingest(root, logs)
    assert second.warnings == []
    assert ids_in(root) == expected(range(300))


def test_missing_paths_and_unwritable_roots_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        _ingest(tmp_path / "root", tmp_path / "missing")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    logs = tmp_path / "logs"
    _write(logs / "queries.log", [0])
    with pytest.raises(StorageError, match="cannot write under root"):
        _ingest(blocker / "root", logs)


def test_files_whose_first_line_is_blank_are_still_told_apart(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "queries.log", tmp_path / "b" / "queries.log"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"\n")
    _write(first, range(3))
    _ingest(tmp_path / "root", tmp_path / "a")
    _write(second, range(10, 15))
    summary = _ingest(tmp_path / "root", tmp_path / "a", tmp_path / "b")
    assert (summary.records, summary.lost_bytes) == (5, 0)
    assert ids_in(tmp_path / "root") == sorted(expected(range(3)) + expected(range(10, 15)))


def test_copytruncate_between_identifying_and_reading_loses_and_duplicates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # logrotate's copytruncate can run while a scan is busy with other files: the live file keeps its
    # inode but now holds new content. It must not be read from the old position.
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    _ingest(root, logs)
    _write(live, range(3, 6))  # not read yet
    identify = FileIngestor._identify

    def identify_then_copytruncate(self: FileIngestor, *args: object, **kwargs: object) -> object:
        result = identify(self, *args, **kwargs)  # type: ignore[arg-type]
        shutil.copyfile(live, logs / "queries.log.1")
        os.truncate(live, 0)
        _write(live, range(6, 12))  # longer than the old position
        return result

    monkeypatch.setattr(FileIngestor, "_identify", identify_then_copytruncate)
    _ingest(root, logs)
    monkeypatch.undo()
    assert ids_in(root) == expected(range(3))  # the changed file was left for the next scan
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(12))
    assert summary.lost_bytes == 0


def test_a_file_rewritten_below_its_position_is_reported_and_read_on(tmp_path: Path) -> None:
    # The live file loses its tail (its host crashed before the tail reached the disk) and the writer
    # appends again, past the committed position, before the next scan.
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(50))
    _ingest(root, logs)
    position = live.stat().st_size
    cut = sum(len(qline(i)) for i in range(40))
    os.truncate(live, cut)
    _write(live, range(100, 160))  # one digit longer than the lines they replace
    content = live.read_bytes()
    assert content[position - 1 : position] != b"\n"
    resume = content.index(b"\n", position) + 1
    first_read = next(i for i in range(100, 160) if cut + sum(len(qline(j)) for j in range(100, i)) == resume)
    summary = _ingest(root, logs)
    assert ids_in(root) == expected([*range(50), *range(first_read, 160)])
    assert (summary.truncations, summary.lost_bytes) == (1, resume - position)
    assert any("rewritten below its committed position" in w for w in summary.warnings)
    assert quarantine_rows(root) == []  # the cut line's tail is skipped, not quarantined as a fragment
    again = _ingest(root, logs)
    assert (again.records, again.truncations, again.lost_bytes, again.warnings) == (0, 0, 0, [])


def test_a_damaged_gzip_file_is_skipped_with_a_warning_and_the_others_are_read(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live, other = logs / "queries.log", logs / "other.log"
    _write(live, range(2000))  # large enough that its first line still decompresses when cut
    _write(other, range(10000, 10003))
    _ingest(root, logs)
    rotated = logs / "queries.log.1"
    live.rename(rotated)
    packed = gzip.compress(rotated.read_bytes())
    rotated.unlink()
    (logs / "queries.log.1.gz").write_bytes(packed[: len(packed) // 2])  # ends before the position
    _write(other, range(10003, 10006))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected([*range(2000), *range(10000, 10006)])
    assert any("cannot read" in w and "queries.log.1.gz up to byte" in w for w in summary.warnings)


def test_an_in_place_truncation_is_reported_once(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(10))
    _ingest(root, logs)
    os.truncate(live, live.stat().st_size // 2)
    first = _ingest(root, logs)
    with live.open("ab") as fh:
        fh.write(b"{")  # it may grow again, short of its old position: the same loss, not a new one
    later = [_ingest(root, logs) for _ in range(2)]
    assert (first.truncations, first.lost_bytes > 0) == (1, True)
    assert [(s.truncations, s.lost_bytes, s.warnings) for s in later] == [(0, 0, [])] * 2


def test_gzip_files_are_recognised_by_content_whatever_their_name(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    logs.mkdir()
    dated = logs / "queries.log-20261125.gz"  # logrotate's dateext, named on the command line
    dated.write_bytes(gzip.compress(b"".join(qline(i) for i in range(3))))
    unsuffixed = logs / "other.log.1"  # compressed without being renamed, found by the folder walk
    unsuffixed.write_bytes(gzip.compress(b"".join(qline(i) for i in range(10, 13))))
    first = _ingest(root, dated)
    second = _ingest(root, logs)
    assert ids_in(root) == expected([*range(3), *range(10, 13)])
    assert (first.quarantined, second.quarantined, second.lost_bytes) == (0, 0, 0)


def test_a_file_name_that_is_not_utf8_does_not_stop_the_scan(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    odd = logs / os.fsdecode(b"caf\xe9.log")
    _write(odd, range(2))
    _write(logs / "ok.log", range(5, 7))
    summary = _ingest(root, logs)
    assert summary.records == 4 and ids_in(root) == expected([0, 1, 5, 6])
    con = connect(root)
    try:
        sources = sorted(
            Path(s).name for (s,) in con.execute("SELECT DISTINCT source FROM predictions").fetchall()
        )
    finally:
        con.close()
    assert sources == ["caf\\xe9.log", "ok.log"]
    assert _ingest(root, logs).records == 0  # and it is found again by content on the next scan


def test_a_partial_plain_copy_beside_a_complete_gzip_is_no_loss(tmp_path: Path) -> None:
    # `gunzip queries.log.1.gz` in progress: the plain copy is shorter than the committed position.
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(10))
    _ingest(root, logs)
    rotated = logs / "queries.log.1"
    live.rename(rotated)
    content = rotated.read_bytes()
    (logs / "queries.log.1.gz").write_bytes(gzip.compress(content))
    rotated.write_bytes(content[: len(content) // 2])
    summary = _ingest(root, logs)
    assert (summary.records, summary.truncations, summary.lost_bytes, summary.warnings) == (0, 0, 0, [])
    assert ids_in(root) == expected(range(10))


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_rewrite_ending_at_the_skipped_line_is_reported_once(tmp_path: Path, gzipped: bool) -> None:
    # The rewritten content ends with the line that straddles the old position: nothing follows the
    # skipped bytes, so only their committed end keeps the next scans quiet. Gzipped: rotated and
    # compressed before the scan, which must notice the rewrite all the same.
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(50))
    _ingest(root, logs)
    position = live.stat().st_size
    os.truncate(live, sum(len(qline(i)) for i in range(40)))
    _write(live, range(100, 110))  # each one byte longer: the 10th ends 10 bytes past the position
    assert live.stat().st_size == position + 10
    if gzipped:
        rotated = logs / "queries.log.1.gz"
        rotated.write_bytes(gzip.compress(live.read_bytes()))
        live.unlink()
    first = _ingest(root, logs)
    later = [_ingest(root, logs) for _ in range(2)]
    assert (first.records, first.truncations, first.lost_bytes) == (0, 1, 10)
    assert quarantine_rows(root) == []
    assert [(s.truncations, s.lost_bytes, s.warnings) for s in later] == [(0, 0, [])] * 2
    assert ids_in(root) == expected(range(50))


def test_a_second_truncation_reports_only_the_new_loss(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(12))
    _ingest(root, logs)
    position = live.stat().st_size
    os.truncate(live, position // 2)
    first = _ingest(root, logs)
    os.truncate(live, position // 4)
    second = _ingest(root, logs)
    assert (first.lost_bytes, second.lost_bytes) == (position - position // 2, position // 2 - position // 4)
    assert first.lost_bytes + second.lost_bytes == position - position // 4


def test_a_name_that_would_collide_once_escaped_is_left_unread(tmp_path: Path) -> None:
    # `caf<0xE9>.log` is written `caf\xe9.log` in `source`, which is also the name of a real file here:
    # the two must not share a position (that re-read and duplicated rows).
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / os.fsdecode(b"caf\xe9.log"), range(5))
    _write(logs / "caf\\xe9.log", range(10, 15))
    summaries = [_ingest(root, logs) for _ in range(3)]
    assert ids_in(root) == expected(range(10, 15))
    assert all(any("rename one of them" in w for w in s.warnings) for s in summaries)


def test_warnings_about_a_non_utf8_name_print_in_the_json_summary(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    odd = logs / os.fsdecode(b"caf\xe9.log")
    _write(odd, range(6))
    assert run_cli(root, "ingest", "files", str(logs), "--format", "json").returncode == 0
    os.truncate(odd, odd.stat().st_size // 2)
    result = run_cli(root, "ingest", "files", str(logs), "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["truncations"] == 1 and summary["lost_bytes"] > 0
    assert any("caf\\xe9.log was truncated in place" in w for w in summary["warnings"])


@pytest.mark.parametrize("suffix", ["-20261125", "-20261125.gz", ".2026-11-25"])
def test_a_dateext_rotation_neither_duplicates_nor_skips(tmp_path: Path, suffix: str) -> None:
    # logrotate's dateext names (queries.log-20261125) were not found: the lines written after the
    # last scan and before the rotation were lost without a word (review finding)
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(10))
    _ingest(root, logs)
    _write(live, range(10, 25))
    rotated = logs / f"queries.log{suffix}"
    if suffix.endswith(".gz"):
        rotated.write_bytes(gzip.compress(live.read_bytes()))
        live.unlink()
    else:
        live.rename(rotated)
    _write(live, range(25, 30))
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(30))
    assert (summary.records, summary.lost_bytes, summary.warnings) == (20, 0, [])


def test_an_unreadable_file_waits_with_a_warning_and_the_others_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One unreadable file (permissions) stopped the whole scan, every scan (review finding). The test
    # runs as root, whom permissions do not stop, so the refusal is simulated where it is raised.
    logs, root = tmp_path / "logs", tmp_path / "root"
    locked, other = logs / "locked.log", logs / "other.log"
    _write(locked, range(3))
    _write(other, range(100, 103))
    real = file_ingest.identify

    def identify(path: Path, **kwargs: bool) -> object:
        if path == locked:
            raise SourceError(f"cannot read {path}: Permission denied")
        return real(path, **kwargs)

    monkeypatch.setattr(file_ingest, "identify", identify)
    summary = _ingest(root, logs)
    assert ids_in(root) == expected(range(100, 103))
    assert summary.warnings == [f"cannot read {locked}: Permission denied; skipped, tried again next run"]
    assert (summary.files_waiting, summary.lost_bytes) == (1, 0)
    monkeypatch.setattr(file_ingest, "identify", real)
    _ingest(root, logs)
    assert ids_in(root) == expected([*range(3), *range(100, 103)])


def test_a_known_file_that_turns_unreadable_is_not_called_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # it was "truncated with 40 bytes never read (they are lost)", and the next run read them
    logs, root = tmp_path / "logs", tmp_path / "root"
    locked = logs / "locked.log"
    _write(locked, range(3))
    with locked.open("ab") as fh:
        fh.write(qline(3)[:40])  # seen, not read
    _ingest(root, logs)
    with locked.open("ab") as fh:
        fh.write(qline(3)[40:])
    real = file_ingest.identify

    def identify(path: Path, **kwargs: bool) -> object:
        if path == locked:
            raise SourceError(f"cannot read {path}: Permission denied")
        return real(path, **kwargs)

    monkeypatch.setattr(file_ingest, "identify", identify)
    summary = _ingest(root, logs)
    assert summary.warnings == [f"cannot read {locked}: Permission denied; skipped, tried again next run"]
    assert summary.lost_bytes == 0
    monkeypatch.setattr(file_ingest, "identify", real)
    assert _ingest(root, logs).warnings == []
    assert ids_in(root) == expected(range(4))


def test_following_a_live_file_named_alone_reads_what_rotation_moved_away(tmp_path: Path) -> None:
    # `ingest files .../queries.log`: the lines written between two scans and then rotated to
    # queries.log.1 were never read (the named file was scanned alone)
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    _ingest(root, live)
    _write(live, range(3, 8))
    live.rename(logs / "queries.log.1")
    _write(live, range(8, 10))
    summary = _ingest(root, live)
    assert ids_in(root) == expected(range(10))
    assert (summary.records, summary.lost_bytes, summary.warnings) == (7, 0, [])


def test_a_rotation_during_a_scan_is_not_reported_as_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(3))
    with live.open("ab") as fh:
        fh.write(qline(3)[:40])  # a partial last line: seen, not read
    _ingest(root, logs)
    with live.open("ab") as fh:
        fh.write(qline(3)[40:])
    listed = file_ingest.list_logs

    def list_then_rotate(paths: list[Path]) -> Listing:
        found = listed(paths)
        if not (logs / "queries.log.1").exists():  # log4j rolls over between listing and reading
            live.rename(logs / "queries.log.1")
            live.touch()
        return found

    monkeypatch.setattr(file_ingest, "list_logs", list_then_rotate)
    during = _ingest(root, logs)
    monkeypatch.setattr(file_ingest, "list_logs", listed)
    after = _ingest(root, logs)
    assert (during.lost_bytes, during.warnings) == (0, [])  # was "disappeared with 40 bytes never read"
    assert (after.lost_bytes, after.warnings) == (0, [])
    assert ids_in(root) == expected(range(4))


def test_a_rotation_with_a_full_backup_chain_during_a_scan_is_not_reported_as_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # log4j's chain is full (X.log.1..3 always exist): a rollover leaves the same names, and comparing
    # names alone called the old live file's unread bytes lost (review finding)
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    for i in (3, 2, 1):
        _write(logs / f"queries.log.{i}", [1000 + i])
    _write(live, range(3))
    with live.open("ab") as fh:
        fh.write(qline(3)[:40])  # a partial last line: seen, not read
    _ingest(root, logs)
    with live.open("ab") as fh:
        fh.write(qline(3)[40:] + qline(4))
    real = file_ingest.identify

    def rotate_first(path: Path, **kwargs: bool) -> object:
        if path == live and (logs / "queries.log.3").exists():
            (logs / "queries.log.3").unlink()
            for i in (2, 1):
                (logs / f"queries.log.{i}").rename(logs / f"queries.log.{i + 1}")
            live.rename(logs / "queries.log.1")
            _write(live, [5])  # the same names as before: a full chain
        return real(path, **kwargs)

    monkeypatch.setattr(file_ingest, "identify", rotate_first)
    during = _ingest(root, logs)
    monkeypatch.setattr(file_ingest, "identify", real)
    after = _ingest(root, logs)
    assert (during.lost_bytes, during.warnings) == (0, [])  # was "disappeared with ... bytes never read"
    assert (after.lost_bytes, after.warnings) == (0, [])
    assert [i for i in ids_in(root) if int(i[2:]) < 1000] == sorted(expected(range(6)))


def test_a_live_log_named_through_a_symbolic_link_reads_what_rotation_moved_away(tmp_path: Path) -> None:
    # the rotated files were looked for beside the link, not beside the log it points to (review finding)
    logs, root, links = tmp_path / "run" / "api-queries", tmp_path / "root", tmp_path / "etc"
    live = logs / "queries.log"
    _write(live, range(3))
    links.mkdir()
    (links / "queries.log").symlink_to(live)
    _ingest(root, links / "queries.log")
    _write(live, range(3, 8))
    live.rename(logs / "queries.log.1")
    _write(live, range(8, 10))
    summary = _ingest(root, links / "queries.log")
    assert ids_in(root) == expected(range(10))
    assert (summary.records, summary.lost_bytes, summary.warnings) == (7, 0, [])


def test_rotated_files_of_a_live_log_named_alone_leave_the_catalog_when_gone(tmp_path: Path) -> None:
    # their entries were never judged, so files.json grew by one entry a rotation, for ever
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    for n in range(8):
        _write(live, range(10 * n, 10 * n + 3))
        _ingest(root, live)
        (logs / "queries.log.2").unlink(missing_ok=True)  # a chain of two backups
        if (logs / "queries.log.1").exists():
            (logs / "queries.log.1").rename(logs / "queries.log.2")
        live.rename(logs / "queries.log.1")
    _write(live, [80])
    summary = _ingest(root, live)
    assert ids_in(root) == expected([*(n for k in range(8) for n in range(10 * k, 10 * k + 3)), 80])
    assert summary.warnings == []
    assert len(load_catalog(root / "state" / "files.json")) <= 3


def test_an_unreadable_sub_folder_is_skipped_with_a_warning_and_its_files_not_called_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one unreadable sub-folder failed every scan of the readable ones (review finding); the test runs
    # as root, whom permissions do not stop, so the refusal is simulated where os.walk meets it
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "private" / "a.log", range(3))
    with (logs / "private" / "a.log").open("ab") as fh:
        fh.write(qline(3)[:40])  # seen, not read: "lost" if its file were judged gone
    _write(logs / "public" / "b.log", range(100, 103))
    _ingest(root, logs)
    _write(logs / "public" / "b.log", range(103, 105))
    with (logs / "private" / "a.log").open("ab") as fh:
        fh.write(qline(3)[40:] + qline(4))
    real = os.scandir

    def scandir(path: object = ".") -> object:
        if str(path) == str(logs / "private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    summary = _ingest(root, logs)
    skipped = f"cannot list folder {logs / 'private'}: Permission denied"
    assert summary.warnings == [
        f"{skipped}; the files in it that were not named are skipped, tried again next run"
    ]
    assert (summary.records, summary.lost_bytes) == (2, 0)
    monkeypatch.setattr(os, "scandir", real)
    assert _ingest(root, logs).warnings == []
    assert ids_in(root) == expected([*range(5), *range(100, 105)])


def test_a_given_folder_that_cannot_be_read_is_still_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    _write(logs / "a.log", range(1))

    def scandir(path: object = ".") -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match=f"cannot read folder {logs}: Permission denied"):
        _ingest(tmp_path / "root", logs)


def test_an_idle_scan_leaves_the_catalog_alone_and_follow_counts_files_once(tmp_path: Path) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    _write(logs / "queries.log", range(3))
    ingestor = FileIngestor(root)
    total = IngestSummary()
    total.add(ingestor.run([logs]))
    catalog = root / "state" / "files.json"
    written = catalog.stat().st_mtime_ns
    for i in range(3):
        _write(logs / "queries.log", [10 + i])
        total.add(ingestor.run([logs]))
    idle = ingestor.run([logs])
    total.add(idle)
    assert (idle.commits, idle.records) == (0, 0)
    assert catalog.stat().st_mtime_ns > written  # the scans that read moved it on ...
    before_idle = catalog.stat().st_mtime_ns
    ingestor.run([logs])
    assert catalog.stat().st_mtime_ns == before_idle  # ... an idle one does not rewrite (and fsync) it
    assert (total.files, total.files_read) == (1, 1)  # was "1 files (4 read, ...)"


def test_positions_are_looked_up_once_per_table_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs, root = tmp_path / "logs", tmp_path / "root"
    for name, numbers in (("a", range(3)), ("b", range(10, 12)), ("c", range(20, 22))):
        _write(logs / name / "queries.log", numbers)
    follower = FileIngestor(root)
    follower.run([logs])
    lookups: list[str] = []
    real = file_ingest.committed_position

    def counted(table: object, app_id: str) -> int | None:
        lookups.append(app_id)
        return real(table, app_id)  # type: ignore[arg-type]

    monkeypatch.setattr(file_ingest, "committed_position", counted)
    follower.run([logs])
    first = len(lookups)
    follower.run([logs])  # idle, same table version: two lookups per file each scan cost ~7 ms a file
    assert len(lookups) == first
    _write(logs / "a" / "queries.log", range(3, 5))
    FileIngestor(root).run([logs])  # another follower commits: the table version moves on
    again = follower.run([logs])
    assert len(lookups) > first
    assert (again.bytes_read, again.records) == (0, 0)  # it saw the other's position, not a stale one
    assert ids_in(root) == expected([0, 1, 2, 3, 4, 10, 11, 20, 21])


@pytest.mark.parametrize("left", [b"", b'{"no complete first line'])
def test_a_known_file_emptied_in_place_is_reported_at_once(tmp_path: Path, left: bytes) -> None:
    """Emptied (or left with a partial first line), the file cannot be identified: its loss waited,
    unreported, until new lines gave it another identity (second review finding)."""
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(2))
    partial = b'{"half a line that is not ended yet, forty'[:40]
    with live.open("ab") as fh:
        fh.write(partial)  # seen, never read
    _ingest(root, logs)
    with live.open("r+b") as fh:
        fh.truncate(0)
        fh.write(left)
    summary = _ingest(root, logs)
    assert (summary.lost_bytes, summary.truncations) == (40, 1)
    assert summary.warnings == [f"{live} was truncated with 40 bytes never read (they are lost)"]
    _write(live, range(10, 12), mode="wb")
    later = _ingest(root, logs)
    assert (later.records, later.lost_bytes, later.truncations, later.warnings) == (2, 0, 0, [])  # once
    assert ids_in(root) == expected([0, 1, 10, 11])


def test_a_rewritten_first_line_longer_than_the_position_is_judged_at_once(tmp_path: Path) -> None:
    """Rewritten in place with an unended first line longer than the committed position but shorter than
    the file was: the unread bytes are lost (third review finding: compared with the position, it
    waited)."""
    logs, root = tmp_path / "logs", tmp_path / "root"
    live = logs / "queries.log"
    _write(live, range(2))
    with live.open("ab") as fh:
        fh.write(b"x" * 40)  # seen, never read
    _ingest(root, logs)
    size = live.stat().st_size
    with live.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b"y" * (size - 20))  # past the committed position (size - 40), no newline
    summary = _ingest(root, logs)
    assert (summary.lost_bytes, summary.truncations) == (40, 1)


def test_a_file_never_read_then_emptied_is_reported(tmp_path: Path) -> None:
    """Catalogued by a run that stopped before reading it (position 0), then emptied: an empty file is
    as long as position 0, and its loss waited unreported (third review finding)."""
    logs, root = tmp_path / "logs", tmp_path / "root"
    old, live = logs / "queries.log.1", logs / "queries.log"
    _write(old, range(5))
    settled = time.time() - 60
    os.utime(old, (settled, settled))
    _write(live, range(10, 13))
    FileIngestor(root, batch_bytes=1).run([logs], should_stop=lambda: True)
    hints = load_catalog(root / "state" / "files.json")
    assert [h.position for h in hints.values() if h.path == str(live)] == [0]  # seen, not read
    size = live.stat().st_size
    with live.open("r+b") as fh:
        fh.truncate(0)
    summary = _ingest(root, logs)
    assert (summary.lost_bytes, summary.truncations) == (size, 1)
    assert summary.warnings == [f"{live} was truncated with {size} bytes never read (they are lost)"]


def test_a_copytruncate_finishing_during_the_scan_is_not_reported_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate's copy `queries.log.1` exists, still empty, when the scan lists the folder; the copy is
    filled and the live file truncated between identifying the copy and the live file. The live file's
    unread bytes are in the copy: the next scan reads them, so nothing may be called lost (review
    finding: "was truncated with 40 bytes never read (they are lost)" with every row stored)."""
    logs, root = tmp_path / "logs", tmp_path / "root"
    live, copy = logs / "queries.log", logs / "queries.log.1"
    _write(live, range(3))
    partial = qline(3)
    with live.open("ab") as fh:
        fh.write(partial[:40])  # seen by the first scan, not a complete line yet
    FileIngestor(root).run([logs])
    with live.open("ab") as fh:
        fh.write(partial[40:])
    _write(live, range(4, 6))
    copy.touch()  # cp has created its target and copied nothing yet

    real = file_ingest.identify

    def identify(path: Path, **kwargs: bool) -> object:
        result = real(path, **kwargs)
        if path == copy and copy.stat().st_size == 0:
            shutil.copyfile(live, copy)  # the copy completes
            os.truncate(live, 0)  # and logrotate truncates the live file
        return result

    monkeypatch.setattr(file_ingest, "identify", identify)
    during = FileIngestor(root).run([logs])
    monkeypatch.undo()
    assert during.lost_bytes == 0 and during.warnings == []
    after = FileIngestor(root).run([logs])
    assert ids_in(root) == expected(range(6))  # nothing was lost: the copy held it
    assert after.lost_bytes == 0 and after.warnings == []
