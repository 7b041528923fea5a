"""The Kafka consumer: batches of messages into the tables exactly once, across crashes and rebalances.

Protocol (docs/design.md, "Kafka ingestion"):

1. on every assignment, each partition resumes at the position committed to the predictions
   table (`kafka:<topic>:<partition>`), not at Kafka's committed offset; a partition never
   committed starts at the earliest (default) or latest offset, per `auto.offset.reset`;
2. messages are gathered until `max_messages` or `max_seconds`, parsed in one go, and committed:
   quarantine rows first, then prediction rows with every partition's last seen offset + 1, in
   one Delta commit per table (`storage.commit.commit_sources`);
3. only then are the offsets committed to Kafka (asynchronously; synchronously on revoke and at
   exit) so lag tools keep working; Kafka's offsets are never read back;
4. on revoke the batch is committed first; on loss it is dropped; a commit that finds another
   writer already past our position (`stale_sources`) re-seeks to the table's position.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ingest.kafka_batch import PendingBatch
from ingest.kafka_commit import (
    BatchOutcome,
    ParsedBatch,
    commit_parsed,
    commit_start,
    parse_batch,
    table_positions,
)
from ingest.kafka_config import BatchRules, KafkaSource
from ingest.kafka_reach import Backoff, probe, unavailable, wait_for_topic
from ingest.parser import LineParser
from service.errors import BrokerUnavailable, ConfigError, SourceError, StorageError
from storage.compact import Compactor

log = logging.getLogger("hindsight.ingest.kafka")


class _ClientLog:
    """librdkafka's own log lines, at DEBUG: they repeat every reconnect, and the errors that matter
    reach `error_cb` too, which reports them once, in words."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("hindsight.ingest.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        self.logger.debug(msg, *args)


_CONSUME_CHUNK = 10_000
_PARSERS = 2  # DuckDB runs one parse on about one core: two batches can be parsed at once
_IN_FLIGHT = _PARSERS + 1  # batches being parsed or committed while the next one is gathered
_POLL_SECONDS = 0.5  # longest a consume() call blocks: bounds how late a stop signal is seen
_PROGRESS_SECONDS = 10.0
_ASSUMED_VALUE_BYTES = 2048  # the value size assumed before any was seen (a DSS query line is ~1-2 KB)
_WATERMARK_SECONDS = 10.0  # longest wait for a partition's offsets when it is assigned
_FATAL_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._SSL,
    }
)


@dataclass
class KafkaIngestSummary:
    """What one run of `hindsight ingest kafka` did."""

    topic: str
    group: str
    messages: int = 0
    records: int = 0
    days: set[date] = field(default_factory=set)
    skipped: int = 0
    quarantined: int = 0
    tombstones: int = 0
    duplicates_dropped: int = 0
    partitions: set[int] = field(default_factory=set)
    """Partitions assigned during the run, also those with nothing new (they were counted only once they
    had messages: "0 partitions" beside a known position)."""
    commits: int = 0
    fenced: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0
    """From the first message received to the end of the last commit (no join, no idle wait)."""
    stopped_by: str = "stop"
    positions: dict[int, int] = field(default_factory=dict)
    lost_to_retention: int = 0
    """Offsets the broker deleted (retention) before they were read: gone, reported, never silent."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (days as ISO dates, partitions sorted)."""
        return {
            "topic": self.topic,
            "group": self.group,
            "messages": self.messages,
            "records": self.records,
            "days": len(self.days),
            "first_day": min(self.days).isoformat() if self.days else None,
            "last_day": max(self.days).isoformat() if self.days else None,
            "skipped": self.skipped,
            "quarantined": self.quarantined,
            "tombstones": self.tombstones,
            "duplicates_dropped": self.duplicates_dropped,
            "partitions": sorted(self.partitions),
            "positions": {str(p): pos for p, pos in sorted(self.positions.items())},
            "commits": self.commits,
            "fenced": self.fenced,
            "lost_to_retention": self.lost_to_retention,
            "seconds": round(self.seconds, 3),
            "busy_seconds": round(self.busy_seconds, 3),
            "messages_per_second": round(self.messages / self.busy_seconds) if self.busy_seconds else None,
            "stopped_by": self.stopped_by,
        }


