"""Tests of the synthetic log generator: deterministic, log4j-style rotation, consistent with the parser."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ingest.parser import LineParser
from service.loggen import generate_log_folder, iter_events, iter_lines, write_lines
from tests.ingest.lines import lines_table


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.log*"))
    }


def test_the_same_seed_gives_the_same_files_and_another_seed_others(tmp_path: Path) -> None:
    a = generate_log_folder(tmp_path / "a", days=2, per_day=300, seed=1, max_file_bytes=64 * 1024)
    b = generate_log_folder(tmp_path / "b", days=2, per_day=300, seed=1, max_file_bytes=64 * 1024)
    generate_log_folder(tmp_path / "c", days=2, per_day=300, seed=2, max_file_bytes=64 * 1024)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert a.files == b.files


def test_files_rotate_like_log4j(tmp_path: Path) -> None:
    summary = generate_log_folder(tmp_path, days=2, per_day=300, seed=3, max_file_bytes=64 * 1024)
    queries = sorted(f for f in summary.files if f.startswith("api-queries/"))
    assert queries[0] == "api-queries/queries.log" and "api-queries/queries.log.1" in queries
    for name in summary.files:
        path = tmp_path / name
        assert path.stat().st_size <= 64 * 1024
        assert path.read_bytes().endswith(b"\n")
    # Rotated files hold older lines: the newest backup .1 ends before the live file starts.
    first_live = json.loads((tmp_path / "api-queries/queries.log").read_bytes().split(b"\n")[0])["timestamp"]
    last_backup = json.loads((tmp_path / "api-queries/queries.log.1").read_bytes().split(b"\n")[-2])[
        "timestamp"
    ]
    assert last_backup <= first_live


def test_too_small_files_for_the_volume_fail_instead_of_dropping_lines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backups"):
        generate_log_folder(tmp_path, days=1, per_day=2000, seed=3, max_file_bytes=8 * 1024)


def test_summary_counts_agree_with_what_the_parser_makes_of_the_lines() -> None:
    lines = list(iter_lines(days=2, per_day=500, seed=5))
    result = LineParser().parse(lines_table([line.text + b"\n" for line in lines]))
    kinds = {kind: sum(1 for line in lines if line.kind == kind) for kind in ("query", "bad", "other_topic")}
    records = sum(len(line.events) for line in lines)
    assert (result.records, result.quarantined, result.skipped) == (
        records,
        kinds["bad"],
        kinds["other_topic"],
    )
    assert kinds["bad"] > 0 and kinds["other_topic"] > 0
    assert records > kinds["query"]  # some predict-multi batches


def test_events_carry_keys_and_truths_for_outcomes() -> None:
    events = list(iter_events(days=3, per_day=400, seed=9))
    assert events == [e for line in iter_lines(days=3, per_day=400, seed=9) for e in line.events]
    by_service = {e.service_id for e in events}
    assert by_service == {"fraud", "churn", "price"}
    fraud = [e for e in events if e.service_id == "fraud"]
    assert len({e.key for e in fraud}) == len(fraud)  # transaction ids are unique
    assert {e.truth for e in fraud} == {"fraud", "legit"} and {e.positive for e in fraud} == {"fraud"}
    assert all(e.probas is not None and abs(sum(e.probas.values()) - 1) < 1e-3 for e in fraud)
    assert {e.generation for e in fraud} == {"v1", "v2", "v3"}
    prices = [e for e in events if e.service_id == "price"]
    assert all(isinstance(e.truth, float) and e.probas is None for e in prices)
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_write_lines_streams_exactly_n_clean_lines(tmp_path: Path) -> None:
    path = tmp_path / "bench.log"
    size = write_lines(path, 2000, seed=1)
    data = path.read_bytes()
    assert len(data) == size and data.count(b"\n") == 2000
    envelopes = {b"A" if line.startswith(b'{"timestamp" : ') else b"B" for line in data.splitlines()}
    assert envelopes == {b"A", b"B"}
    assert 450 < size / 2000 < 700
    result = LineParser().parse(lines_table(data.splitlines(keepends=True)))
    assert result.quarantined == 0 and result.skipped == 0 and result.records >= 2000
