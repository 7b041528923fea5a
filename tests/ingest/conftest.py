"""Fixtures of the ingest tests: a real Kafka-protocol broker, started once per session when asked for."""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from tests.kafka_broker import Broker, start_broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """tansu on a free loopback port (or the cluster named by KAFKA_BOOTSTRAP), stopped at the end."""
    broker = start_broker(tmp_path_factory.mktemp("tansu"))
    try:
        yield broker
    finally:
        broker.stop()


def _finalize_arrow_s3() -> None:
    # Reading Delta tables through pyarrow datasets initialises Arrow's S3 subsystem; without an
    # explicit finalize the interpreter sometimes aborts at exit ("terminate called without an
    # active exception") when librdkafka threads were used in the same process.
    import pyarrow.fs

    pyarrow.fs.finalize_s3()


atexit.register(_finalize_arrow_s3)
