"""Kafka ingestion in-process against a real broker: exact rows, resume from the table, gaps, outages."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from ingest.kafka_batch import PendingBatch, build_lines
from ingest.kafka_commit import PartitionNames, commit_batch
from ingest.kafka_config import BatchRules, KafkaSource
from ingest.kafka_consumer import KafkaIngestSummary, ingest_kafka
from ingest.parser import LineParser
from service.errors import BrokerUnavailable, ConfigError, SourceError
from storage.commit import committed_position, open_table
from storage.layout import Layout
from tests.ingest.lines import DROP, lines_table, make_batch_message, make_line, make_message, make_query_line
from tests.kafka_broker import (
    FAST_GROUP_SETTINGS,
    Broker,
    create_topic,
    free_port,
    produce,
    produce_transaction,
    start_tansu,
    unique_topic,
)

pytestmark = pytest.mark.kafka

KEPT = ["record_id", "ts", "day", "service_id", "endpoint_id", "generation", "msg_type", "features"]


def _source(
    broker: Broker, topic: str, group: str | None = None, *, epoch: int = 0, **options: Any
) -> KafkaSource:
    return KafkaSource(
        bootstrap=broker.bootstrap,
        topic=topic,
        group=group or f"g-{topic}",
        session_timeout_ms=FAST_GROUP_SETTINGS["session_timeout_ms"],
        heartbeat_interval_ms=FAST_GROUP_SETTINGS["heartbeat_interval_ms"],
        options=options,
        epoch=epoch,
    )


def _run(root: Path, source: KafkaSource, **rules: Any) -> KafkaIngestSummary:
    chosen: dict[str, Any] = {"max_seconds": 0.3, "until_idle": 1.0, "unavailable_timeout": 20.0}
    chosen.update(rules)
    return ingest_kafka(root, source, BatchRules(**chosen))


def _table(root: Path, name: str) -> pa.Table:
    table = open_table(Layout(root).table(name))
    assert table is not None, f"no {name} table under {root}"
    return table.to_pyarrow_table()


def _positions(root: Path, topic: str, partitions: int) -> dict[int, int | None]:
    table = open_table(Layout(root).predictions)
    return {p: committed_position(table, f"kafka:{topic}:{p}") for p in range(partitions)}


def _kafka_offsets(broker: Broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def _set_kafka_offsets(broker: Broker, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def _customer_line(i: int, envelope: str = "A", newline: str = "") -> bytes:
    return make_query_line(envelope, context={"customer_id": f"C-{i}"}, newline=newline)  # type: ignore[arg-type]


def _customers(root: Path) -> list[str]:
    import json

    return sorted(json.loads(c)["customer_id"] for c in _table(root, "predictions")["context"].to_pylist())


# -- end to end --------------------------------------------------------------------------------


def test_every_envelope_lands_once_with_the_record_id_a_file_gives(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("e2e"), partitions=2)
    good = [
        make_query_line("A"),
        make_query_line("A", newline="\n", context={"customer_id": "C-2"}),
        make_query_line("B", newline="\r\n"),
        make_query_line("C"),
        make_query_line("bare", newline="\n"),
        make_line(make_batch_message(3), "B"),
    ]
    bad = [b"this is not json", b'{"timestamp": "2026/03/02-09:15:04.112Z", "message": \xff\xfe}']
    values: list[bytes | None] = [*good, *bad, None]
    partitions = [0, 1, 0, 1, 0, 1, 0, 1, 0]
    produce(kafka_broker.bootstrap, topic, values, partitions=partitions)
    offsets = _offsets_by_partition(partitions)

    summary = _run(tmp_path, _source(kafka_broker, topic))

    parser = LineParser()
    from_file = parser.parse(lines_table(good + bad, source="queries.log"))
    got = _table(tmp_path, "predictions").sort_by("record_id")
    assert got.select(KEPT).to_pylist() == from_file.predictions.sort_by("record_id").select(KEPT).to_pylist()
    assert got.num_rows == 8  # five single records and a batch of three
    expected_sources = sorted(
        [
            (f"{topic}/{partitions[i]}", offsets[i])
            for i in range(len(good))
            for _ in range(3 if i == 5 else 1)
        ]
    )
    assert sorted(zip(got["source"].to_pylist(), got["source_position"].to_pylist(), strict=True)) == (
        expected_sources
    )

    quarantine = _table(tmp_path, "quarantine").sort_by(
        [("source", "ascending"), ("source_position", "ascending")]
    )
    reasons = {r["raw_bytes"]: r["reason"] for r in from_file.quarantine.to_pylist()}
    assert quarantine.select(["source", "source_position", "reason", "raw_bytes"]).to_pylist() == [
        {
            "source": f"{topic}/{partitions[i]}",
            "source_position": offsets[i],
            "reason": reasons[len(values[i] or b"")],
            "raw_bytes": len(values[i] or b""),
        }
        for i in sorted((6, 7), key=lambda i: (partitions[i], offsets[i]))
    ]
    ends = {0: offsets[8] + 1, 1: offsets[7] + 1}
    assert _positions(tmp_path, topic, 2) == ends
    assert _kafka_offsets(kafka_broker, f"g-{topic}", topic, 2) == ends
    assert (summary.messages, summary.records, summary.quarantined, summary.tombstones) == (9, 8, 2, 1)
    assert (summary.partitions, summary.positions, summary.stopped_by) == ({0, 1}, ends, "idle")


def _offsets_by_partition(partitions: list[int]) -> list[int]:
    """Offsets a fresh topic gives to values sent to `partitions`, in order."""
    seen: dict[int, int] = {}
    out = []
    for p in partitions:
        out.append(seen.get(p, 0))
        seen[p] = out[-1] + 1
    return out


def test_resume_follows_the_table_whatever_kafka_offsets_say(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("resume"), partitions=2)
    group = f"g-{topic}"
    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(6)], partitions=[0, 1] * 3)
    _run(tmp_path, _source(kafka_broker, topic))
    assert _positions(tmp_path, topic, 2) == {0: 3, 1: 3}

    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(6, 10)], partitions=[0, 1] * 2)
    # Kafka's offsets are reset behind the table on one partition and run ahead of it on the other.
    _set_kafka_offsets(kafka_broker, group, topic, {0: 0, 1: 5})
    summary = _run(tmp_path, _source(kafka_broker, topic))

    assert summary.messages == 4
    assert _customers(tmp_path) == sorted(f"C-{i}" for i in range(10))
    assert _positions(tmp_path, topic, 2) == {0: 5, 1: 5}
    assert _kafka_offsets(kafka_broker, group, topic, 2) == {0: 5, 1: 5}


def test_offset_gaps_move_the_position_to_the_last_offset_seen(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("gaps"), partitions=1)
    produce(kafka_broker.bootstrap, topic, [_customer_line(0), _customer_line(1)], partition=0)
    produce_transaction(
        kafka_broker.bootstrap, topic, [_customer_line(2), _customer_line(3)], partition=0, commit=True
    )
    produce_transaction(
        kafka_broker.bootstrap, topic, [_customer_line(90), _customer_line(91)], partition=0, commit=False
    )
    produce_transaction(kafka_broker.bootstrap, topic, [_customer_line(4)], partition=0, commit=True)

    summary = _run(tmp_path, _source(kafka_broker, topic))

    rows = _table(tmp_path, "predictions")
    seen = sorted(rows["source_position"].to_pylist())
    assert _customers(tmp_path) == [f"C-{i}" for i in range(5)]  # aborted records never show up
    assert seen[-1] + 1 > len(seen), f"expected transaction markers to leave gaps, offsets were {seen}"
    assert _positions(tmp_path, topic, 1) == {0: seen[-1] + 1}
    assert summary.positions == {0: seen[-1] + 1}


def test_a_writer_fenced_off_its_partition_reseeks_to_the_table_position(
    kafka_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("fence"), partitions=1)
    first = [_customer_line(i) for i in range(10)]
    produce(kafka_broker.bootstrap, topic, first, partition=0)
    result: list[KafkaIngestSummary] = []
    with caplog.at_level(logging.INFO, logger="hindsight.ingest.kafka"):
        # Batches wait 2 s, so the other writer below commits while ours is still in memory.
        worker = threading.Thread(
            target=lambda: result.append(_run(tmp_path, _source(kafka_broker, topic), max_seconds=2.0))
        )
        worker.start()
        _wait_for(lambda: any("assigned" in r.getMessage() for r in caplog.records), seconds=30)
        # Another writer (one that took the partition over, say) commits offsets 0-9 first.
        other = LineParser().parse(lines_table(first, source=f"{topic}/0", positions=list(range(10))))
        commit_batch(tmp_path, PartitionNames(topic), {0: 10}, other.predictions, other.quarantine)
        _wait_for(lambda: any("another writer" in r.getMessage() for r in caplog.records), seconds=30)
        produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(10, 15)], partition=0)
        worker.join(timeout=60)
    summary = result[0]
    assert (summary.fenced, summary.records, summary.positions) == (1, 5, {0: 15})
    assert _customers(tmp_path) == sorted(f"C-{i}" for i in range(15))


def test_a_run_that_moves_nothing_reports_every_known_position(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("known"), partitions=2)
    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(4)], partitions=[0, 1] * 2)
    _run(tmp_path, _source(kafka_broker, topic))
    again = _run(tmp_path, _source(kafka_broker, topic))
    assert (again.messages, again.positions) == (0, {0: 2, 1: 2})  # was {}: only this run's commits
    assert again.partitions == {0, 1}  # was "0 partitions": only those that had messages


def test_latest_starts_at_the_end_once_and_resumes_there(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("latest"), partitions=1)
    for i in range(3):  # one record batch each: tansu 0.6 gives a batch's base offset + 1 as the end
        produce(kafka_broker.bootstrap, topic, [_customer_line(i)], partition=0)
    first = _run(tmp_path, _source(kafka_broker, topic, **{"auto.offset.reset": "latest"}))
    assert first.messages == 0
    assert _positions(tmp_path, topic, 1) == {0: 3}  # the end it started at, committed with no rows
    # produced between two runs, with no message during the first: "latest" used to be resolved again
    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(3, 8)], partition=0)
    second = _run(tmp_path, _source(kafka_broker, topic, **{"auto.offset.reset": "latest"}))
    assert second.messages == 5
    assert _customers(tmp_path) == [f"C-{i}" for i in range(3, 8)]


def test_a_new_source_epoch_reads_the_topic_afresh_under_positions_of_its_own(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("epoch"), partitions=1)
    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(3)], partition=0)
    _run(tmp_path, _source(kafka_broker, topic))
    # epoch 1 has no position yet: read from the start
    assert _run(tmp_path, _source(kafka_broker, topic, epoch=1)).records == 3
    table = open_table(Layout(tmp_path).predictions)
    assert (
        committed_position(table, f"kafka:{topic}:0") == committed_position(table, f"kafka:{topic}@1:0") == 3
    )
    sources = _table(tmp_path, "predictions")["source"].to_pylist()
    assert sorted(sources) == [f"{topic}/0"] * 3 + [f"{topic}@1/0"] * 3


@pytest.mark.parametrize(
    ("position", "action"),
    [(50, "stop"), (4, "retry"), (3, "retry"), (2, "retry"), (1, "skip_deleted")],
)
def test_a_refused_position_is_judged_by_the_partition_offsets(position: int, action: str) -> None:
    from ingest.kafka_consumer import out_of_range_action

    assert out_of_range_action(position, low=2, high=4) == action


def test_a_position_past_the_partition_end_stops_and_a_new_epoch_reads_afresh(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    if kafka_broker.process is not None:
        pytest.skip("tansu 0.6 answers a fetch past a partition's end with nothing, not OFFSET_OUT_OF_RANGE")
    topic = create_topic(kafka_broker.bootstrap, unique_topic("recreated"), partitions=1)
    # the table read 50 messages of an earlier topic of this name; the new one holds 3
    old = LineParser().parse(lines_table([_customer_line(100)], source=f"{topic}/0", positions=[49]))
    commit_batch(tmp_path, PartitionNames(topic), {0: 50}, old.predictions, old.quarantine)
    produce(kafka_broker.bootstrap, topic, [_customer_line(i) for i in range(3)], partition=0)
    with pytest.raises(SourceError, match=r"ends at offset 3, but the table has read it up to offset 50"):
        _run(tmp_path, _source(kafka_broker, topic))
    assert _customers(tmp_path) == ["C-100"]  # nothing skipped, nothing written
    summary = _run(tmp_path, _source(kafka_broker, topic, epoch=1))
    assert summary.records == 3
    assert _customers(tmp_path) == ["C-0", "C-1", "C-100", "C-2"]
    table = open_table(Layout(tmp_path).predictions)
    assert committed_position(table, f"kafka:{topic}@1:0") == 3
    assert committed_position(table, f"kafka:{topic}:0") == 50
    assert sorted(set(_table(tmp_path, "predictions")["source"].to_pylist())) == [
        f"{topic}/0",
        f"{topic}@1/0",
    ]


def test_batches_stay_under_the_byte_limit(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("bytes"), partitions=1)
    big = [make_query_line("A", context={"customer_id": f"C-{i}", "pad": "x" * 2000}) for i in range(12)]
    produce(kafka_broker.bootstrap, topic, big, partition=0)
    summary = _run(tmp_path, _source(kafka_broker, topic), max_bytes=5000, max_seconds=5.0)
    assert summary.records == 12
    assert summary.commits >= 4  # at most 3 values of ~2.2 KB in a batch of at most 5,000 bytes


# -- errors ------------------------------------------------------------------------------------


def test_unreachable_broker_at_start_fails_clearly_after_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    source = KafkaSource(bootstrap=f"127.0.0.1:{port}", topic="queries", group="g")
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="hindsight.ingest.kafka"),
        pytest.raises(BrokerUnavailable) as err,
    ):
        ingest_kafka(tmp_path, source, BatchRules(unavailable_timeout=4.0))
    took = time.monotonic() - started
    assert err.value.message.startswith(
        f"Kafka broker 127.0.0.1:{port} still unreachable after 4 s of retries"
    )
    assert err.value.details["bootstrap"] == f"127.0.0.1:{port}"
    assert took >= 4.0, took  # it kept retrying for the whole allowance before giving up
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 2 and all(f"Kafka broker 127.0.0.1:{port} unreachable" in m for m in retries), (
        retries
    )
    assert "attempt 1, retrying in 0.5 s" in retries[0]
    assert "attempt 2, retrying in " in retries[1]  # 1.0 s, or what is left of the allowance
    assert open_table(Layout(tmp_path).predictions) is None


def test_a_missing_topic_is_a_clear_error(kafka_broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Kafka topic 'no-such-topic-x' does not exist"):
        _run(tmp_path, _source(kafka_broker, "no-such-topic-x"))


def test_a_broker_lost_mid_run_stops_with_everything_read_committed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = start_tansu(tmp_path / "own-broker")  # our own broker: this test kills it
    try:
        topic = create_topic(broker.bootstrap, unique_topic("outage"), partitions=1)
        produce(broker.bootstrap, topic, [_customer_line(i) for i in range(5)], partition=0)
        failure: list[BaseException] = []

        def _consume() -> None:
            try:
                _run(tmp_path, _source(broker, topic), until_idle=None, unavailable_timeout=2.0)
            except BaseException as exc:
                failure.append(exc)

        with caplog.at_level(logging.INFO, logger="hindsight.ingest.kafka"):
            worker = threading.Thread(target=_consume)
            worker.start()
            _wait_for(lambda: _row_count(tmp_path) == 5, seconds=30)
            broker.stop()
            worker.join(timeout=60)
        assert not worker.is_alive()
        assert len(failure) == 1 and isinstance(failure[0], BrokerUnavailable), failure
        assert _customers(tmp_path) == [f"C-{i}" for i in range(5)]
        assert _positions(tmp_path, topic, 1) == {0: 5}
        assert any("brokers" in r.getMessage() and "down" in r.getMessage() for r in caplog.records)
    finally:
        broker.stop()


def _row_count(root: Path) -> int:
    table = open_table(Layout(root).predictions)
    return 0 if table is None else table.to_pyarrow_table().num_rows


def _wait_for(condition: Any, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(0.2)


# -- configuration and batches (no broker) -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bootstrap": "localhost"}, "invalid Kafka bootstrap 'localhost'"),
        ({"bootstrap": "a:1,b"}, "invalid Kafka bootstrap 'a:1,b'"),
        ({"topic": "bad topic"}, "invalid Kafka topic name 'bad topic'"),
        ({"options": {"enable.auto.commit": True}}, "enable.auto.commit are set by hindsight itself"),
        ({"options": {"auto.offset.reset": "sideways"}}, "auto.offset.reset must be earliest or latest"),
        (
            {"heartbeat_interval_ms": 6000, "session_timeout_ms": 6000},
            "heartbeat_interval_ms (6000) must be below",
        ),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    chosen: dict[str, Any] = {"bootstrap": "127.0.0.1:9092", "topic": "queries"}
    chosen.update(kwargs)
    with pytest.raises(ConfigError) as err:
        KafkaSource(**chosen).consumer_config()
    assert message in err.value.message


def test_an_unknown_librdkafka_option_is_a_config_error(tmp_path: Path) -> None:
    source = KafkaSource(bootstrap="127.0.0.1:9092", topic="queries", options={"no.such.option": "1"})
    with pytest.raises(ConfigError, match=r"invalid Kafka client configuration: .*no\.such\.option"):
        ingest_kafka(tmp_path, source, BatchRules())


def test_batch_becomes_one_parser_table_with_tombstones_left_out() -> None:
    batch = PendingBatch(
        values=[b"a\n", None, b"bcd", b""],
        partitions=[2, 0, 2, 0],
        offsets=[10, 7, 15, 9],
        timestamps=[1_700_000_000_123, 5, -1, 0],
    )
    built = build_lines(batch, {0: "t/0", 2: "t/2"})
    assert built.tombstones == 1
    assert built.lines.to_pylist() == [
        {
            "line": b"a\n",
            "source": "t/2",
            "source_position": 10,
            "line_bytes": 2,
            "fallback_ts": _utc_ms(1_700_000_000_123),
        },
        {"line": b"bcd", "source": "t/2", "source_position": 15, "line_bytes": 3, "fallback_ts": None},
        {"line": b"", "source": "t/0", "source_position": 9, "line_bytes": 0, "fallback_ts": _utc_ms(0)},
    ]
    assert batch.ends() == {0: 10, 2: 16}  # last offset seen + 1 (the tombstone at 7 counts too)


def test_an_over_long_value_is_quarantined_as_an_over_long_line_is() -> None:
    line = _customer_line(1)
    batch = PendingBatch(
        values=[line, line + b" " * 200], partitions=[0, 0], offsets=[0, 1], timestamps=[0, 0]
    )
    built = build_lines(batch, {0: "t/0"}, max_line_bytes=len(line) + 10)
    assert built.lines["line_bytes"].to_pylist() == [len(line), len(line) + 200]
    assert built.lines["line"].to_pylist()[1] == (line + b" " * 200)[: len(line) + 10]
    parsed = LineParser().parse(built.lines)
    assert parsed.predictions.num_rows == 1
    assert parsed.quarantine["reason"].to_pylist() == [
        f"line of {len(line) + 200} bytes exceeds the reader's line size limit "
        f"(only {len(line) + 10} bytes were read)"
    ]


def test_a_message_timestamp_out_of_range_is_quarantined_with_its_reason() -> None:
    # an event without a timestamp of its own takes the message's: 2^62 ms wrapped to a 1970 record, and
    # the out-of-range reason was a JSON conversion error
    line = make_line(make_message(), "A", timestamp=DROP)
    stamps = [1_700_000_000_000, 1_700_000_000_000_000, 2**62, 2**63 - 1, 1_764_748_800_000_000_000]
    batch = PendingBatch(
        values=[line] * len(stamps),
        partitions=[0] * len(stamps),
        offsets=list(range(len(stamps))),
        timestamps=stamps,
    )
    parsed = LineParser().parse(build_lines(batch, {0: "t/0"}).lines)
    assert parsed.predictions["ts"].to_pylist() == [_utc_ms(1_700_000_000_000)]
    assert parsed.quarantine["reason"].to_pylist() == [
        "timestamp out of range (1900 to 2199): fallback 55840-11-08 22:13:20+00",
        *["timestamp out of range (1900 to 2199): fallback 294247-01-10 04:00:54.775+00"] * 3,
    ]


@pytest.mark.parametrize(
    ("pending", "pending_bytes", "mean", "expected"),
    [
        (0, 0, 2048.0, 10_000),  # the consume chunk
        (95, 0, 10.0, 5),  # room left under max_messages=100 (it used to ask for 100 whatever was pending)
        (0, 0, 1_048_576.0, 64),  # 64 values of 1 MiB fill the 64 MiB byte limit
        (10, 60_000_000, 1_000_000.0, 7),
        (10, 70_000_000, 1_000_000.0, 1),  # past the limit: the batch is flushed next; ask for one
    ],
)
def test_consume_count_keeps_batches_under_both_limits(
    pending: int, pending_bytes: int, mean: float, expected: int
) -> None:
    from ingest.kafka_consumer import consume_count

    batch = PendingBatch(values=[b""] * pending, partitions=[0] * pending, offsets=list(range(pending)))
    batch.timestamps = [0] * pending
    batch.value_bytes = pending_bytes
    rules = BatchRules(max_messages=100 if pending == 95 else 100_000)
    assert consume_count(rules, batch, mean) == expected


def _utc_ms(ms: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def test_commits_fence_stale_writers_and_replays(tmp_path: Path) -> None:
    names = PartitionNames("t")
    parser = LineParser()

    def _parsed(positions: list[int], bad: tuple[int, ...] = ()) -> Any:
        lines = [b"not json" if p in bad else _customer_line(p) for p in positions]
        return parser.parse(lines_table(lines, source="t/0", positions=positions))

    first = _parsed(list(range(10)), bad=(4,))
    done = commit_batch(tmp_path, names, {0: 10}, first.predictions, first.quarantine)
    assert (done.rows_written, done.quarantined_written, done.positions, done.stale) == (9, 1, {0: 10}, {})

    replay = commit_batch(tmp_path, names, {0: 10}, first.predictions, first.quarantine)  # after a crash
    assert (replay.rows_written, replay.rows_already_committed, replay.stale) == (0, 9, {0: 10})

    stale = _parsed(list(range(6)), bad=(4,))  # a writer that lost the partition long ago
    fenced = commit_batch(tmp_path, names, {0: 6}, stale.predictions, stale.quarantine)
    assert (fenced.rows_written, fenced.stale) == (0, {0: 10})

    overlap = _parsed(list(range(8, 15)))  # a writer that started before our last commit
    moved = commit_batch(tmp_path, names, {0: 15}, overlap.predictions, overlap.quarantine)
    assert (moved.rows_written, moved.rows_already_committed, moved.positions) == (5, 2, {0: 15})

    assert _customers(tmp_path) == sorted(f"C-{i}" for i in range(15) if i != 4)
    assert _table(tmp_path, "quarantine")["source_position"].to_pylist() == [4]


class _RefusingBroker:
    """The two calls `_out_of_range` makes of the consumer, answered as a broker whose partition now holds
    offsets low..high-1. A stand-in, because tansu 0.6 never answers OFFSET_OUT_OF_RANGE."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.seeks: list[tuple[int, int]] = []

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        return self.low, self.high

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


