"""Tests of `storage.connect(root)`: works on a missing root, views see committed rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from service.errors import ConfigError, StorageError
from storage import connect
from storage.commit import SourceBatch, commit_sources
from storage.layout import Layout
from storage.schemas import PREDICTIONS, QUARANTINE
from storage.views import VIEWS, refresh

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def _prediction(i: int) -> dict[str, object]:
    row: dict[str, object] = {f.name: None for f in PREDICTIONS}
    row.update(
        record_id=f"r-{i}",
        ts=NOW,
        day=NOW.date(),
        service_id="churn",
        endpoint_id="predict",
        probas=[("churn", 0.25), ("stay", 0.75)],
        source="queries.log",
        source_position=i * 100,
        ingested_at=NOW,
    )
    return row


def test_a_missing_root_gives_empty_views_with_the_right_columns(tmp_path: Path) -> None:
    con = connect(tmp_path / "does-not-exist")
    try:
        for name, schema in (("predictions", PREDICTIONS), ("quarantine", QUARANTINE)):
            cursor = con.execute(f"SELECT * FROM {name}")
            assert [d[0] for d in cursor.description] == schema.names
            assert cursor.fetchall() == []
    finally:
        con.close()
    assert not (tmp_path / "does-not-exist").exists()


def test_views_see_committed_rows_and_refresh_sees_newer_ones(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    table = pa.Table.from_pylist([_prediction(0), _prediction(1)], schema=PREDICTIONS)
    commit_sources(
        layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [SourceBatch("f", table, 200)]
    )
    con = connect(tmp_path)
    try:
        rows = con.execute(
            "SELECT record_id, probas['stay'], ts FROM predictions ORDER BY record_id"
        ).fetchall()
        assert rows == [("r-0", 0.75, NOW), ("r-1", 0.75, NOW)]
        more = pa.Table.from_pylist([_prediction(2)], schema=PREDICTIONS)
        commit_sources(
            layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [SourceBatch("f", more, 300)]
        )
        assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(2,)]  # a snapshot
        refresh(con, tmp_path)
        assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(3,)]
    finally:
        con.close()


def test_connect_reads_pinned_tables_at_their_version(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for i in range(3):
        table = pa.Table.from_pylist([_prediction(i)], schema=PREDICTIONS)
        commit_sources(
            layout.predictions,
            layout.lock_file("predictions"),
            PREDICTIONS,
            [SourceBatch("f", table, 100 * i + 1)],
        )
    counts = []
    for versions in ({"predictions": 0}, {"predictions": 1}, {}, {"predictions": None}):
        con = connect(tmp_path, versions=versions)
        counts.append(con.execute("SELECT count(*) FROM predictions").fetchone())
        con.close()
    assert counts == [(1,), (2,), (3,), (0,)]  # None: as before the first commit


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ({"predictions": 5}, "has no version 5 yet: its latest version is 0"),
        ({"predictions": -1}, "version -1 does not exist"),
        ({"outcomes": 0}, "does not exist, so it has no version 0"),
        ({"predictons": 0}, "no table called predictons to pin a version of"),
    ],
)
def test_a_version_that_cannot_be_read_is_a_clear_error(
    tmp_path: Path, versions: dict[str, int], message: str
) -> None:
    layout = Layout(tmp_path)
    table = pa.Table.from_pylist([_prediction(0)], schema=PREDICTIONS)
    commit_sources(
        layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [SourceBatch("f", table, 1)]
    )
    with pytest.raises(StorageError, match=message):
        connect(tmp_path, versions=versions)


def test_every_view_has_a_docstring() -> None:
    assert {"predictions", "quarantine"} <= {v.name for v in VIEWS}
    assert all(v.doc.strip() for v in VIEWS)


def test_a_root_with_spaces_works_and_unsafe_characters_are_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "my data")
    row = {
        "source": "s", "source_position": 0, "reason": "r", "raw": "x", "raw_bytes": 1,
        "ingested_at": dt.datetime(2026, 3, 2, tzinfo=dt.UTC), "day": dt.date(2026, 3, 2),
    }  # fmt: skip
    rows = pa.Table.from_pylist([row], schema=QUARANTINE)
    commit_sources(layout.quarantine, layout.lock_file("quarantine"), QUARANTINE, [SourceBatch("s", rows, 1)])
    assert connect(layout.root).sql("SELECT reason, raw FROM quarantine").fetchall() == [("r", "x")]
    for name in ("50%", "a[1]", "x*"):
        with pytest.raises(ConfigError, match="choose a folder path without"):
            Layout(tmp_path / name)
