"""Benchmark: `hindsight ingest kafka` against a bare confluent-kafka consume + json.loads loop, same broker.

Starts tansu on a free loopback port (or uses KAFKA_BOOTSTRAP), creates a 3-partition topic,
produces N DSS query lines (service.loggen, envelopes A and B), then measures in the same run:

(a) hindsight: the real CLI in a subprocess (`--until-idle`), rate = messages / busy seconds
    (first message received to the end of the last Delta commit: no join, no idle wait);
(b) baseline: a bare loop that only consumes and `json.loads` each value, rate = messages /
    seconds from its first message to its last.

Target: (a) >= 0.7 x (b). The figures go to docs/benchmarks.md between the ingest_kafka markers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer  # noqa: E402

from service.loggen import iter_lines  # noqa: E402
from tests.kafka_broker import create_topic, produce, start_broker, unique_topic  # noqa: E402

TARGET = 0.7
PARTITIONS = 3
DISTINCT_LINES = 50_000  # generated once, then cycled: generation is not what is measured
GROUP_SETTINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
BEGIN, END = "<!-- BEGIN ingest_kafka -->", "<!-- END ingest_kafka -->"


def _lines(n: int) -> list[bytes]:
    distinct = [
        line.text
        for line in itertools.islice(
            iter_lines(days=7, per_day=DISTINCT_LINES // 7 + 1, bad_rate=0.0, other_topic_rate=0.0),
            DISTINCT_LINES,
        )
    ]
    return [distinct[i % len(distinct)] for i in range(n)]


def _bare_loop(bootstrap: str, topic: str, n: int, group: str) -> float:
    """Messages/s of consume + json.loads, from the first message received to the n-th."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **GROUP_SETTINGS,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = 0.0
    deadline = time.monotonic() + 600
    try:
        while seen < n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=1.0)
            if not messages:
                continue
            if not started:
                started = time.monotonic()
            for message in messages:
                if message.error() is None:
                    json.loads(message.value())  # type: ignore[arg-type]
                    seen += 1
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    if seen < n:
        raise RuntimeError(f"bare loop saw {seen} of {n} messages")
    return seen / elapsed


def _hindsight(bootstrap: str, topic: str, n: int, root: Path, group: str) -> dict[str, object]:
    env = {
        **os.environ,
        "HINDSIGHT_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "HINDSIGHT_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
    }
    env.pop("HINDSIGHT_CRASH_AT", None)
    command = [
        sys.executable, "-m", "service", "--root", str(root), "ingest", "kafka",
        "--bootstrap", bootstrap, "--topic", topic, "--group", group,
        "--until-idle", "3", "--format", "json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(
            f"hindsight ingest kafka failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
        )
    summary: dict[str, object] = json.loads(done.stdout)
    if summary["messages"] != n:
        raise RuntimeError(f"hindsight read {summary['messages']} of {n} messages")
    return summary


def _stage_costs(lines: list[bytes], root: Path) -> dict[str, float]:
    """CPU microseconds per message of each stage of hindsight's pipeline, and of json.loads, in-process."""
    from ingest.kafka_batch import PendingBatch, build_lines
    from ingest.kafka_commit import PartitionNames, commit_batch
    from ingest.parser import LineParser

    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    sample = lines[:100_000]
    n = len(sample)
    batch = PendingBatch(
        values=list(sample), partitions=[0] * n, offsets=list(range(n)), timestamps=[1_700_000_000_000] * n
    )
    parser = LineParser()
    parser.parse(build_lines(batch, {0: "t/0"}).lines.slice(0, 1000))  # warm up
    costs: dict[str, float] = {}
    started = _cpu()
    built = build_lines(batch, {0: "t/0"})
    costs["build"] = _cpu() - started
    started = _cpu()
    parsed = parser.parse(built.lines)
    costs["parse"] = _cpu() - started
    started = _cpu()
    commit_batch(root, PartitionNames("t"), {0: n}, parsed.predictions, parsed.quarantine)
    costs["commit"] = _cpu() - started
    started = _cpu()
    for value in sample:
        json.loads(value)
    costs["json.loads"] = _cpu() - started
    return {stage: seconds / n * 1e6 for stage, seconds in costs.items()}


