"""Reaching the broker: metadata probes with exponential backoff, and a clear BrokerUnavailable at the end."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from service.errors import BrokerUnavailable, SourceError

log = logging.getLogger("hindsight.ingest.kafka")


class MetadataClient(Protocol):
    """What a probe needs of a consumer: `list_topics` (a seam for the real confluent-kafka client)."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


@dataclass
class Backoff:
    """Exponential backoff: 0.5 s, 1 s, 2 s, ... capped at `cap` seconds."""

    first: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def probe(client: MetadataClient, topic: str, timeout: float) -> int:
    """Ask the cluster for the topic's metadata; returns its partition count.

    Raises KafkaException when no broker answers within `timeout`, SourceError when the topic is unknown.
    """
    metadata = client.list_topics(topic, timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        code = None if found is None else found.error.code()
        if code in (None, KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise SourceError(
                f"Kafka topic {topic!r} does not exist; create it (or check --topic)",
                details={"topic": topic},
            )
        raise SourceError(f"Kafka topic {topic!r} cannot be read: {found.error}", details={"topic": topic})
    return len(found.partitions)


def wait_for_topic(
    client: MetadataClient,
    bootstrap: str,
    topic: str,
    give_up_after: float,
    stop: threading.Event,
    check: Callable[[], None] = lambda: None,
) -> int | None:
    """Probe until the broker answers, backing off exponentially; None when `stop` was set meanwhile.

    Raises BrokerUnavailable once the broker has been unreachable for `give_up_after` seconds. `check`
    runs after each failed probe and may raise: a metadata request reports a refused login only as an
    unreachable broker, while the client's error callback says why (authentication, SSL), and that
    error used to wait out the whole timeout and be reported as "still unreachable" (review finding).
    """
    started = time.monotonic()
    backoff = Backoff()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        # each attempt waits a little longer, as the backoff grows, but never past the deadline
        attempt_timeout = min(max(1.0, backoff.first * 2**backoff.attempt), 5.0, give_up_after - elapsed)
        try:
            return probe(client, topic, timeout=max(0.2, attempt_timeout))
        except KafkaException as exc:
            check()
            elapsed = time.monotonic() - started
            if elapsed >= give_up_after:
                raise unavailable(bootstrap, give_up_after, elapsed, exc) from exc
            delay = min(backoff.next_delay(), max(0.0, give_up_after - elapsed))
            log.warning(
                "Kafka broker %s unreachable (%s); attempt %d, retrying in %.1f s (giving up after %.0f s)",
                bootstrap,
                _reason(exc),
                backoff.attempt,
                delay,
                give_up_after,
            )
            stop.wait(delay)
    return None


def unavailable(
    bootstrap: str, give_up_after: float, elapsed: float, exc: BaseException | None = None
) -> BrokerUnavailable:
    """The error raised when the broker stayed unreachable for `give_up_after` seconds (`elapsed` in fact)."""
    reason = f" ({_reason(exc)})" if exc is not None else ""
    return BrokerUnavailable(
        f"Kafka broker {bootstrap} still unreachable after {give_up_after:g} s of retries{reason}; "
        "check --bootstrap, the network and the broker (with TLS or SASL, also security.protocol, ssl.* and "
        "sasl.* in [kafka.options]), then run again",
        details={"bootstrap": bootstrap, "seconds": round(elapsed, 1), "give_up_after": give_up_after},
    )


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)
