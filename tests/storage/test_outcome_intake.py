"""The intake log: group commit, idempotency inside the transaction, persistence, fail-stop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from service.errors import IdempotencyConflict, NotReady, PayloadTooLarge
from storage import outcome_intake
from storage.outcome_intake import INLINE_MAX_OUTCOMES, Callback, Deliver, IntakeLog, Result, open_intake
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


def test_rows_over_one_parameter_go_in_several_statements_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome_intake, "PARAMETER_BYTES", 2_000)
    ids = [f"id{n:04d}" for n in range(600)]
    chunks = list(outcome_intake._json_chunks(ids))
    assert len(chunks) > 1 and all(len(c) <= 2_000 for c in chunks)
    assert [i for c in chunks for i in orjson.loads(c)] == ids
    with open_intake(tmp_path / "intake.sqlite") as intake:
        assert intake.append(outcomes(*ids), key_id="k") == ["created"] * 600
        assert [r[1] for r in intake.pending(0, 1_000)] == ids  # seq follows the request's order
        assert [r[0] for r in intake.pending(0, 1_000)] == list(range(1, 601))
        # the idempotency lookup is chunked too: every id is found again
        assert intake.append(outcomes(*ids), key_id="k") == ["duplicate"] * 600
        with pytest.raises(IdempotencyConflict) as caught:
            intake.append(outcomes("new", ids[-1], value=2), key_id="k")
        assert caught.value.details == [{"index": 1, "outcome_id": ids[-1]}]


def test_a_group_stops_draining_the_queue_at_its_outcome_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome_intake, "GROUP_MAX_OUTCOMES", 3)
    with open_intake(tmp_path / "intake.sqlite", group_commit_ms=300) as intake:
        futures = [intake.submit(outcomes(f"a{n}", f"b{n}"), key_id=None) for n in range(8)]
        assert [f.result() for f in futures] == [["created", "created"]] * 8
        assert intake.commits >= 4  # at most two submissions of two outcomes a group


def test_a_value_over_sqlite_limits_fails_its_group_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome_intake, "PARAMETER_BYTES", 1_000)
    with open_intake(tmp_path / "intake.sqlite") as intake:
        intake._write.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 4_000)  # as 1 GB of outcomes would meet 1e9
        many = [f"m{n:03d}" for n in range(200)]  # ~10 kB of rows: stored in statements under the limit
        assert intake.append(outcomes(*many), key_id=None) == ["created"] * 200
        with pytest.raises(PayloadTooLarge, match="over the intake log's size limit"):
            intake.append(outcomes("big", value="x" * 5_000), key_id=None)
        assert intake.failure is None  # not latched: the next write is stored
        assert intake.append(outcomes("small"), key_id=None) == ["created"]
        assert [r[1] for r in intake.pending(0, 300)] == [*many, "small"]


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
    from service.errors import StorageError

    path = tmp_path / "intake.sqlite"
    IntakeLog(path).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 7")
    con.close()
    with pytest.raises(StorageError, match="has schema version 7, this hindsight needs 2"):
        IntakeLog(path)


# -- loop mode: small submissions committed on the event loop, one transaction per iteration ------


def _loop_mode(path: Path, loop: asyncio.AbstractEventLoop) -> IntakeLog:
    return IntakeLog(path, call_soon=loop.call_soon, deliver=_on(loop))


def _on(loop: asyncio.AbstractEventLoop) -> Deliver:
    def deliver(calls: list[tuple[Callback, Result]]) -> None:
        loop.call_soon_threadsafe(lambda: [callback(result) for callback, result in calls])

    return deliver


async def _store(intake: IntakeLog, batch: list, key_id: str = "k", *, large: bool = False) -> list[str]:  # type: ignore[type-arg]
    future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    def done(result: Result) -> None:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    intake.submit_callback(batch, key_id, done, large=large)
    return await future


def _spy_commits(intake: IntakeLog) -> list[str]:
    """The name of the thread each group is committed on, from now on."""
    committed_on: list[str] = []
    original = intake._commit_group

    def spy(group: list, con: sqlite3.Connection) -> list:  # type: ignore[type-arg]
        committed_on.append(threading.current_thread().name)
        return original(group, con)

    intake._commit_group = spy  # type: ignore[method-assign]
    return committed_on


def test_loop_mode_sends_a_large_body_to_the_writer_thread_however_few_its_outcomes(tmp_path: Path) -> None:
    # one 14 MiB outcome was encoded and inserted on the loop, which answered nobody for ~300 ms
    async def main() -> None:
        intake = _loop_mode(tmp_path / "intake.sqlite", asyncio.get_running_loop())
        try:
            committed_on = _spy_commits(intake)
            assert await _store(intake, outcomes("big"), large=True) == ["created"]
            assert await _store(intake, outcomes("small")) == ["created"]
            assert committed_on == ["hindsight-intake-writer", threading.current_thread().name]
        finally:
            intake.close()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_a_value_over_sqlite_limits_fails_its_own_submission_not_its_group(tmp_path: Path, mode: str) -> None:
    # every submission committed in the same transaction got the big one's 413
    async def main() -> None:
        loop = asyncio.get_running_loop()
        intake = _loop_mode(tmp_path / "intake.sqlite", loop) if mode == "loop" else None
        intake = intake or IntakeLog(tmp_path / "intake.sqlite", group_commit_ms=300, deliver=_on(loop))
        try:
            con = intake._loop_write if mode == "loop" else intake._write
            assert con is not None
            con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 4_000)
            committed_on = _spy_commits(intake)
            results = await asyncio.gather(
                _store(intake, outcomes("a")),
                _store(intake, outcomes("big", value="x" * 5_000)),
                _store(intake, outcomes("b")),
                return_exceptions=True,
            )
            assert results[0] == results[2] == ["created"]
            assert isinstance(results[1], PayloadTooLarge)
            assert committed_on[0] == committed_on[-1] and len(committed_on) == 4  # together, then alone
            assert intake.failure is None
            assert sorted(r[1] for r in intake.pending(0, 10)) == ["a", "b"]
        finally:
            intake.close()

    asyncio.run(main())


def test_loop_mode_commits_one_iterations_submissions_together_on_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        intake = _loop_mode(tmp_path / "intake.sqlite", asyncio.get_running_loop())
        try:
            first = await asyncio.gather(*(_store(intake, outcomes(f"id{n}")) for n in range(8)))
            assert first == [["created"]] * 8
            assert intake.commits == 1  # all eight were submitted in one iteration: one transaction
            early = asyncio.ensure_future(_store(intake, outcomes("early")))
            await asyncio.sleep(0)  # a loop iteration later, before the group's commit
            late = asyncio.ensure_future(_store(intake, outcomes("late")))
            assert await asyncio.gather(early, late) == [["created"], ["created"]]
            assert intake.commits == 2  # the later one joined the group of the earlier one
            again = await asyncio.gather(
                _store(intake, outcomes("id1", "new")), _store(intake, outcomes("id2"))
            )
            assert again == [["duplicate", "created"], ["duplicate"]]
            with pytest.raises(IdempotencyConflict):
                await _store(intake, outcomes("id3", value=2))
            assert intake.commits == 4
        finally:
            intake.close()

    asyncio.run(main())
    with open_intake(tmp_path / "intake.sqlite") as reopened:  # durable: committed, not just queued
        assert sorted(r[1] for r in reopened.pending(0, 100)) == sorted(
            [*(f"id{n}" for n in range(8)), "early", "late", "new"]
        )


def test_loop_mode_hands_a_group_to_the_writer_thread_while_another_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "intake.sqlite"

    async def main() -> None:
        intake = _loop_mode(path, asyncio.get_running_loop())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # as `outcomes import` in another process would
            stored = asyncio.ensure_future(_store(intake, outcomes("a")))
            await asyncio.sleep(0.3)
            assert not stored.done()  # not failed with "database is locked": the thread waits
            assert intake.failure is None
            other.execute("COMMIT")
            assert await stored == ["created"]
            assert intake.failure is None
        finally:
            other.close()
            intake.close()

    asyncio.run(main())


def test_loop_mode_never_waits_on_the_loop_for_an_in_process_writer(tmp_path: Path) -> None:
    async def main() -> None:
        intake = _loop_mode(tmp_path / "intake.sqlite", asyncio.get_running_loop())
        try:
            with intake._write_lock:  # as while the writer thread commits a batch or the flusher trims
                stored = asyncio.ensure_future(_store(intake, outcomes("a")))
                await asyncio.sleep(0.2)  # the loop keeps running: the group went to the writer thread
                assert not stored.done()
            assert await stored == ["created"]
        finally:
            intake.close()

    asyncio.run(main())


def test_loop_mode_sends_batches_to_the_writer_thread_and_keeps_fail_stop(tmp_path: Path) -> None:
    batch = outcomes(*(f"b{n}" for n in range(INLINE_MAX_OUTCOMES + 1)))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        intake = IntakeLog(tmp_path / "intake.sqlite", call_soon=loop.call_soon, deliver=_on(loop))
        try:
            committed_on: list[str] = []
            original = intake._commit_group

            def spy(group: list, con: sqlite3.Connection) -> list:  # type: ignore[type-arg]
                committed_on.append(threading.current_thread().name)
                return original(group, con)

            intake._commit_group = spy  # type: ignore[method-assign]
            assert await _store(intake, batch) == ["created"] * len(batch)
            assert await _store(intake, outcomes("single")) == ["created"]
            assert committed_on == ["hindsight-intake-writer", threading.current_thread().name]
            intake.fail("disk gone")
            with pytest.raises(NotReady, match="disk gone"):
                await _store(intake, outcomes("late"))
        finally:
            intake.close()

    asyncio.run(main())


def test_loop_mode_same_outcome_id_twice_in_one_group(tmp_path: Path) -> None:
    async def main() -> None:
        intake = _loop_mode(tmp_path / "intake.sqlite", asyncio.get_running_loop())
        try:
            results = await asyncio.gather(
                _store(intake, outcomes("x")),
                _store(intake, outcomes("x", value=2)),
                _store(intake, outcomes("x")),
                return_exceptions=True,
            )
            assert intake.commits == 1  # one group, one transaction
            assert results[0] == ["created"]
            assert isinstance(results[1], IdempotencyConflict)  # same id, another body: 409
            assert results[2] == ["duplicate"]
        finally:
            intake.close()

    asyncio.run(main())


def test_loop_mode_close_commits_a_group_still_waiting_for_its_iteration(tmp_path: Path) -> None:
    answered: list[Result] = []

    async def main() -> None:
        intake = _loop_mode(tmp_path / "intake.sqlite", asyncio.get_running_loop())
        intake.submit_callback(outcomes("pending"), "k", answered.append)
        assert answered == []  # the group's commit is still scheduled some iterations ahead
        intake.close()
        assert answered == [["created"]]  # close committed it and answered, rather than dropping it

    asyncio.run(main())
    with open_intake(tmp_path / "intake.sqlite") as reopened:
        assert [r[1] for r in reopened.pending(0, 10)] == ["pending"]


def test_loop_mode_needs_a_deliver_that_reaches_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="needs a deliver that reaches the loop"):
            IntakeLog(tmp_path / "intake.sqlite", call_soon=asyncio.get_running_loop().call_soon)

    asyncio.run(main())
