"""Compaction merges a day's small files and keeps rows, positions, older versions and readers' snapshots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import storage
from service.errors import InputError, StorageError
from storage import commit, compact
from storage.commit import SourceBatch, commit_sources, committed_position, open_table
from storage.compact import (
    TARGET_SIZE,
    TODAY_TARGET,
    Compactor,
    compact_table,
    compaction_plan,
    vacuum_limit,
    vacuum_table,
)
from storage.export import ExportRequest, export_labelled, manifest_path_for, read_manifest, replay_export
from storage.layout import Layout
from storage.policies import policies_from_config
from storage.schemas import PREDICTIONS
from tests.ingest.file_logs import run_cli
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions


def _seed(root: Path, commits: int) -> None:
    """`commits` commits of two predictions on 2026-01-01, and three on 2026-01-02."""
    for i in range(commits):
        write_predictions(root, [prediction(f"r{i}a", at(0, hours=i % 20)), prediction(f"r{i}b", at(0.5))])
    for i in range(3):
        write_predictions(root, [prediction(f"s{i}", at(1))])


def _files(root: Path) -> int:
    table = open_table(Layout(root).predictions)
    assert table is not None
    return len(table.file_uris())


def _ids(con_root: Path) -> list[str]:
    con = storage.connect(con_root)
    rows = [r[0] for r in con.execute("SELECT record_id FROM predictions ORDER BY 1").fetchall()]
    con.close()
    return rows


def test_a_day_with_many_small_files_is_merged_and_nothing_else_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(tmp_path, commits=33)
    layout = Layout(tmp_path)
    row = pa.Table.from_pylist([{**prediction("p1", at(0)), "source_position": 6}], schema=PREDICTIONS)
    commit_sources(
        layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [SourceBatch("probe", row, 7)]
    )
    before = DeltaTable(str(layout.predictions))
    ids = _ids(tmp_path)
    reader = storage.connect(tmp_path)  # a notebook with a snapshot taken before the compaction
    assert compaction_plan(layout.predictions) == [("2026-01-01", TARGET_SIZE)]
    synced: list[Path] = []
    monkeypatch.setattr(commit, "_fsync", synced.append)
    report = compact_table(layout.predictions, layout.lock_file("predictions"))
    merged = [Path(u) for u in DeltaTable(str(layout.predictions)).file_uris() if "2026-01-01" in u]
    log_entry = layout.predictions / "_delta_log" / f"{before.version() + 1:020d}.json"
    assert {*merged, log_entry} <= set(synced)  # the merged file and its commit are made durable
    assert (report.days, report.files_removed, report.files_added) == (["2026-01-01"], 34, 1)
    assert _files(tmp_path) == 1 + 3  # the other day had too few files to bother
    assert _ids(tmp_path) == ids
    assert committed_position(DeltaTable(str(layout.predictions)), "probe") == 7  # positions are kept
    assert reader.execute("SELECT count(*) FROM predictions").fetchone() == (len(ids),)  # its files are kept
    reader.close()
    old = DeltaTable(str(layout.predictions), version=before.version())
    assert old.to_pyarrow_table().num_rows == len(ids)  # time travel still works
    assert compact_table(layout.predictions, layout.lock_file("predictions")).days == []  # nothing left to do


def test_an_export_replays_byte_for_byte_after_a_compaction(tmp_path: Path) -> None:
    _seed(tmp_path, commits=33)
    write_outcomes(tmp_path, [outcome("o1", "OK", at(2), record_id="r1a")])
    out = tmp_path / "train.parquet"
    policies = policies_from_config([{"service_id": "fraud", "endpoint_id": "score"}])
    request = ExportRequest(("fraud", "score"), as_of=at(60), label_states=("observed", "pending"))
    export_labelled(tmp_path, out, request, policies=policies)
    layout = Layout(tmp_path)
    compact_table(layout.predictions, layout.lock_file("predictions"))
    replay_export(read_manifest(manifest_path_for(out)), tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == out.read_bytes()
    fresh = tmp_path / "fresh.parquet"
    export_labelled(tmp_path, fresh, request, policies=policies)  # the compacted version: the same rows
    assert fresh.read_bytes() == out.read_bytes()


def test_the_days_compacted_before_one_fails_are_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(tmp_path, commits=33)
    layout = Layout(tmp_path)
    before = DeltaTable(str(layout.predictions)).version()
    planned = compaction_plan(layout.predictions)
    monkeypatch.setattr(
        compact, "compaction_plan", lambda path, min_files: [*planned, ("not-a-day", TARGET_SIZE)]
    )
    synced: list[Path] = []
    monkeypatch.setattr(commit, "_fsync", synced.append)
    with pytest.raises(StorageError, match="cannot compact day not-a-day"):
        compact_table(layout.predictions, layout.lock_file("predictions"))
    merged = DeltaTable(str(layout.predictions))
    assert merged.version() == before + 1  # the first day was compacted and committed
    assert layout.predictions / "_delta_log" / f"{before + 1:020d}.json" in synced


def test_vacuum_keeps_what_younger_versions_need_and_refuses_short_retentions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(tmp_path, commits=33)
    layout = Layout(tmp_path)
    version = DeltaTable(str(layout.predictions)).version()
    compact_table(layout.predictions, layout.lock_file("predictions"))
    with pytest.raises(InputError, match="vacuum keeps at least 1:00:00 of versions"):
        vacuum_table(layout.predictions, layout.lock_file("predictions"), older_than=dt.timedelta(minutes=5))
    # the merged files were removed from the table a moment ago: a 1-hour retention still keeps them
    assert (
        vacuum_table(layout.predictions, layout.lock_file("predictions"), older_than=dt.timedelta(hours=1))
        == []
    )
    assert DeltaTable(str(layout.predictions), version=version).to_pyarrow_table().num_rows == 69
    # with no retention at all (allowed here only), the 33 merged files go and the old version with them
    monkeypatch.setattr(compact, "MIN_VACUUM_RETENTION", dt.timedelta(0))
    synced: list[Path] = []
    real_fsync = commit._fsync
    monkeypatch.setattr(commit, "_fsync", synced.append)
    before = DeltaTable(str(layout.predictions)).version()
    removed = vacuum_table(layout.predictions, layout.lock_file("predictions"), older_than=dt.timedelta(0))
    after = DeltaTable(str(layout.predictions)).version()
    log_dir = layout.predictions / "_delta_log"
    assert after > before and {log_dir / f"{v:020d}.json" for v in range(before + 1, after + 1)} <= set(
        synced
    )
    monkeypatch.setattr(commit, "_fsync", real_fsync)
    assert len(removed) == 33
    # the records of the deleted files are still in the log: a second vacuum deletes, and counts, nothing
    assert vacuum_table(layout.predictions, layout.lock_file("predictions"), older_than=dt.timedelta(0)) == []
    assert _ids(tmp_path) == sorted([f"r{i}{s}" for i in range(33) for s in "ab"] + ["s0", "s1", "s2"])
    with pytest.raises(StorageError, match="needs 33 data file"):
        storage.connect(tmp_path, versions={"predictions": version})


def test_a_day_still_written_to_aims_at_smaller_files(tmp_path: Path) -> None:
    _seed(tmp_path, commits=33)
    layout = Layout(tmp_path)
    assert compaction_plan(layout.predictions, today=dt.date(2026, 1, 1)) == [("2026-01-01", TODAY_TARGET)]
    assert compaction_plan(layout.predictions, today=dt.date(2026, 1, 2)) == [("2026-01-01", TARGET_SIZE)]
    assert compaction_plan(layout.predictions, min_files=3, today=dt.date(2026, 1, 2)) == [
        ("2026-01-01", TARGET_SIZE),
        ("2026-01-02", TODAY_TARGET),
    ]


def test_a_past_day_with_a_large_file_merges_its_late_files_among_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the 128 MiB target, every compaction rewrote the whole of such a day with its few late rows
    write_predictions(tmp_path, [prediction(f"big{i}", at(0, hours=1)) for i in range(3000)])
    _seed(tmp_path, commits=32)
    layout = Layout(tmp_path)
    table = open_table(layout.predictions)
    assert table is not None
    largest = max(pa.table(table.get_add_actions(flatten=True))["size_bytes"].to_pylist())
    monkeypatch.setattr(compact, "TODAY_TARGET", largest)  # the 3,000-row file counts as a large one
    assert compaction_plan(layout.predictions, today=dt.date(2026, 1, 5)) == [("2026-01-01", largest)]
    monkeypatch.setattr(compact, "TODAY_TARGET", largest + 1)  # now all are small: one last full merge
    assert compaction_plan(layout.predictions, today=dt.date(2026, 1, 5)) == [("2026-01-01", TARGET_SIZE)]


def test_a_compactor_runs_at_most_every_so_often(tmp_path: Path) -> None:
    _seed(tmp_path, commits=33)
    layout = Layout(tmp_path)
    compactor = Compactor(layout.predictions, layout.lock_file("predictions"), every=3600)
    first = compactor.maybe()  # at once: a process restarted more often than `every` still compacts
    assert first is not None and first.days == ["2026-01-01"]
    assert compactor.maybe() is None  # not time yet


def test_compact_command_merges_every_table(tmp_path: Path) -> None:
    _seed(tmp_path, commits=32)
    done = run_cli(tmp_path, "compact", "--vacuum-older-than", "7d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "predictions: 32 files merged into 1 over 1 day(s); 0 unneeded files deleted",
        "quarantine: 0 files merged into 0 over 0 day(s); 0 unneeded files deleted",
        "outcomes: 0 files merged into 0 over 0 day(s); 0 unneeded files deleted",
    ]
    bad = run_cli(tmp_path, "compact", "--vacuum-older-than", "soon")
    assert bad.returncode == 2 and "--vacuum-older-than='soon' is not a duration" in bad.stderr


def test_a_vacuum_retention_longer_than_the_log_remembers_replaced_files_is_refused(tmp_path: Path) -> None:
    # a checkpoint drops the record of a file replaced more than delta.deletedFileRetentionDuration ago
    # (7 days by default), and vacuum finds what to delete through those records: `--vacuum-older-than 30d`
    # deleted nothing, ever, on a table still written to (review finding)
    _seed(tmp_path, commits=32)
    layout = Layout(tmp_path)
    assert vacuum_limit(layout.predictions) == dt.timedelta(days=7)
    with pytest.raises(
        InputError, match=r"vacuum can keep at most 7 days, 0:00:00 of versions of predictions"
    ):
        vacuum_table(layout.predictions, layout.lock_file("predictions"), older_than=dt.timedelta(days=30))
    refused = run_cli(tmp_path, "compact", "--vacuum-older-than", "30d")
    assert refused.returncode == 2 and "delta.deletedFileRetentionDuration" in refused.stderr
    assert _files(tmp_path) == 35  # refused before anything was compacted
    table = DeltaTable(str(layout.predictions))
    table.alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 5 weeks"})
    assert vacuum_limit(layout.predictions) == dt.timedelta(weeks=5)
    assert run_cli(tmp_path, "compact", "--vacuum-older-than", "30d").returncode == 0


def test_compact_command_refuses_a_root_without_tables_and_a_short_retention_first(tmp_path: Path) -> None:
    typo = run_cli(tmp_path / "typo", "compact")
    assert typo.returncode == 2 and "no tables under" in typo.stderr
    assert not (tmp_path / "typo").exists()  # lock files were created there
    _seed(tmp_path, commits=32)
    short = run_cli(tmp_path, "compact", "--vacuum-older-than", "5m")
    assert short.returncode == 2 and "keeps at least 1:00:00" in short.stderr
    assert _files(tmp_path) == 35  # nothing was compacted before the refusal