class _Refused:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> Any:
        from confluent_kafka import KafkaError

        return KafkaError(KafkaError._AUTO_OFFSET_RESET)


@pytest.mark.parametrize(
    ("low", "high", "refused_at", "seek", "lost"),
    [
        (0, 200, 110, 110, 0),  # a leader change: read again from the same place
        (300, 400, 110, 300, 190),  # retention deleted 110-299 before they were read
        (0, 200, -1001, 110, 0),  # no offset in the error: where the partition was being read
    ],
)
def test_a_refused_position_keeps_what_was_gathered(
    tmp_path: Path, low: int, high: int, refused_at: int, seek: int, lost: int
) -> None:
    from ingest.kafka_consumer import _Ingestor

    source = KafkaSource(bootstrap="127.0.0.1:9", topic="t")
    ingestor = _Ingestor(tmp_path, source, BatchRules(), threading.Event())
    real = ingestor.consumer
    broker = _RefusingBroker(low, high)
    ingestor.consumer = broker  # type: ignore[assignment]
    try:
        ingestor.pending = PendingBatch(
            values=[b"x"] * 10, partitions=[0] * 10, offsets=list(range(100, 110)), timestamps=[0] * 10
        )
        ingestor._out_of_range(_Refused(refused_at))
        assert broker.seeks == [(0, seek)]
        assert len(ingestor.pending) == 10  # offsets 100-109 were dropped and then skipped over
        assert ingestor.summary.lost_to_retention == lost
        broker.high = 50
        with pytest.raises(SourceError, match="ends at offset 50, but the table has read it up to offset"):
            ingestor._out_of_range(_Refused(110))
    finally:
        real.close()
        ingestor.parsing.shutdown()
        ingestor.committing.shutdown()


