"""`hindsight ingest kafka` as real processes: signals, kill -9 at any moment, and a group of two."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from storage.commit import committed_position, open_table
from storage.layout import Layout
from tests.ingest.lines import make_query_line
from tests.kafka_broker import FAST_GROUP_SETTINGS, Broker, create_topic, free_port, produce, unique_topic

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


class Run:
    """One `hindsight ingest kafka` subprocess, its stderr kept in a file we can read while it runs."""

    def __init__(
        self,
        root: Path,
        broker: Broker,
        topic: str,
        *args: str,
        group: str | None = None,
        flags: bool = True,
        **env: str,
    ) -> None:
        self.log = root.parent / f"run-{time.monotonic_ns()}.log"
        full_env = {
            **os.environ,
            "HINDSIGHT_KAFKA__SESSION_TIMEOUT_MS": str(FAST_GROUP_SETTINGS["session_timeout_ms"]),
            "HINDSIGHT_KAFKA__HEARTBEAT_INTERVAL_MS": str(FAST_GROUP_SETTINGS["heartbeat_interval_ms"]),
            "HINDSIGHT_KAFKA__BATCH_MAX_SECONDS": "0.2",
            **env,
        }
        if "HINDSIGHT_CRASH_AT" not in env:
            full_env.pop("HINDSIGHT_CRASH_AT", None)
        full_env = {name: value for name, value in full_env.items() if value != ""}  # "" unsets
        command = [
            sys.executable,
            "-m",
            "service",
            "--root",
            str(root),
            "ingest",
            "kafka",
            *(
                ["--bootstrap", broker.bootstrap, "--topic", topic, "--group", group or f"g-{topic}"]
                if flags
                else []
            ),
            *args,
        ]
        with self.log.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=err
            )

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.stderr():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never logged {text!r}; stderr:\n{self.stderr()[-3000:]}")
            time.sleep(0.1)

    def finish(self, seconds: float = 60) -> tuple[int, str]:
        try:
            out, _ = self.process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(
                f"did not exit within {seconds} s; stderr:\n{self.stderr()[-3000:]}"
            ) from None
        return self.process.returncode, out.decode()


def _line(i: int) -> bytes:
    return make_query_line("A", context={"customer_id": f"C-{i}"}, newline="\n" if i % 2 else "")


def _table(root: Path, name: str) -> pa.Table:
    table = open_table(Layout(root).table(name))
    return pa.table({}) if table is None else table.to_pyarrow_table()


def _customers(root: Path) -> Counter[str]:
    table = _table(root, "predictions")
    if table.num_rows == 0:
        return Counter()
    return Counter(json.loads(c)["customer_id"] for c in table["context"].to_pylist())


def _assert_exactly_once(
    root: Path, topic: str, good: set[str], bad: set[tuple[str, int]], ends: dict[int, int]
) -> None:
    customers = _customers(root)
    duplicated = {c: n for c, n in customers.items() if n > 1}
    assert not duplicated, f"records written more than once: {sorted(duplicated)[:10]}"
    assert set(customers) == good, (
        f"missing {sorted(good - set(customers))[:10]}, extra {set(customers) - good}"
    )
    quarantine = _table(root, "quarantine")
    found = list(
        zip(quarantine["source"].to_pylist(), quarantine["source_position"].to_pylist(), strict=True)
    )
    assert sorted(found) == sorted(bad)
    predictions = open_table(Layout(root).predictions)
    assert {p: committed_position(predictions, f"kafka:{topic}:{p}") for p in ends} == ends


def _kafka_offsets(broker: Broker, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}"})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def _values(
    start: int, count: int, partitions: int
) -> tuple[list[bytes | None], list[int], set[str], list[int]]:
    """Lines C-start.. with a bad value every 23rd and a tombstone every 37th; round-robin partitions."""
    values: list[bytes | None] = []
    good: set[str] = set()
    bad: list[int] = []
    for i in range(start, start + count):
        if i % 23 == 5:
            values.append(f"garbage {i}".encode())
            bad.append(i - start)
        elif i % 37 == 7:
            values.append(None)
        else:
            values.append(_line(i))
            good.add(f"C-{i}")
    return values, [i % partitions for i in range(count)], good, bad


# -- signals and errors ------------------------------------------------------------------------


def test_sigterm_commits_the_batch_in_memory_and_exits_0(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("term"), partitions=2)
    produce(
        kafka_broker.bootstrap, topic, [_line(i) for i in range(60)], partitions=[i % 2 for i in range(60)]
    )
    root = tmp_path / "root"
    # A batch that would wait ten minutes: only the SIGTERM flush can commit it.
    run = Run(root, kafka_broker, topic, "--format", "json", HINDSIGHT_KAFKA__BATCH_MAX_SECONDS="600")
    run.wait_for_log("assigned")
    time.sleep(3)
    assert open_table(Layout(root).predictions) is None  # nothing committed before the signal
    run.process.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert code == 0, run.stderr()
    summary = json.loads(out)
    assert summary["stopped_by"] == "signal"
    assert summary["commits"] == 1 and summary["messages"] > 0, summary
    assert sum(_customers(root).values()) == summary["records"] == summary["messages"]
    positions = {int(p): pos for p, pos in summary["positions"].items()}
    assert _kafka_offsets(kafka_broker, topic, 2) == {p: positions.get(p, -1001) for p in range(2)}

    # The rest (if the signal came early), with the settings in <root>/hindsight.toml instead of flags.
    (root / "hindsight.toml").write_text(
        f'[kafka]\nbootstrap = "{kafka_broker.bootstrap}"\ntopic = "{topic}"\ngroup = "g-{topic}"\n'
        'batch_max_seconds = 0.2\n[kafka.options]\n"auto.offset.reset" = "earliest"\n',
        encoding="utf-8",
    )
    rest = Run(
        root, kafka_broker, topic, "--until-idle", "1", flags=False, HINDSIGHT_KAFKA__BATCH_MAX_SECONDS=""
    )
    assert rest.finish()[0] == 0, rest.stderr()
    assert _customers(root) == Counter(f"C-{i}" for i in range(60))


def test_unreachable_broker_is_one_clear_error_line(tmp_path: Path) -> None:
    broker = Broker(bootstrap=f"127.0.0.1:{free_port()}")
    run = Run(tmp_path / "root", broker, "queries", "--until-idle", "2", "--format", "json")
    code, out = run.finish()
    assert code == 1
    assert out == ""
    error = json.loads(run.stderr().strip().splitlines()[-1])["error"]
    assert error["type"] == "BrokerUnavailable"
    assert error["message"].startswith(
        f"Kafka broker {broker.bootstrap} still unreachable after 2 s of retries"
    )
    assert "attempt 1, retrying in " in run.stderr()


# -- crashes -----------------------------------------------------------------------------------


def test_kill_9_at_any_moment_loses_and_duplicates_nothing(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("kill"), partitions=3)
    root = tmp_path / "root"
    small = {"HINDSIGHT_KAFKA__BATCH_MAX_MESSAGES": "40"}
    good: set[str] = set()
    bad: set[tuple[str, int]] = set()
    sent: Counter[int] = Counter()

    def _wave(start: int) -> None:
        values, partitions, wave_good, wave_bad = _values(start, 420, 3)
        produce(kafka_broker.bootstrap, topic, values, partitions=partitions)
        offsets = []
        for p in partitions:
            offsets.append(sent[p])
            sent[p] += 1
        good.update(wave_good)
        bad.update((f"{topic}/{partitions[i]}", offsets[i]) for i in wave_bad)

    rng = random.Random(7)
    _wave(0)
    # Each restart joins as a new group: resuming relies on the table alone, and the test need not
    # wait a session timeout for the killed member to leave (the group test covers that).
    for number, step in enumerate(
        ("commit.before@3", "commit.after@2", None, "wave", "commit.after@5", None)
    ):
        group = f"g-{topic}-{number}"
        if step == "wave":
            _wave(420)
            continue
        if step is None:
            run = Run(root, kafka_broker, topic, group=group, **small)
            run.wait_for_log("assigned")
            time.sleep(rng.uniform(0.3, 1.5))
            run.process.kill()
            assert run.finish()[0] == -signal.SIGKILL
        else:
            run = Run(root, kafka_broker, topic, group=group, HINDSIGHT_CRASH_AT=step, **small)
            code, _ = run.finish()
            assert code == 137, f"{step}: exit {code}\n{run.stderr()[-2000:]}"

    final = Run(root, kafka_broker, topic, "--until-idle", "1.5", "--format", "json", **small)
    code, out = final.finish()
    assert code == 0, final.stderr()
    assert json.loads(out)["stopped_by"] == "idle"
    ends = dict(sent)
    _assert_exactly_once(root, topic, good, bad, ends)
    assert _kafka_offsets(kafka_broker, topic, 3) == ends


def test_two_processes_share_the_topic_and_survive_a_kill(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = create_topic(kafka_broker.bootstrap, unique_topic("group"), partitions=4)
    root = tmp_path / "root"
    total = 1200
    values, partitions, good, bad_index = _values(0, total, 4)
    offsets = _offsets(partitions)
    bad = {(f"{topic}/{partitions[i]}", offsets[i]) for i in bad_index}
    small = {"HINDSIGHT_KAFKA__BATCH_MAX_MESSAGES": "50"}

    first = Run(root, kafka_broker, topic, **small)
    first.wait_for_log("assigned")
    half = total // 2

    def _produce_slowly() -> None:
        for start in range(0, half, 50):
            chunk = slice(start, min(start + 50, half))
            produce(kafka_broker.bootstrap, topic, values[chunk], partitions=partitions[chunk])
            time.sleep(0.2)

    producer = threading.Thread(target=_produce_slowly)
    producer.start()
    try:
        _wait_for(lambda: sum(_customers(root).values()) > 0, seconds=30)
        second = Run(root, kafka_broker, topic, **small)
        second.wait_for_log("assigned", seconds=40)  # the group now splits the partitions
        time.sleep(1.0)
        first.process.kill()  # mid-stream, possibly mid-batch
        assert first.finish()[0] == -signal.SIGKILL
    finally:
        producer.join()
    # Records for every partition arrive after the kill: the survivor must take over the dead one's.
    produce(kafka_broker.bootstrap, topic, values[half:], partitions=partitions[half:])
    _wait_for(lambda: len(_customers(root)) == len(good), seconds=60)
    second.process.send_signal(signal.SIGINT)
    code, _ = second.finish()
    assert code == 0, second.stderr()
    last_assignment = [line for line in second.stderr().splitlines() if "assigned" in line][-1]
    assert all(f"{p}@" in last_assignment for p in range(4)), last_assignment  # took over every partition
    ends = {p: partitions.count(p) for p in range(4)}
    _assert_exactly_once(root, topic, good, bad, ends)


def _offsets(partitions: list[int]) -> list[int]:
    seen: Counter[int] = Counter()
    out = []
    for p in partitions:
        out.append(seen[p])
        seen[p] += 1
    return out


def _wait_for(condition: Any, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(0.2)