def _write_section(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        updated = head + section + tail
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(updated, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="How many lines to produce.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; the best of each counts.")
    parser.add_argument("--no-write", action="store_true", help="Print the figures only.")
    args = parser.parse_args()
    n = args.messages
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = start_broker(Path(tmp) / "broker")
        try:
            topic = create_topic(broker.bootstrap, unique_topic("bench"), PARTITIONS)
            lines = _lines(n)
            value_bytes = sum(len(v) for v in lines)
            started = time.monotonic()
            produce(broker.bootstrap, topic, lines, partitions=[i % PARTITIONS for i in range(n)])
            produce_seconds = time.monotonic() - started
            costs = _stage_costs(lines, Path(tmp) / "stages")
            print("CPU us per message: " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()), flush=True)
            del lines
            print(
                f"produced {n:,} messages ({value_bytes / n:.0f} B avg) in {produce_seconds:.1f} s",
                flush=True,
            )

            ours, bare = 0.0, 0.0
            for round_ in range(1, args.rounds + 1):  # interleaved, best of each: the machine is shared
                root = Path(tmp) / f"root-{round_}"
                summary = _hindsight(broker.bootstrap, topic, n, root, f"hindsight-{round_}")
                rate = n / float(summary["busy_seconds"])  # type: ignore[arg-type]
                records, commits = summary["records"], summary["commits"]
                print(f"round {round_} hindsight: {rate:,.0f} msg/s ({records:,} records, {commits} commits)")
                ours = max(ours, rate)
                shutil.rmtree(root)
                rate = _bare_loop(broker.bootstrap, topic, n, f"bare-{round_}")
                print(f"round {round_} bare consume + json.loads: {rate:,.0f} messages/s", flush=True)
                bare = max(bare, rate)
        finally:
            broker.stop()

    load_after = os.getloadavg()[0]
    stages_vs_json = (costs["build"] + costs["parse"] + costs["commit"]) / costs["json.loads"]
    ratio = ours / bare
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"ratio {ratio:.2f} (target >= {TARGET}): {verdict}")
    text = f"""## Kafka ingestion (`bench/ingest_kafka.py`)

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine (2 cores, shared with other work: load
average {load_before:.1f} before, {load_after:.1f} after), tansu broker on loopback (in-memory
storage), one topic of {PARTITIONS} partitions holding {n:,} DSS query lines ({value_bytes / n:.0f} bytes on
average, envelopes A and B from `service/loggen.py`). Rates count from the first message received
to the last one handled (for hindsight: to the end of its last Delta commit), so group joins and
the `--until-idle` wait are excluded. {args.rounds} interleaved rounds, best of each.

| | messages/s |
|---|---:|
| bare confluent-kafka `consume()` + `json.loads` per value | {bare:,.0f} |
| `hindsight ingest kafka` (parse, quarantine, Delta commits of rows + offsets) | {ours:,.0f} |
| ratio (target >= {TARGET}) | {ratio:.2f} ({verdict}) |

hindsight wrote {summary["records"]:,} prediction rows over {summary["days"]} days in {summary["commits"]}
Delta commits (batches of up to 100,000 messages or 2 s), parsing two batches on two threads while
committing the previous one and consuming the next.

Where the CPU goes (in-process, 100,000 of the same lines, CPU microseconds per message):

| stage | CPU µs/message |
|---|---:|
| building the parser's Arrow input (`ingest/kafka_batch.py`) | {costs["build"]:.1f} |
| parsing (`ingest/parser.py`: C for the common line, DuckDB SQL for the rest) | {costs["parse"]:.1f} |
| committing rows + offsets (`storage/commit.py`, delta-rs) | {costs["commit"]:.1f} |
| for comparison: `json.loads` of the value (the bare loop's work) | {costs["json.loads"]:.1f} |

The consumer's own per-message work (collecting four attributes, building the table) is a small
fraction of the total. Build + parse + commit cost {stages_vs_json:.1f} times the bare loop's json.loads
per message (consuming costs the same on both sides), spread over hindsight's four threads (consume,
two parsers, commit), so its rate depends on how much of the two cores the rest of the machine
leaves it.
"""
    if not args.no_write:
        _write_section(text)
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