class _Cluster:
    """A stand-in for the consumer's view of a cluster: metadata answers (the topic known or not), and
    the group never assigns anything, as when the broker's advertised address refuses connections."""

    def __init__(self, topic: str, *, known: bool = True) -> None:
        self.topic, self.known = topic, known
        self.consumed = 0
        self.on_consume: Callable[[], None] = lambda: None  # what the client's callbacks report meanwhile
        self.member: str | None = None  # the member id: set once the group coordinator has answered

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        from types import SimpleNamespace

        found = SimpleNamespace(error=None, partitions={0: None})
        return SimpleNamespace(topics={self.topic: found} if self.known else {})

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def memberid(self) -> str | None:
        return self.member

    def assign(self, partitions: list[Any]) -> None:
        pass

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        self.consumed += 1
        self.on_consume()
        time.sleep(min(timeout, 0.02))
        return []

    def poll(self, timeout: float = -1) -> None:
        return None

    def close(self) -> None:
        pass


def _ingestor_on(cluster: _Cluster, tmp_path: Path, rules: BatchRules, **source: Any) -> Any:
    from ingest.kafka_consumer import _Ingestor

    ingestor = _Ingestor(
        tmp_path, KafkaSource(bootstrap="127.0.0.1:9", topic="t", **source), rules, threading.Event()
    )
    ingestor.consumer.close()
    ingestor.consumer = cluster
    return ingestor


