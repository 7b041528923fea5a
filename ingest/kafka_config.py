"""What `hindsight ingest kafka` needs to know: the source, the batching rules, and librdkafka's config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.kafka_commit import PartitionNames
from ingest.reader import DEFAULT_MAX_LINE_BYTES
from service.errors import ConfigError

_TOPIC_NAME = re.compile(
    r"^[A-Za-z0-9._-]{1,249}$"
)  # Kafka's legal topic names (kafka.common.internals.Topic)
_HOST_PORT = re.compile(r"^[^\s:,]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$")

OWNED_OPTIONS = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "isolation.level",
        "on_commit",
        "error_cb",
        "stats_cb",
        "logger",
    }
)
"""librdkafka options hindsight sets itself: exactly-once depends on them, so `options` cannot change them."""


@dataclass(frozen=True)
class KafkaSource:
    """Which topic to read, as which group, and any extra librdkafka options (SASL, SSL, ...)."""

    bootstrap: str
    topic: str
    group: str = "hindsight"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    epoch: int = 0
    """The topic's incarnation: bumped after it was recreated, so its partitions get new positions."""

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap.split(",") if s.strip()]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise ConfigError(
                f"invalid Kafka bootstrap {self.bootstrap!r}: expected HOST:PORT[,HOST:PORT...]",
                details={"bootstrap": self.bootstrap},
            )
        if not _TOPIC_NAME.match(self.topic) or self.topic in (".", ".."):
            raise ConfigError(
                f"invalid Kafka topic name {self.topic!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -",
                details={"topic": self.topic},
            )
        if self.epoch < 0:
            raise ConfigError(f"the Kafka source epoch must be 0 or more, not {self.epoch}")
        if not self.group.strip():
            raise ConfigError("the Kafka consumer group id must not be empty")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        owned = sorted(OWNED_OPTIONS.intersection(self.options))
        if owned:
            raise ConfigError(
                f"kafka option(s) {', '.join(owned)} are set by hindsight itself and cannot be overridden",
                details={"options": owned},
            )
        _ = self.auto_offset_reset  # raises a ConfigError for a value other than earliest or latest
        _ = self.max_poll_interval_ms
        strategy = str(self.options.get("partition.assignment.strategy", "range,roundrobin"))
        if "cooperative-sticky" in strategy and strategy.strip() != "cooperative-sticky":
            raise ConfigError("cooperative-sticky cannot be mixed with eager assignment strategies")

    @property
    def cooperative(self) -> bool:
        """True when the group uses incremental (cooperative) rebalancing."""
        return str(self.options.get("partition.assignment.strategy", "")).strip() == "cooperative-sticky"

    @property
    def max_poll_interval_ms(self) -> int:
        """librdkafka's `max.poll.interval.ms` (default 300 s): also the group's rebalance timeout, the
        longest a join may legitimately wait for the other members to rejoin."""
        value = self.options.get("max.poll.interval.ms", 300_000)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"max.poll.interval.ms must be a number of milliseconds, not {value!r}"
            ) from None

    @property
    def auto_offset_reset(self) -> str:
        """Where a partition never committed to the predictions table starts: earliest (default) or latest."""
        value = str(self.options.get("auto.offset.reset", "earliest")).lower()
        if value in ("earliest", "smallest", "beginning"):
            return "earliest"
        if value in ("latest", "largest", "end"):
            return "latest"
        raise ConfigError(f"auto.offset.reset must be earliest or latest, not {value!r}")

    @property
    def names(self) -> PartitionNames:
        """App ids (`kafka:<topic>:<partition>`) and source names (`<topic>/<partition>`) of the topic;
        `<topic>@<epoch>` in both from epoch 1 on."""
        return PartitionNames(self.topic, self.epoch)

    def consumer_config(self, **callbacks: Any) -> dict[str, Any]:
        """librdkafka configuration: user options first, then the settings exactly-once relies on."""
        config: dict[str, Any] = {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            # the group state in these statistics tells a stuck join from a slow rebalance (the consumer's
            # `_check_join`); 0 turns them off, and a stuck join is then reported after the long deadline
            "statistics.interval.ms": 1000,
        }
        config.update(self.options)
        # hindsight places every partition itself (the table's position, or the start chosen by
        # `auto_offset_reset`, committed at once), so a position the broker refuses must never be reset
        # silently: it is a consume error the consumer resolves (ingest.kafka_consumer._out_of_range)
        config["auto.offset.reset"] = "error"
        config.update(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,  # offsets go to Kafka only after the Delta commit
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "isolation.level": "read_committed",  # never ingest records of aborted transactions
            }
        )
        config.update(callbacks)
        return config


@dataclass(frozen=True)
class BatchRules:
    """When a batch is committed, when the command stops waiting, and how lines are parsed."""

    max_messages: int = 100_000
    max_seconds: float = 2.0
    until_idle: float | None = None
    unavailable_timeout: float = 60.0
    source_tz: str = "UTC"
    max_bytes: int = 64 * 1024 * 1024
    """Most value bytes gathered before a commit: what bounds memory when messages are large."""
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    """A longer value is quarantined (its head kept), as an over-long line of a log file is."""

    def __post_init__(self) -> None:
        if self.max_messages <= 0:
            raise ConfigError(f"batch_max_messages must be positive, not {self.max_messages}")
        if self.max_bytes <= 0:
            raise ConfigError(f"batch_max_bytes must be positive, not {self.max_bytes}")
        if self.max_line_bytes <= 0:
            raise ConfigError(f"max_line_bytes must be positive, not {self.max_line_bytes}")
        if self.max_seconds <= 0:
            raise ConfigError(f"batch_max_seconds must be positive, not {self.max_seconds}")
        if self.until_idle is not None and self.until_idle <= 0:
            raise ConfigError(f"--until-idle must be a positive number of seconds, not {self.until_idle}")
        if self.unavailable_timeout <= 0:
            raise ConfigError(f"unavailable_timeout_s must be positive, not {self.unavailable_timeout}")

    @property
    def give_up_after(self) -> float:
        """How long the broker may stay unreachable: the timeout, or --until-idle when shorter."""
        if self.until_idle is None:
            return self.unavailable_timeout
        return min(self.unavailable_timeout, self.until_idle)