def ingest_kafka(
    root: Path,
    source: KafkaSource,
    rules: BatchRules,
    *,
    stop: threading.Event | None = None,
) -> KafkaIngestSummary:
    """Consume `source` into the tables under `root` until `stop` is set or the topic stays idle.

    Returns when `stop` is set (after committing the current batch) or after `rules.until_idle`
    seconds without messages. Raises BrokerUnavailable when the broker stays unreachable for
    `rules.give_up_after` seconds, SourceError for a missing topic or refused credentials.
    """
    return _Ingestor(root, source, rules, stop or threading.Event()).run()


def out_of_range_action(position: int, low: int, high: int) -> str:
    """What to do when the broker refused `position` of a partition that now holds offsets low..high-1:
    `stop` past its end, `skip_deleted` before its start (retention), else `retry`."""
    if position > high:
        return "stop"
    if position < low:
        return "skip_deleted"
    return "retry"


def consume_count(rules: BatchRules, pending: PendingBatch, mean_value_bytes: float) -> int:
    """How many messages the next consume() may return: never past the batch's message limit (batches
    used to overshoot it by up to a consume chunk) and, at the mean size of recent values, not past its
    byte limit (memory was bounded by message count alone: 600 values of 1 MB made a 3 GB process)."""
    room = rules.max_messages - len(pending)
    by_bytes = (rules.max_bytes - pending.value_bytes) / max(mean_value_bytes, 1.0)
    return max(1, min(_CONSUME_CHUNK, room, int(by_bytes)))