def _group_state(state: str) -> str:
    """Client statistics as librdkafka sends them to `stats_cb`, reduced to the consumer group's state."""
    return json.dumps({"name": "rdkafka#consumer-1", "cgrp": {"state": state, "join_state": "init"}})


def test_a_group_whose_coordinator_refuses_connections_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    # the bootstrap address answered, the advertised one refused: the run waited for ever, silently,
    # even with --until-idle (review finding)
    from confluent_kafka import KafkaError

    cluster = _Cluster("t")
    rules = BatchRules(until_idle=0.2, unavailable_timeout=30)
    ingestor = _ingestor_on(cluster, tmp_path, rules, session_timeout_ms=300, heartbeat_interval_ms=100)
    refused = "GroupCoordinator: 127.0.0.1:9: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    ingestor._on_error(KafkaError(KafkaError._TRANSPORT, refused))  # reported once, as librdkafka does
    cluster.on_consume = lambda: ingestor._on_stats(_group_state("wait-broker-transport"))
    started = time.monotonic()
    with pytest.raises(
        BrokerUnavailable, match=r"no partition of t was assigned 1 s after joining consumer group"
    ) as e:
        ingestor.run()  # deadline: give_up_after (0.2 s) + 3 session timeouts (0.9 s)
    assert time.monotonic() - started >= 1.0 and cluster.consumed > 1
    assert "client group state wait-broker-transport" in str(e.value)
    assert refused in str(e.value) and "advertised.listeners" in str(e.value)


