"""`hindsight ingest kafka`: consume DSS query logs from a Kafka topic into the tables, exactly once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ingest.kafka_consumer import KafkaIngestSummary
from service.cli import state_of
from service.cli_ingest import ingest_app
from service.errors import ConfigError
from service.render import to_json


class SummaryFormat(StrEnum):
    """How the end-of-run summary is printed."""

    table = "table"
    json = "json"


def kafka_command(
    ctx: typer.Context,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Topic holding the DSS query log lines.")
    ] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Consumer group; processes in one group share partitions.")
    ] = None,
    until_idle: Annotated[
        float | None,
        typer.Option("--until-idle", help="Exit 0 after this many seconds without messages.", min=0.001),
    ] = None,
    source_tz: Annotated[
        str | None, typer.Option("--source-tz", help="IANA zone of envelope-A timestamps (default UTC).")
    ] = None,
    fmt: Annotated[SummaryFormat, typer.Option("--format", help="Summary format.")] = SummaryFormat.table,
) -> None:
    """Consume DSS query log lines from a Kafka topic into the predictions table, exactly once.

    Runs until SIGTERM or SIGINT (the current batch is committed first), or with --until-idle
    until the topic has been quiet that long. Settings can also live in the kafka section of
    hindsight.toml (librdkafka options under kafka.options); flags win.

    Example: hindsight ingest kafka --bootstrap kafka1:9092 --topic dku-apinode-audit --group hindsight
    """
    settings = state_of(ctx).settings(
        kafka={"bootstrap": bootstrap, "topic": topic, "group": group},
        ingest={"source_tz": source_tz},
    )
    kafka = settings.kafka
    if not kafka.bootstrap:
        raise ConfigError("no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set [kafka] bootstrap")
    if not kafka.topic:
        raise ConfigError("no Kafka topic: pass --topic NAME or set [kafka] topic")
    # Imported here: the rest of the CLI should not pay librdkafka's and the parser's import cost.
    from ingest.kafka_config import BatchRules, KafkaSource
    from ingest.kafka_consumer import ingest_kafka

    source = KafkaSource(
        bootstrap=kafka.bootstrap,
        topic=kafka.topic,
        group=kafka.group,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        options=kafka.options,
        epoch=kafka.source_epoch,
    )
    rules = BatchRules(
        max_messages=kafka.batch_max_messages,
        max_seconds=kafka.batch_max_seconds,
        max_bytes=kafka.batch_max_bytes,
        max_line_bytes=settings.ingest.max_line_bytes,
        until_idle=until_idle,
        unavailable_timeout=kafka.unavailable_timeout_s,
        source_tz=settings.ingest.source_tz,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        summary = ingest_kafka(settings.root, source, rules, stop=stop)
    typer.echo(to_json(summary.to_dict()) if fmt is SummaryFormat.json else _summary_line(summary))


def _summary_line(summary: KafkaIngestSummary) -> str:
    data = summary.to_dict()
    days = f"{data['days']} days" if data["days"] != 1 else "1 day"
    if data["first_day"]:
        days += f" ({data['first_day']}..{data['last_day']})"
    return (
        f"ingested {data['records']} records over {days} from {data['messages']} messages of "
        f"{summary.topic} ({len(data['partitions'])} partitions); {data['skipped']} skipped, "
        f"{data['quarantined']} quarantined, {data['tombstones']} tombstones, "
        f"{data['commits']} commits in {data['seconds']:.1f} s; stopped by {data['stopped_by']}"
        + (
            f"; {summary.lost_to_retention} offsets deleted by retention before they were read"
            if summary.lost_to_retention
            else ""
        )
    )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT ask the consumer to commit its batch and leave, instead of killing it."""

    def _handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add the `kafka` command to the `ingest` group (service.cli_ingest attaches the group itself)."""
    ingest_app.command("kafka")(kafka_command)
