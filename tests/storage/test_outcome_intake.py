"""The intake log: group commit, idempotency inside the transaction, persistence, fail-stop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.errors import IdempotencyConflict, NotReady
from storage.outcome_intake import IntakeLog, open_intake
from storage.outcome_model import parse_outcomes


def outcomes(*ids: str, value: object = 1) -> list:  # type: ignore[type-arg]
    return parse_outcomes([{"outcome_id": i, "record_id": f"r-{i}", "value": value} for i in ids])


def test_concurrent_submissions_share_one_transaction(tmp_path: Path) -> None:
    with open_intake(tmp_path / "intake.sqlite", group_commit_ms=300) as intake:
        barrier = threading.Barrier(8)
        results: dict[int, list[str]] = {}

        def submit(n: int) -> None:
            barrier.wait()
            results[n] = intake.append(outcomes(f"id{n}"), key_id="k")

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {n: ["created"] for n in range(8)}
        assert intake.commits < 8
        assert sorted(r[1] for r in intake.pending(0, 100)) == sorted(f"id{n}" for n in range(8))


def test_idempotency_inside_a_request_across_reopen_and_after_trim(tmp_path: Path) -> None:
    path = tmp_path / "intake.sqlite"
    with open_intake(path) as intake:
        assert intake.append(outcomes("a", "b", "a"), key_id="k") == ["created", "created", "duplicate"]
        intake_id = intake.intake_id
        assert intake.forget_below(10) == 2  # as after a flush: rows go, ids stay
    with open_intake(path) as intake:
        assert intake.intake_id == intake_id
        assert intake.append(outcomes("a", "c"), key_id="k") == ["duplicate", "created"]
        with pytest.raises(IdempotencyConflict) as caught:
            intake.append(outcomes("d", "a", value=2), key_id="k")
        assert caught.value.details == [{"index": 1, "outcome_id": "a"}]
        assert intake.append(outcomes("d"), key_id="k") == ["created"]  # nothing of the 409 was stored
        assert [r[0] for r in intake.pending(0, 10)] == [3, 4]  # seq never reused after the trim


def test_a_conflicting_submission_does_not_fail_its_group(tmp_path: Path) -> None:
    with open_intake(tmp_path / "intake.sqlite", group_commit_ms=200) as intake:
        intake.append(outcomes("x"), key_id=None)
        bad = intake.submit(outcomes("x", value=9), key_id=None)
        good = intake.submit(outcomes("y"), key_id=None)
        assert good.result() == ["created"]
        with pytest.raises(IdempotencyConflict):
            bad.result()


def test_fail_stop_refuses_every_later_write(tmp_path: Path) -> None:
    intake = IntakeLog(tmp_path / "intake.sqlite")
    try:
        intake.fail("disk gone")
        with pytest.raises(NotReady, match="disk gone"):
            intake.submit(outcomes("z"), key_id=None)
        assert intake.failure == "disk gone"
    finally:
        intake.close()


def test_an_intake_log_of_another_layout_is_refused_clearly(tmp_path: Path) -> None:
    import sqlite3

    from service.errors import StorageError

    path = tmp_path / "intake.sqlite"
    IntakeLog(path).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 7")
    con.close()
    with pytest.raises(StorageError, match="has schema version 7, this hindsight needs 1"):
        IntakeLog(path)