def test_a_slow_rebalance_is_waited_for_up_to_the_rebalance_timeout(tmp_path: Path) -> None:
    # the coordinator is up and holds the join until the other members rejoin (up to max.poll.interval.ms);
    # three session timeouts ended such runs (second review finding)
    from confluent_kafka import KafkaError

    cluster = _Cluster("t")
    rules = BatchRules(until_idle=0.2, unavailable_timeout=30)
    ingestor = _ingestor_on(
        cluster,
        tmp_path,
        rules,
        session_timeout_ms=300,
        heartbeat_interval_ms=100,
        options={"max.poll.interval.ms": 2500},
    )
    polls: list[float] = []

    def client() -> None:
        # the coordinator connection is down for the first polls, then up; errors about another broker
        # (restarting meanwhile) at every poll do not count (third review finding)
        polls.append(time.monotonic())
        ingestor._on_stats(_group_state("wait-coord" if len(polls) < 5 else "up"))
        ingestor._on_error(KafkaError(KafkaError._TRANSPORT, "broker2:9092/2: Disconnected"))

    cluster.on_consume = client
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"did not end within its rebalance timeout") as e:
        ingestor.run()  # deadline: give_up_after (0.2 s) + rebalance timeout (2.5 s) + a session (0.3 s)
    assert time.monotonic() - started >= 3.0  # not at 1.1 s, the deadline when the coordinator is down
    assert "was assigned 3 s after joining consumer group" in str(e.value) and len(polls) > 5


