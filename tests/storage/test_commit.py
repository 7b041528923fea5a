"""Tests of the commit protocol: rows and source positions land together, replays add nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from storage import commit
from storage.commit import SourceBatch, commit_sources, committed_position, open_table
from storage.layout import Layout

SCHEMA = pa.schema(
    [
        pa.field("source_position", pa.int64(), nullable=False),
        pa.field("v", pa.string()),
        pa.field("day", pa.date32(), nullable=False),
    ]
)


def _rows(positions: list[int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"source_position": p, "v": f"row-{p}", "day": dt.date(2026, 3, 2)} for p in positions],
        schema=SCHEMA,
    )


def _commit(layout: Layout, batches: list[SourceBatch]) -> object:
    return commit_sources(layout.table("t"), layout.lock_file("t"), SCHEMA, batches)


def _values(layout: Layout) -> list[str]:
    table = open_table(layout.table("t"))
    assert table is not None
    return sorted(table.to_pyarrow_table().column("v").to_pylist())


def test_rows_and_positions_commit_together(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _commit(layout, [SourceBatch("a", _rows([0, 10]), 20), SourceBatch("b", _rows([5]), 6)])
    table = open_table(layout.table("t"))
    assert committed_position(table, "a") == 20
    assert committed_position(table, "b") == 6
    assert committed_position(table, "c") is None
    assert _values(layout) == ["row-0", "row-10", "row-5"]


def test_replay_after_crash_drops_committed_rows(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _commit(layout, [SourceBatch("a", _rows([0, 10]), 20)])
    # A writer that restarts from an older checkpoint re-reads 0..40: only 20 and 30 are new.
    report = commit_sources(
        layout.table("t"), layout.lock_file("t"), SCHEMA, [SourceBatch("a", _rows([0, 10, 20, 30]), 40)]
    )
    assert (report.rows_written, report.rows_already_committed) == (2, 2)
    assert _values(layout) == ["row-0", "row-10", "row-20", "row-30"]
    assert committed_position(open_table(layout.table("t")), "a") == 40


def test_stale_writer_commits_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _commit(layout, [SourceBatch("a", _rows([0, 10, 20]), 30)])
    report = commit_sources(
        layout.table("t"), layout.lock_file("t"), SCHEMA, [SourceBatch("a", _rows([0]), 10)]
    )
    assert report.stale_sources == ["a"]
    assert report.version is None
    assert _values(layout) == ["row-0", "row-10", "row-20"]


def test_position_moves_without_rows(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _commit(layout, [SourceBatch("a", SCHEMA.empty_table(), 500)])
    assert committed_position(open_table(layout.table("t")), "a") == 500
    assert _values(layout) == []


def test_a_commit_is_fsynced_before_it_is_reported_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = commit._fsync
    monkeypatch.setattr(commit, "_fsync", lambda path: (synced.append(path), real(path)))
    layout = Layout(tmp_path)
    monkeypatch.setattr(commit, "crash_point", lambda name: synced.append(Path(name)))
    for end in (10, 20):
        _commit(layout, [SourceBatch("a", _rows([end - 10, end - 5]), end)])
    table_dir = layout.table("t")
    # the first commit's file, then the second's: file names are random, so sorting them is no order
    first = [Path(uri) for uri in DeltaTable(str(table_dir), version=0).file_uris()]
    data = [*first, *(Path(uri) for uri in open_table(table_dir).file_uris() if Path(uri) not in first)]
    assert len(data) == 2
    second = synced[synced.index(Path("commit.before"), 2) :]  # what the second commit synced, in order
    assert second.index(Path("commit.after")) == len(second) - 1  # "done" only after every fsync
    expected = {
        data[1],
        table_dir / "_delta_log" / f"{1:020d}.json",
        data[1].parent,
        table_dir,
        table_dir / "_delta_log",
    }
    assert expected <= set(second)
    assert data[0] not in second  # only what the commit wrote
