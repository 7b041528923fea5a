"""The flusher moves intake rows into Delta exactly once, also when killed at each durable step."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import storage
from service.errors import IdempotencyConflict
from storage.layout import Layout
from storage.outcome_flush import flush_once, ndjson_to_arrow, pending_to_arrow
from storage.outcome_intake import open_intake
from storage.outcome_model import parse_outcomes

REPO = Path(__file__).resolve().parents[2]

FLUSH_SCRIPT = """
import sys
from pathlib import Path
from storage.layout import Layout
from storage.outcome_flush import flush_once, ndjson_to_arrow, pending_to_arrow
from storage.outcome_intake import open_intake
root = Path(sys.argv[1])
with open_intake(Layout(root).intake_db) as intake:
    flush_once(intake, root, batch_rows=int(sys.argv[2]))
"""


def _store(root: Path, ids: list[str]) -> None:
    items = [{"outcome_id": i, "record_id": i, "value": 1} for i in ids]
    with open_intake(Layout(root).intake_db) as intake:
        intake.append(parse_outcomes(items), key_id="k1")


def _ids(root: Path) -> list[str]:
    con = storage.connect(root)
    try:
        return [r[0] for r in con.execute("SELECT outcome_id FROM outcomes ORDER BY intake_seq").fetchall()]
    finally:
        con.close()


def test_flush_writes_every_column_once(tmp_path: Path) -> None:
    root = tmp_path
    _store(root, ["a", "b"])
    with open_intake(Layout(root).intake_db) as intake:
        assert flush_once(intake, root).rows_written == 2
        assert flush_once(intake, root).rows_written == 0
        assert intake.count_pending() == 0
    con = storage.connect(root)
    row = con.execute(
        "SELECT outcome_id, record_id, key_id, intake_seq, day = CAST(received_at AS DATE) FROM outcomes "
        "ORDER BY intake_seq"
    ).fetchall()
    assert row == [("a", "a", "k1", 1, True), ("b", "b", "k1", 2, True)]


@pytest.mark.parametrize(
    "step",
    [
        "outcomes.flush_trim",
        "outcomes.flush_before_commit@2",
        "commit.before@2",
        "commit.after@2",
        "outcomes.flush_after_commit@1",
        "outcomes.flush_after_commit@2",
    ],
)
def test_a_flush_killed_at_any_step_still_lands_each_row_once(tmp_path: Path, step: str) -> None:
    ids = [f"o{n}" for n in range(7)]
    _store(tmp_path, ids)
    env = {**os.environ, "HINDSIGHT_CRASH_AT": step, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", FLUSH_SCRIPT, str(tmp_path), "3"], env=env, cwd=REPO, check=False
    )
    assert killed.returncode == 137
    env.pop("HINDSIGHT_CRASH_AT")
    subprocess.run([sys.executable, "-c", FLUSH_SCRIPT, str(tmp_path), "3"], env=env, cwd=REPO, check=True)
    assert _ids(tmp_path) == ids


def _latest(root: Path) -> list[tuple[object, ...]]:
    con = storage.connect(root)
    try:
        return con.execute(
            "SELECT coalesce(record_id, key), outcome_type, service_id, value FROM outcomes_latest "
            "ORDER BY 1, 2, coalesce(service_id, '')"
        ).fetchall()
    finally:
        con.close()


def test_outcomes_latest_takes_the_latest_occurrence_then_the_latest_receipt(tmp_path: Path) -> None:
    t = "2026-01-0{}T00:00:00Z".format
    batches = [
        [
            {"record_id": "r1", "value": "a", "occurred_at": t(2)},
            {"record_id": "r1", "value": "old", "occurred_at": t(1)},
        ],
        [{"record_id": "r1", "value": "b", "occurred_at": t(2)}],  # same occurred_at, received later: wins
        [{"record_id": "r1", "value": "late-but-older", "occurred_at": t(1)}],
        [{"record_id": "r1", "outcome_type": "refund", "value": 5, "occurred_at": t(1)}],
        [{"record_id": "r1", "service_id": "s2", "value": "other", "occurred_at": t(1)}],
        [
            {"key": {"context.tx": "t1"}, "value": "k-old", "occurred_at": t(1)},
            {"key": {"context.tx": "t1"}, "value": "k-new", "occurred_at": t(3)},
        ],
    ]
    with open_intake(Layout(tmp_path).intake_db) as intake:
        for batch in batches:
            intake.append(parse_outcomes(batch), key_id=None)
        flush_once(intake, tmp_path)
    assert _latest(tmp_path) == [
        ("r1", "label", None, "b"),
        ("r1", "label", "s2", "other"),
        ("r1", "refund", None, "5"),
        ('{"context.tx":"t1"}', "label", None, "k-new"),
    ]
    con = storage.connect(tmp_path)
    assert con.execute("SELECT count(*) FROM outcomes").fetchall() == [(8,)]  # every event is kept
    assert con.execute("SELECT min(day) FROM outcomes").fetchall() == [(dt.datetime.now(dt.UTC).date(),)]


def test_arrow_from_sqlite_json_keeps_every_value_exactly(tmp_path: Path) -> None:
    values: list[object] = [
        0.1,
        1e308,
        5e-324,
        -0.0,
        2**63 - 1,
        -(2**63),
        1 / 3,
        True,
        'x\u00e9"\\\n',
        "\U0001f600",
    ]
    items: list[dict[str, object]] = []
    for i, value in enumerate(values * 3):
        item: dict[str, object] = {"value": value, "outcome_type": "label" if i % 2 else "amount"}
        if i % 2:
            item["record_id"] = f"r{i}\u2028"
        else:
            item["key"] = {"context.a": value, "features.b": "z"}
        if i % 3 == 0:
            item["attributes"] = {"n": [1, 2.5, None, {"q": "\u0000"}], "s": "\u00fc"}
            item["occurred_at"] = "2026-01-31T12:00:00.123456+05:00"
        items.append(item)
    with open_intake(tmp_path / "intake.sqlite", group_commit_ms=0) as intake:
        intake.append(parse_outcomes(items[:12]), key_id="k1")
        intake.append(parse_outcomes(items[12:]), key_id=None)
        from_python = pending_to_arrow(intake.pending(0, 1000))
        from_json = ndjson_to_arrow(intake.pending_ndjson(0, 1000))
        window = ndjson_to_arrow(intake.pending_ndjson(5, 7))
        empty = ndjson_to_arrow(intake.pending_ndjson(10_000, 7))
    assert from_json.num_rows == len(items)
    assert from_json.equals(from_python)
    assert window.column("intake_seq").to_pylist() == list(range(5, 12))
    assert window.equals(from_python.slice(4, 7))
    assert empty.num_rows == 0 and empty.schema.equals(from_python.schema)


_LAYOUT_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ids (outcome_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT, key TEXT, row TEXT NOT NULL);
INSERT INTO meta VALUES ('intake_id', 'a1b2');
PRAGMA user_version = 1;
"""