def _run_losing_the_group(tmp_path: Path, leave: str, state: str) -> tuple[BaseException, list[float]]:
    """A run that joins at the first poll, has its assignment taken away by the group callback `leave`
    (`_on_lost` or `_on_revoke`) at the third, and whose client then reports group state `state`: the
    error it ends with, and when each poll came."""
    cluster = _Cluster("t")
    rules = BatchRules(until_idle=0.2, unavailable_timeout=30)
    ingestor = _ingestor_on(cluster, tmp_path, rules, session_timeout_ms=300, heartbeat_interval_ms=100)
    polls: list[float] = []

    def client() -> None:
        polls.append(time.monotonic())
        if len(polls) == 1:
            ingestor._on_stats(_group_state("up"))
            ingestor._on_assign(cluster, [])  # joined (nothing to read)
        elif len(polls) == 3:
            getattr(ingestor, leave)(cluster, [])
        elif len(polls) > 3:
            ingestor._on_stats(_group_state(state))

    cluster.on_consume = client
    with pytest.raises(BrokerUnavailable) as e:
        ingestor.run()  # not an idle stop: the group has given nothing since it took the assignment
    return e.value, polls


def test_a_rejoin_whose_coordinator_is_unreachable_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    # after a first join, the session expired and the coordinator's advertised address stopped answering:
    # the deadline applied to the first join only, and the run waited for ever (review finding)
    error, polls = _run_losing_the_group(tmp_path, "_on_lost", "wait-broker-transport")
    assert "was assigned 1 s after rejoining consumer group" in str(error)
    assert time.monotonic() - polls[2] >= 1.0  # give_up_after (0.2 s) + 3 session timeouts (0.9 s)
    assert "client group state wait-broker-transport" in str(error)