class _Ingestor:
    """State of one run: the consumer, the batch being gathered, and what the group gave us."""

    def __init__(self, root: Path, source: KafkaSource, rules: BatchRules, stop: threading.Event) -> None:
        self.root = root
        self.source = source
        self.rules = rules
        self.stop = stop
        self.names = source.names
        self.parser = LineParser(source_tz=rules.source_tz)
        self.pending = PendingBatch()
        self.batch_started = 0.0
        self.assigned: set[int] = set()
        self.joined = False
        """Whether the group has given this member an assignment (possibly empty) since it last (re)joined."""
        self.join_started = 0.0
        self.rejoining = False
        self.callback_error: BaseException | None = None
        self.failed = False
        self.down_since: float | None = None
        self.coordinator_down_since: float | None = None
        """Since when the client's statistics have said, without a break, that its connection to the group
        coordinator is not up (None: up, or not known): what tells a stuck join from a slow rebalance."""
        self.coordinator_state = ""
        self.last_connect_error = ""
        """The text of the last connection error the client reported (it reports each kind once, then
        suppresses repeats), quoted when the run gives up on the coordinator."""
        self.probe_backoff = Backoff()
        self.next_probe = 0.0
        self.last_activity = time.monotonic()
        self.last_progress = time.monotonic()
        self.first_message: float | None = None
        self.in_flight: deque[Future[BatchOutcome]] = deque()
        self.pipeline_broken = False
        self.mean_value_bytes = float(_ASSUMED_VALUE_BYTES)
        self.compactors = [Compactor.of(root, n) for n in ("predictions", "quarantine")]
        self.known_positions: dict[int, int] = {}
        """The table's position of each partition as far as we know: sent to Kafka for lag tools."""
        self.parsing = ThreadPoolExecutor(max_workers=_PARSERS, thread_name_prefix="hindsight-kafka-parse")
        self.committing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hindsight-kafka-commit")
        self.summary = KafkaIngestSummary(topic=source.topic, group=source.group)
        try:
            self.consumer = Consumer(
                source.consumer_config(
                    error_cb=self._on_error,
                    on_commit=self._on_commit,
                    stats_cb=self._on_stats,
                    logger=_ClientLog(),
                )
            )
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka client configuration: {exc.args[0].str()}") from exc

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> KafkaIngestSummary:
        started = time.monotonic()
        try:
            count = wait_for_topic(
                self.consumer,
                self.source.bootstrap,
                self.source.topic,
                self.rules.give_up_after,
                self.stop,
                check=self._client_errors,
            )
            if count is None:
                self.summary.stopped_by = "signal"  # stopped while waiting for the broker
            else:
                log.info(
                    "consuming topic %s (%d partitions) from %s as group %s",
                    self.source.topic,
                    count,
                    self.source.bootstrap,
                    self.source.group,
                )
                self._consume_until_done()
        except BaseException:
            self.failed = True
            raise
        finally:
            self._close()
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _client_errors(self) -> None:
        """Serve the client's callbacks and raise a fatal error one of them reported (a refused login)."""
        self.consumer.poll(0)
        self._raise_callback_error()

    def _consume_until_done(self) -> None:
        self.consumer.subscribe(
            [self.source.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._join_begins(rejoining=False)
        while not self.stop.is_set():
            count = consume_count(self.rules, self.pending, self.mean_value_bytes)
            messages = self.consumer.consume(num_messages=count, timeout=self._wait_seconds())
            self._raise_callback_error()
            now = time.monotonic()
            if messages:
                self._gather(messages, now)
            self._collect(block=False)
            if self.pending and (
                len(self.pending) >= self.rules.max_messages
                or self.pending.value_bytes >= self.rules.max_bytes
                or now - self.batch_started >= self.rules.max_seconds
            ):
                self._flush(wait=False)
            self._watch_broker(now)
            if not self.joined:
                self._check_join(now)
            if self._idle_for_long(now):
                self.summary.stopped_by = "idle"
                break
        else:
            self.summary.stopped_by = "signal"
        self._flush(wait=True)
        self._commit_offsets(sync=True)
        # every partition whose position we know, not only those this run moved (README: "the
        # committed position of every partition")
        self.summary.positions = {**self.known_positions, **self.summary.positions}

    def _wait_seconds(self) -> float:
        if not self.pending:
            return _POLL_SECONDS
        left = self.rules.max_seconds - (time.monotonic() - self.batch_started)
        return max(0.0, min(_POLL_SECONDS, left))

    def _gather(self, messages: list[Any], now: float) -> None:
        if any(m.error() is not None for m in messages):
            for bad in (m for m in messages if m.error() is not None):
                if bad.error().code() == KafkaError._AUTO_OFFSET_RESET and bad.partition() is not None:
                    self._out_of_range(bad)
                else:
                    self._on_consume_error(bad.error())
            messages = [m for m in messages if m.error() is None]
            if not messages:
                return
        if not self.pending:
            self.batch_started = now
            if self.first_message is None:
                self.first_message = now
        before = self.pending.value_bytes
        self.pending.extend(messages)
        added = self.pending.value_bytes - before
        # a running mean of value sizes, weighted to recent messages: how many the next consume may take
        self.mean_value_bytes = 0.8 * self.mean_value_bytes + 0.2 * (added / len(messages))
        self.last_activity = now
        if self.down_since is not None:
            self._reachable_again(now)

    def _join_begins(self, *, rejoining: bool) -> None:
        """The member (re)joins the group: the join deadline of `_check_join` starts now.

        A rejoin (the session expired, or an eager rebalance revoked the assignment) gets the same
        deadline as the first join: after one, a coordinator that had become unreachable kept the run
        waiting for ever, even with --until-idle (review finding). The statistics seen so far say nothing
        of this join: those served while waiting for the topic, before subscribing, started the
        coordinator's clock early and shortened its deadline (same review)."""
        self.joined = False
        self.rejoining = rejoining
        self.join_started = time.monotonic()
        self.coordinator_down_since = None
        self.coordinator_state = ""

    def _check_join(self, now: float) -> None:
        """BrokerUnavailable when no assignment has come for too long after (re)joining the group.

        A bootstrap address that answers while the address the broker advertises (its group coordinator)
        refuses connections kept the run waiting for ever, even with --until-idle, and said nothing: the
        idle clock starts at the first assignment and each metadata answer counted as "reachable" (review
        finding). But a join may also legitimately wait: the coordinator holds it until every member of
        the group rejoins, for up to the rebalance timeout (`max.poll.interval.ms`, 300 s by default),
        and a fixed deadline of a few session timeouts ended such runs (second review finding). The
        client's statistics tell the two apart (its group state is `up` once the coordinator connection
        is, whatever the join waits for); its error callback cannot, as it reports a refused connection
        once and then suppresses the repeats, and errors about other brokers say nothing of the
        coordinator (third review finding). So the run gives up:
        - `give_up_after` plus three session timeouts after the coordinator connection went down (or
          never came up), when it has stayed down since;
        - otherwise `give_up_after` plus the rebalance timeout plus a session timeout after subscribing."""
        session = self.source.session_timeout_ms / 1000
        waited = now - self.join_started
        down_since = self.coordinator_down_since
        if down_since is not None and now - down_since >= self.rules.give_up_after + 3 * session:
            error = f"; last connection error: {self.last_connect_error}" if self.last_connect_error else ""
            reason = (
                f"the group coordinator is unreachable (client group state {self.coordinator_state} for "
                f"{now - down_since:.0f} s{error}). {self.source.bootstrap} answers, so check that the "
                "address the broker advertises (advertised.listeners) is reachable from here, and the "
                "broker's logs"
            )
        elif waited >= self.rules.give_up_after + self.source.max_poll_interval_ms / 1000 + session:
            reason = (
                "the group's rebalance did not end within its rebalance timeout (max.poll.interval.ms). "
                "Another member of the group may be stuck (the coordinator waits for the longest "
                "max.poll.interval.ms of its members): check the group's members and the broker's logs"
            )
        else:
            return
        raise BrokerUnavailable(
            f"no partition of {self.source.topic} was assigned {waited:.0f} s after "
            f"{'rejoining' if self.rejoining else 'joining'} consumer group {self.source.group}: {reason}",
            details={
                "bootstrap": self.source.bootstrap,
                "group": self.source.group,
                "seconds": round(waited, 1),
            },
        )

    def _idle_for_long(self, now: float) -> bool:
        # The idle clock starts at the first assignment (possibly empty): a join can take a session
        # timeout or more while the coordinator waits for members that died, and that is not idleness.
        if self.rules.until_idle is None or self.pending or self.in_flight or not self.joined:
            return False
        if self.down_since is not None:
            return False
        return now - self.last_activity >= self.rules.until_idle

    # -- committing -------------------------------------------------------------------------

    def _flush(self, *, wait: bool) -> None:
        """Hand the gathered batch to the pipeline; with `wait`, also see every batch committed.

        Two stages: batches k+1 and k+2 are parsed (two threads) while batch k is committed (one
        thread) and the main thread gathers k+3. At most `_IN_FLIGHT` batches are in the pipeline,
        and the committing thread takes them in the order they were gathered (each commit waits for
        its own parse), so commits stay in offset order.
        """
        self._collect(block=True, keep=_IN_FLIGHT - 1)
        if self.pending and not self.failed:
            batch, self.pending = self.pending, PendingBatch()
            parsing = self.parsing.submit(
                parse_batch, self.names, self.parser, batch, self.rules.max_line_bytes
            )
            self.in_flight.append(self.committing.submit(self._commit_when_parsed, parsing))
        if wait:
            self._collect(block=True)

    def _commit_when_parsed(self, parsing: Future[ParsedBatch]) -> BatchOutcome:
        # A batch must never be committed after an earlier one failed: its positions would jump
        # over the failed batch's records. Commits run one at a time on this thread, in order.
        if self.pipeline_broken:
            raise StorageError("an earlier batch could not be committed; later batches were not committed")
        try:
            outcome = commit_parsed(self.root, self.names, parsing.result())
        except BaseException:
            self.pipeline_broken = True
            raise
        for compactor in self.compactors:  # a batch is a commit with small files: merged now and then
            compactor.maybe()
        return outcome

    def _collect(self, *, block: bool, keep: int = 0) -> None:
        """Apply the outcomes of committed batches, oldest first; with `block`, wait until `keep` remain."""
        while len(self.in_flight) > keep and (block or self.in_flight[0].done()):
            self._apply(self.in_flight.popleft().result())  # re-raises what a pipeline thread raised

    def _apply(self, outcome: BatchOutcome) -> None:
        result = outcome.commit
        summary = self.summary
        summary.messages += outcome.messages
        summary.records += result.rows_written
        summary.duplicates_dropped += result.rows_already_committed
        summary.skipped += outcome.skipped
        summary.quarantined += outcome.quarantined
        summary.tombstones += outcome.tombstones
        summary.partitions.update(outcome.ends)
        summary.positions.update(result.positions)
        self.known_positions.update(result.positions)
        summary.days.update(outcome.days)
        summary.commits += 1
        if self.first_message is not None:
            summary.busy_seconds = time.monotonic() - self.first_message
        log.debug(
            "batch of %d messages: parse %.3f s, commit %.3f s",
            outcome.messages,
            outcome.parse_seconds,
            outcome.commit_seconds,
        )
        for partition, position in result.stale.items():
            self._fenced(partition, position)
        self._log_progress(outcome.messages, result.rows_written)
        self._commit_offsets(sync=False, positions=result.positions)

    def _fenced(self, partition: int, position: int) -> None:
        """Another writer committed this partition past our batch: continue from its position."""
        self.summary.fenced += 1
        log.warning(
            "partition %s/%d: another writer already committed up to offset %d; "
            "our batch was dropped, re-reading from there",
            self.source.topic,
            partition,
            position,
        )
        self.pending.drop_partitions({partition})  # read past a position that is not ours
        self.last_activity = time.monotonic()  # there is reading to redo: not idle
        if partition in self.assigned:
            try:
                self.consumer.seek(TopicPartition(self.source.topic, partition, position))
            except KafkaException as exc:
                log.warning("cannot seek %s/%d: %s", self.source.topic, partition, exc)

    def _commit_offsets(self, *, sync: bool, positions: dict[int, int] | None = None) -> None:
        """Tell Kafka how far the table got, for lag tools; the table stays the truth."""
        chosen = self.known_positions if positions is None else positions
        offsets = [
            TopicPartition(self.source.topic, p, pos) for p, pos in chosen.items() if p in self.assigned
        ]
        if not offsets or self.failed:
            return
        try:
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("could not commit offsets to Kafka (the Delta table keeps the positions): %s", exc)

    def _log_progress(self, messages: int, records: int) -> None:
        now = time.monotonic()
        level = logging.INFO if now - self.last_progress >= _PROGRESS_SECONDS else logging.DEBUG
        if level == logging.INFO:
            self.last_progress = now
        log.log(
            level,
            "committed %d messages (%d records); total %d messages, %d records, %d quarantined",
            messages,
            records,
            self.summary.messages,
            self.summary.records,
            self.summary.quarantined,
        )

    # -- group callbacks (run inside consume()/close(); errors are re-raised by the loop) ----

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self._collect(block=True)  # positions are read from the table: let our last commit land
            positions = table_positions(self.root, self.names, [tp.partition for tp in partitions])
            fresh: dict[int, int] = {}
            for tp in partitions:
                committed = positions[tp.partition]
                if committed is None:
                    tp.offset = self._start_of_fresh(tp, fresh)
                else:
                    # checked by the broker: out of its range is a consume error (auto.offset.reset=error)
                    tp.offset = committed
                    self.known_positions[tp.partition] = committed
            if fresh:
                # the positions in force: another writer may have committed the partition meanwhile
                started = commit_start(self.root, self.names, fresh)
                self.known_positions.update(started)
                for tp in partitions:
                    tp.offset = started.get(tp.partition, tp.offset)
            described = ", ".join(
                f"{tp.partition}@{'start' if tp.offset == OFFSET_BEGINNING else tp.offset}"
                for tp in partitions
            )
            log.info("assigned %s partitions: %s", self.source.topic, described or "none")
        except BaseException as exc:
            self.callback_error = exc
            partitions = []  # assign nothing rather than resume from Kafka's own offsets
        if self.source.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assigned.update(tp.partition for tp in partitions)
        self.summary.partitions.update(tp.partition for tp in partitions)  # also those with nothing new
        self.joined = True
        self.last_activity = time.monotonic()

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition),
                timeout=min(_WATERMARK_SECONDS, self.rules.unavailable_timeout),
                cached=False,
            )
        except KafkaException as exc:
            raise SourceError(
                f"cannot read the offsets of {tp.topic}/{tp.partition}: {exc}",
                details={"partition": tp.partition},
            ) from exc
        return int(low), int(high)

    def _start_of_fresh(self, tp: TopicPartition, fresh: dict[int, int]) -> int:
        """Where a partition never committed starts: its beginning, or (`latest`) its current end, which
        is committed at once. Resolving "latest" again on every run lost what was produced between runs
        on a partition that had no message during the last one (review finding)."""
        if self.source.auto_offset_reset == "earliest":
            return int(OFFSET_BEGINNING)
        fresh[tp.partition] = self._watermarks(tp)[1]
        return fresh[tp.partition]

    def _out_of_range(self, message: Any) -> None:
        """The broker refused a partition's position (librdkafka's auto.offset.reset is `error`, so it
        never jumps by itself): decide from the partition's offsets now.

        Past its end: the topic was recreated or the broker lost its log; reading on from a reset
        would skip the new log's first messages silently (review finding), so the run stops. Before its
        start: retention deleted messages never read; they are counted and reading goes on at the first
        one kept. Inside (a leader change): read again from the same position.
        """
        partition, position = int(message.partition()), int(message.offset())
        if position < 0:  # the error carried no offset: where this partition was being read
            known = self.pending.ends().get(partition, self.known_positions.get(partition))
            if known is None:
                reason = message.error().str()
                raise SourceError(
                    f"the broker refused the read position of {self.source.topic}/{partition}: {reason}"
                )
            position = known
        tp = TopicPartition(self.source.topic, partition)
        low, high = self._watermarks(tp)
        action = out_of_range_action(position, low, high)
        if action == "stop":
            raise SourceError(
                f"partition {tp.topic}/{partition} ends at offset {high}, but the table has read it up to "
                f"offset {position}: the topic was recreated or the broker lost messages. Reading on would "
                "skip the new log's first messages. If the topic was recreated, set kafka.source_epoch "
                f"(now {self.source.epoch}) one higher to read it afresh; the rows already stored stay",
                details={"partition": partition, "position": position, "end": high},
            )
        resume = position
        if action == "skip_deleted":
            log.warning(
                "partition %s/%d: offsets %d to %d were deleted by the broker (retention) before they were "
                "read; continuing at %d",
                tp.topic,
                partition,
                position,
                low - 1,
                low,
            )
            self.summary.lost_to_retention += low - position
            resume = low
        # the messages gathered for this partition all lie before `position` (and `resume`): they stay
        self.consumer.seek(TopicPartition(tp.topic, partition, resume))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        try:
            if self.pending or self.in_flight:
                log.info("partitions %s revoked: committing the current batch first", sorted(revoked))
            self._flush(wait=True)
            self._commit_offsets(sync=True)
        except BaseException as exc:
            self.callback_error = exc
            self.failed = True
        finally:
            self.assigned -= revoked
            self.last_activity = time.monotonic()
            if not self.source.cooperative:
                # an eager rebalance revokes everything, then assigns anew (possibly nothing) once the
                # member has rejoined; a cooperative one may revoke a few partitions and keep the member
                self._join_begins(rejoining=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        try:
            self._collect(block=True)  # a commit in flight is harmless: the table fences stale rows
        except BaseException as exc:
            self.callback_error = exc
            self.failed = True
        dropped = self.pending.drop_partitions(lost)
        log.warning(
            "partitions %s lost (session expired); dropped %d uncommitted messages, "
            "which the new owner reads again",
            sorted(lost),
            dropped,
        )
        self.assigned -= lost
        self.last_activity = time.monotonic()
        self._join_begins(rejoining=True)  # the session expired: the member must join again

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self.last_connect_error = err.str()
        if code == KafkaError._ALL_BROKERS_DOWN:
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.probe_backoff.reset()
                self.next_probe = self.down_since + self.probe_backoff.next_delay()
            log.warning("all Kafka brokers of %s are down: %s", self.source.bootstrap, err.str())
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            # librdkafka reconnects by itself; only "all brokers down" changes what we do
            log.debug("Kafka connection problem: %s", err.str())
        elif err.fatal() or code in _FATAL_CODES:
            self.callback_error = SourceError(
                f"Kafka client error: {err.str()}", details={"code": err.name()}
            )
        else:
            log.warning("Kafka client error: %s", err.str())

    def _on_stats(self, stats: str) -> None:
        """The client's statistics (every `statistics.interval.ms`): its consumer group's state."""
        if self.joined:
            return  # only a join in progress needs them (`_check_join`)
        try:
            state = json.loads(stats).get("cgrp", {}).get("state")
        except (ValueError, AttributeError):
            return  # not what librdkafka documents: no evidence either way
        if not isinstance(state, str):
            return
        self.coordinator_state = state
        if state == "up":
            self.coordinator_down_since = None
        elif self.coordinator_down_since is None:
            self.coordinator_down_since = time.monotonic()

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("Kafka offset commit failed (positions are safe in the table): %s", err.str())

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in _FATAL_CODES:
            raise SourceError(
                f"cannot consume {self.source.topic}: {err.str()}", details={"code": err.name()}
            )
        log.warning("consume error on %s: %s", self.source.topic, err.str())

    def _raise_callback_error(self) -> None:
        if self.callback_error is not None:
            error, self.callback_error = self.callback_error, None
            raise error

    # -- the broker going away --------------------------------------------------------------

    def _watch_broker(self, now: float) -> None:
        if self.down_since is None or now < self.next_probe:
            return
        try:
            probe(self.consumer, self.source.topic, timeout=1.0)
        except (KafkaException, SourceError) as exc:
            # a broker just restarted may not know the topic for a moment: that is not yet reachable,
            # not a missing topic (one such answer ended the run, its batch unflushed; review finding)
            elapsed = now - self.down_since
            if elapsed >= self.rules.give_up_after:
                self._flush(wait=True)  # the table does not need the broker: keep what we have
                if isinstance(exc, SourceError):
                    raise
                raise unavailable(self.source.bootstrap, self.rules.give_up_after, elapsed, exc) from exc
            delay = self.probe_backoff.next_delay()
            self.next_probe = time.monotonic() + delay
            log.warning(
                "Kafka broker %s still unreachable after %.0f s; retrying in %.1f s (giving up after %.0f s)",
                self.source.bootstrap,
                elapsed,
                delay,
                self.rules.give_up_after,
            )
            return
        self._reachable_again(now)

    def _reachable_again(self, now: float) -> None:
        if self.down_since is not None:
            log.info(
                "Kafka broker %s reachable again after %.1f s", self.source.bootstrap, now - self.down_since
            )
        self.down_since = None
        self.last_activity = now

    def _close(self) -> None:
        # never leave a commit half-way through the protocol
        self.parsing.shutdown(wait=True, cancel_futures=self.failed)
        self.committing.shutdown(wait=True)
        try:
            self.consumer.close()  # leaves the group; on_revoke has nothing left to commit
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the Kafka consumer: %s", exc)
        if self.callback_error is not None and not self.failed:
            self._raise_callback_error()