def _layout_1_log(path: Path, rows: list[tuple[object, ...]]) -> None:
    """An intake log as version 1 wrote it: each pending row a JSON array in PENDING_COLUMNS[1:] order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(_LAYOUT_1)
    for row in rows:
        con.execute("INSERT INTO ids VALUES (?, ?)", (row[0], "f" * 32))
        con.execute(
            "INSERT INTO pending (record_id, key, row) VALUES (?, ?, ?)",
            (row[1], row[2], orjson.dumps(row).decode()),
        )
    # seqs up to 10 were taken (rows flushed and trimmed meanwhile): none may be reused
    con.execute("UPDATE sqlite_sequence SET seq = 10 WHERE name = 'pending'")
    con.commit()
    con.close()


def test_a_version_1_intake_log_is_migrated_and_flushes_every_value(tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [
        (
            "o1",
            "r1\u2028",
            None,
            "svc",
            None,
            "label",
            'x\u00e9"\\\n',
            None,
            '"x\\u00e9\\"\\\\\\n"',
            1_700_000_000_123_456,
            1_700_000_001_000_000,
            '{"n":[1,2.5,null]}',
            "k1",
        ),
        (
            "o2",
            None,
            '{"context.a":5e-324}',
            None,
            "ep",
            "amount",
            "1e308",
            1e308,
            "1e308",
            -(2**62),
            1_700_000_002_000_000,
            None,
            None,
        ),
        ("o3", "r3", None, None, None, "label", "-0.0", -0.0, "-0.0", 0, 1_700_000_003_000_000, None, "k2"),
    ]
    root = tmp_path
    _layout_1_log(Layout(root).intake_db, rows)
    with open_intake(Layout(root).intake_db) as intake:
        assert intake.intake_id == "a1b2"
        pending = intake.pending(0, 100)
        assert pending == [(seq, *row) for seq, row in enumerate(rows, start=1)]
        assert ndjson_to_arrow(intake.pending_ndjson(0, 100)).equals(pending_to_arrow(pending))
        assert intake.pending_matching(record_id="r3", keys=[]) == [pending[2]]
        assert flush_once(intake, root).rows_written == 3
        assert intake.append(parse_outcomes([{"outcome_id": "o4", "record_id": "r4", "value": 1}]), None) == [
            "created"
        ]
        assert intake.pending(0, 100)[0][0] == 11  # seqs go on after the highest ever taken
        with pytest.raises(IdempotencyConflict):  # the ids of the old log still hold
            intake.append(parse_outcomes([{"outcome_id": "o1", "record_id": "r1", "value": 1}]), None)
    with open_intake(tmp_path / "new.sqlite"):
        pass
    columns = "SELECT name, type, hidden FROM pragma_table_xinfo('pending') ORDER BY name"
    migrated, new = sqlite3.connect(Layout(root).intake_db), sqlite3.connect(tmp_path / "new.sqlite")
    assert migrated.execute(columns).fetchall() == new.execute(columns).fetchall()
    assert migrated.execute("PRAGMA user_version").fetchone() == (2,)
    migrated.close()
    new.close()
    assert _ids(root) == ["o1", "o2", "o3"]
    con_d = storage.connect(root)
    got = con_d.execute(
        "SELECT record_id, key, value, value_number, value_json, attributes, key_id, intake_seq "
        "FROM outcomes ORDER BY intake_seq"
    ).fetchall()
    con_d.close()
    assert got == [
        ("r1\u2028", None, 'x\u00e9"\\\n', None, '"x\\u00e9\\"\\\\\\n"', '{"n":[1,2.5,null]}', "k1", 1),
        (None, '{"context.a":5e-324}', "1e308", 1e308, "1e308", None, None, 2),
        ("r3", None, "-0.0", -0.0, "-0.0", None, "k2", 3),
    ]


def test_pending_lines_out_of_seq_order_come_back_sorted(tmp_path: Path) -> None:
    items = [{"outcome_id": f"o{i}", "record_id": f"r{i}", "value": i} for i in range(5)]
    with open_intake(tmp_path / "intake.sqlite", group_commit_ms=0) as intake:
        intake.append(parse_outcomes(items), key_id="k1")
        text = intake.pending_ndjson(0, 100)
    in_order = ndjson_to_arrow(text)
    shuffled = ndjson_to_arrow(b"\n".join(reversed(text.split(b"\n"))))
    assert in_order.column("intake_seq").to_pylist() == [1, 2, 3, 4, 5]
    assert shuffled.equals(in_order)


def test_an_outcome_larger_than_a_json_block_is_flushed(tmp_path: Path) -> None:
    # Arrow's JSON reader parses in blocks (1 MiB here); a row longer than a block used to fail every
    # flush, fail-stopping the API for good with the acknowledged row stuck in the intake log.
    root = tmp_path
    big = "x" * (3 * 1024 * 1024)
    items = [
        {"outcome_id": "small-1", "record_id": "r1", "value": 1},
        {"outcome_id": "big", "record_id": "r2", "value": big, "attributes": {"note": big[:100_000]}},
        {"outcome_id": "small-2", "record_id": "r3", "value": 2},
    ]
    with open_intake(Layout(root).intake_db) as intake:
        intake.append(parse_outcomes(items), key_id="k1")
        assert flush_once(intake, root).rows_written == 3
        assert intake.count_pending() == 0
    con = storage.connect(root)
    try:
        rows = con.execute("SELECT outcome_id, length(value) FROM outcomes ORDER BY intake_seq").fetchall()
    finally:
        con.close()
    assert rows == [("small-1", 1), ("big", len(big)), ("small-2", 1)]


def _store_padded(root: Path, ids: list[str], pad: int) -> None:
    items = [{"outcome_id": i, "record_id": i, "value": 1, "attributes": {"pad": "x" * pad}} for i in ids]
    with open_intake(Layout(root).intake_db) as intake:
        intake.append(parse_outcomes(items), key_id="k1")


def test_a_flush_reads_the_intake_log_in_batches_of_bounded_bytes(tmp_path: Path) -> None:
    # 200,000 rows of 5 KB were one text of 1 GB: SQLite refused it at every flush and every restart
    ids = [f"o{i:03d}" for i in range(40)]
    _store_padded(tmp_path, ids, pad=1000)
    with open_intake(Layout(tmp_path).intake_db) as intake:
        first = intake.pending_ndjson(0, 1000, max_bytes=5000)
        assert len(first.splitlines()) == 5  # rows of ~1.1 KB: the fifth starts below 5,000 bytes
        assert len(intake.pending_ndjson(0, 1000, max_bytes=10).splitlines()) == 1  # always one row
        report = flush_once(intake, tmp_path, batch_bytes=5000)
        assert (report.rows_written, report.commits) == (40, 8)
        assert intake.count_pending() == 0
    assert _ids(tmp_path) == ids


def test_a_trim_that_meets_a_locked_intake_log_is_retried_not_fatal(tmp_path: Path) -> None:
    _store(tmp_path, ["a", "b"])
    other = sqlite3.connect(Layout(tmp_path).intake_db, isolation_level=None)
    with open_intake(Layout(tmp_path).intake_db) as intake:
        intake._read.execute("PRAGMA busy_timeout = 200")  # the 30 s default, shortened for the test
        other.execute("BEGIN IMMEDIATE")  # another process (an import) holds the write lock
        report = flush_once(intake, tmp_path)  # the trims fail; the move to Delta does not
        other.execute("ROLLBACK")
        assert report.rows_written == 2
        assert intake.failure is None  # it used to shut writes for good: "cannot trim intake log"
        assert intake.count_pending() == 2  # not trimmed yet ...
        assert flush_once(intake, tmp_path).rows_written == 0  # ... and never flushed twice
        assert intake.count_pending() == 0
    other.close()
    assert _ids(tmp_path) == ["a", "b"]


def test_opening_the_intake_log_shrinks_its_wal(tmp_path: Path) -> None:
    _store(tmp_path, ["first"])  # creates the log
    # another connection open throughout (a crashed process leaves the same): the last close would
    # otherwise checkpoint and delete the WAL
    other = sqlite3.connect(Layout(tmp_path).intake_db)
    other.execute("SELECT count(*) FROM pending").fetchall()
    _store_padded(tmp_path, [f"o{i}" for i in range(199)], pad=2000)  # never checkpointed: all in the WAL
    wal = Path(str(Layout(tmp_path).intake_db) + "-wal")
    assert wal.stat().st_size > 400_000
    with open_intake(Layout(tmp_path).intake_db) as intake:
        assert wal.stat().st_size == 0
        assert intake.count_pending() == 200
    other.close()


def test_a_flusher_waiting_for_the_table_lock_shows_stalled_and_stop_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fcntl
    import time

    from storage import outcome_flush
    from storage.outcome_flush import Flusher

    monkeypatch.setattr(outcome_flush, "STALL_MIN_SECONDS", 0.5)
    _store(tmp_path, ["a"])
    lock_path = Layout(tmp_path).lock_file("outcomes")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's commit (an import, say) holds the lock
    with open_intake(Layout(tmp_path).intake_db) as intake:
        flusher = Flusher(intake, tmp_path, interval=0.01)
        flusher.start()
        time.sleep(1.0)
        assert flusher.alive and flusher.stalled  # alive was all readiness saw
        started = time.monotonic()
        flusher.stop(timeout=0.5)  # shutdown used to wait for the lock for ever
        assert time.monotonic() - started < 2.0
        assert "the last flush did not finish within" in caplog.text
        os.close(holder)  # the lock is released: the stuck flush completes on its own
        deadline = time.monotonic() + 10
        while flusher.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not flusher.alive and not flusher.stalled
    assert _ids(tmp_path) == ["a"]


def test_a_flush_moves_what_was_pending_when_it_started_and_returns(tmp_path: Path) -> None:
    import threading

    _store(tmp_path, [f"p{i:02d}" for i in range(50)])
    stop = threading.Event()

    def keep_writing() -> None:  # steady traffic: the old loop chased it for as long as it lasted
        n = 0
        with open_intake(Layout(tmp_path).intake_db) as writer:
            while not stop.wait(0.001) and n < 2000:
                writer.append(
                    parse_outcomes([{"outcome_id": f"w{n}", "record_id": "r", "value": 1}]), key_id="k"
                )
                n += 1

    with open_intake(Layout(tmp_path).intake_db) as intake:
        thread = threading.Thread(target=keep_writing)
        thread.start()
        try:
            report = flush_once(intake, tmp_path, batch_rows=5)
        finally:
            stop.set()
            thread.join()
        assert report.rows_written == 50
        assert report.commits == 10
        assert intake.count_pending() > 0  # what came in meanwhile waits for the next flush