def test_an_eager_rebalance_that_never_assigns_again_ends_the_run(tmp_path: Path) -> None:
    # an eager rebalance starts by revoking the whole assignment
    error, _ = _run_losing_the_group(tmp_path, "_on_revoke", "query-coord")
    assert re.search(r"after rejoining consumer group .*unreachable", str(error))


def test_statistics_from_before_subscribing_do_not_shorten_the_join_deadline(tmp_path: Path) -> None:
    # statistics served while waiting for the topic started the coordinator's clock before the join did
    # (review finding): here that clock says 100 s, and the coordinator comes up at the fourth poll
    cluster = _Cluster("t")
    rules = BatchRules(until_idle=0.3, unavailable_timeout=30)
    ingestor = _ingestor_on(cluster, tmp_path, rules, session_timeout_ms=300, heartbeat_interval_ms=100)
    ingestor._on_stats(_group_state("query-coord"))
    ingestor.coordinator_down_since = time.monotonic() - 100
    polls: list[float] = []

    def client() -> None:
        polls.append(time.monotonic())
        if len(polls) < 4:
            ingestor._on_stats(_group_state("wait-broker-transport"))
        elif len(polls) == 4:
            ingestor._on_stats(_group_state("up"))
            ingestor._on_assign(cluster, [])

    cluster.on_consume = client
    summary = ingestor.run()
    assert summary.stopped_by == "idle" and len(polls) > 4


def test_a_topic_unknown_for_a_moment_after_an_outage_is_waited_for(tmp_path: Path) -> None:
    # a broker just restarted may answer "unknown topic" before its metadata is loaded: that ended the
    # run at once, whatever unavailable_timeout_s said, its gathered batch unflushed (review finding)
    cluster = _Cluster("t", known=False)
    ingestor = _ingestor_on(cluster, tmp_path, BatchRules(unavailable_timeout=30))
    try:
        ingestor.down_since = time.monotonic() - 5
        ingestor.next_probe = 0.0
        ingestor._watch_broker(time.monotonic())  # not yet reachable: no error
        assert ingestor.down_since is not None
        cluster.known = True
        ingestor.next_probe = 0.0
        ingestor._watch_broker(time.monotonic())
        assert ingestor.down_since is None  # reachable again
        cluster.known = False  # gone for longer than the timeout: the topic error, after a flush
        ingestor.down_since, ingestor.next_probe = time.monotonic() - 31, 0.0
        with pytest.raises(SourceError, match="Kafka topic 't' does not exist"):
            ingestor._watch_broker(time.monotonic())
    finally:
        ingestor.failed = True
        ingestor._close()


def test_a_refused_login_is_reported_at_once_not_as_an_unreachable_broker() -> None:
    # a metadata request sees only "transport failure"; the client's error callback says why
    from confluent_kafka import KafkaError, KafkaException

    from ingest.kafka_reach import wait_for_topic

    class Refusing:
        def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    def check() -> None:
        raise SourceError("Kafka client error: SASL authentication error: broker responded with unknown-user")

    started = time.monotonic()
    with pytest.raises(SourceError, match="SASL authentication error"):
        wait_for_topic(Refusing(), "127.0.0.1:9", "t", 60.0, threading.Event(), check=check)
    assert time.monotonic() - started < 5
