"""Synthetic DSS API-node query logs, the same for the same seed: for the demo, tests and benchmarks.

Three services are simulated: `fraud/score` (binary, `context.transaction_id`), `churn/predict`
(binary, `context.customer_id`, recurring customers, some predict-multi batches) and
`price/estimate` (regression, `context.listing_id`). Each has generations that take over as days
pass, newer ones being more accurate. Every record carries a `truth` drawn from the same hidden
probability the models estimate, so the outcomes and evaluation demos can report meaningful metrics.

Envelope A lines go to `api-queries/queries.log` and envelope B lines (mixed with other audit topics)
to `audit/audit.log`, both rotated like log4j's RollingFileAppender (`X` → `X.1` → … `X.N`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

Envelope = Literal["A", "B"]

DEFAULT_START = date(2026, 3, 1)
"""First day of generated logs unless told otherwise (fixed, so runs are reproducible)."""

QUERIES_LOGGER = "dku.apinode.audit.queries"
AUDIT_LOGGER = "dku.audit.apinode-query"


@dataclass(frozen=True)
class GeneratedEvent:
    """One predicted record as logged, with the truth that will later happen (for outcome synthesis)."""

    ts: datetime
    envelope: Envelope
    service_id: str
    endpoint_id: str
    generation: str
    key_name: str
    """The context field that identifies the business object (`transaction_id`, `customer_id`, ...)."""
    key: str
    features: dict[str, Any]
    prediction: str | float
    probas: dict[str, float] | None
    truth: str | float
    """What finally happened: a class label, or the real value for regression."""
    positive: str | None
    """The positive class of a binary endpoint, None for regression."""
    batch_index: int | None = None
    """Position inside a predict-multi query, None for a single query."""


@dataclass(frozen=True)
class GeneratedLine:
    """One log line: a prediction query (with its records) or noise (other topic, unusable line)."""

    ts: datetime
    envelope: Envelope
    text: bytes
    kind: Literal["query", "other_topic", "bad"]
    events: tuple[GeneratedEvent, ...] = ()


@dataclass
class LogFolderSummary:
    """What `generate_log_folder` wrote."""

    path: Path
    files: list[str] = field(default_factory=list)
    lines: int = 0
    queries: int = 0
    records: int = 0
    bad_lines: int = 0
    other_topic_lines: int = 0
    days: list[date] = field(default_factory=list)
    records_by_endpoint: dict[str, int] = field(default_factory=dict)
    """`service/endpoint` → records."""
    records_by_day: dict[str, int] = field(default_factory=dict)
    """UTC day (ISO) → records."""


@dataclass(frozen=True)
class _Service:
    service_id: str
    endpoint_id: str
    key_name: str
    generations: tuple[str, ...]
    classes: tuple[str, str] | None  # (positive, negative); None for regression


SERVICES = (  # drawn 50 % / 35 % / 15 % of queries
    _Service("fraud", "score", "transaction_id", ("v1", "v2", "v3"), ("fraud", "legit")),
    _Service("churn", "predict", "customer_id", ("v4", "v5"), ("churn", "stay")),
    _Service("price", "estimate", "listing_id", ("v1", "v2"), None),
)

_COUNTRIES = ("FR", "DE", "ES", "IT", "GB", "US", "BR", "NG")
_COUNTRY_RISK = {"FR": 0.0, "DE": 0.0, "ES": 0.2, "IT": 0.2, "GB": 0.1, "US": 0.4, "BR": 0.9, "NG": 1.3}
_MERCHANTS = ("grocery", "fuel", "electronics", "travel", "gaming", "fashion", "pharmacy")
_MERCHANT_RISK = {"electronics": 0.8, "travel": 0.5, "gaming": 1.0}
_PLANS = ("free", "pro", "team", "enterprise")
_CITIES = ("Lyon", "Paris", "Nantes", "Lille", "Bordeaux", "Toulouse")


def _randint(rng: random.Random, low: int, high: int) -> int:
    """Like rng.randint, several times faster (random() is one C call; exactness does not matter here)."""
    return low + int(rng.random() * (high - low + 1))


def _choice(rng: random.Random, items: tuple[Any, ...]) -> Any:
    return items[int(rng.random() * len(items))]


class _Simulator:
    """Draws queries in time order; all randomness comes from one seeded generator."""

    def __init__(self, seed: int, *, bad_rate: float, other_topic_rate: float) -> None:
        self.rng = random.Random(seed)
        self.bad_rate = bad_rate
        self.other_topic_rate = other_topic_rate
        self.next_transaction = 1
        self.next_listing = 1

    def lines(self, *, days: int, per_day: int, start: date) -> Iterator[GeneratedLine]:
        for day_index in range(days):
            midnight = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=day_index)
            offsets = sorted(self.rng.random() for _ in range(per_day))
            for offset in offsets:
                ts = midnight + timedelta(seconds=round(offset * 86_400, 3))
                yield self._line(ts, day_index, days)

    def _line(self, ts: datetime, day_index: int, days: int) -> GeneratedLine:
        rng = self.rng
        envelope: Envelope = "A" if rng.random() < 0.5 else "B"
        roll = rng.random()
        if roll < self.bad_rate:
            return self._bad(ts, envelope)
        if envelope == "B" and roll < self.bad_rate + self.other_topic_rate:
            return self._other_topic(ts)
        pick = rng.random()
        service = SERVICES[0] if pick < 0.5 else SERVICES[1] if pick < 0.85 else SERVICES[2]
        generation = service.generations[
            min(len(service.generations) - 1, day_index * len(service.generations) // days)
        ]
        size = _randint(rng, 2, 5) if service.service_id == "churn" and rng.random() < 0.1 else 1
        events = tuple(
            self._event(ts, envelope, service, generation, i if size > 1 else None) for i in range(size)
        )
        message = _message(events, rng)
        return GeneratedLine(ts, envelope, _envelope(envelope, ts, message, rng), "query", events)

    def _event(
        self, ts: datetime, envelope: Envelope, service: _Service, generation: str, index: int | None
    ) -> GeneratedEvent:
        rng = self.rng
        skill = (service.generations.index(generation) + 1) / len(service.generations)
        features: dict[str, Any]
        if service.service_id == "fraud":
            key = f"T-{self.next_transaction:09d}"
            self.next_transaction += 1
            country, merchant = _choice(rng, _COUNTRIES), _choice(rng, _MERCHANTS)
            amount = round(rng.lognormvariate(3.6, 1.1), 2)
            card_present = rng.random() < 0.6
            features = {
                "amount": amount,
                "merchant_category": merchant,
                "country": country,
                "card_present": card_present,
                "hour": ts.hour,
                "customer_age_days": _randint(rng, 1, 4000),
            }
            logit = -4.2 + 0.45 * math.log1p(amount) - 1.2 * card_present
            logit += _COUNTRY_RISK[country] + _MERCHANT_RISK.get(merchant, 0.0)
            return self._binary(ts, envelope, service, generation, key, features, logit, skill, index)
        if service.service_id == "churn":
            key = f"C-{_randint(rng, 1, 3000):05d}"
            tenure, plan = _randint(rng, 0, 72), _choice(rng, _PLANS)
            tickets = min(12, int(rng.expovariate(0.6)))
            features = {
                "customer_id": key,
                "tenure_months": tenure,
                "plan": plan,
                "monthly_spend": round(rng.uniform(0, 250), 2),
                "support_tickets": tickets,
                "last_login_days": _randint(rng, 0, 90),
            }
            logit = 0.8 - 0.05 * tenure + 0.35 * tickets + (0.9 if plan == "free" else 0.0)
            return self._binary(ts, envelope, service, generation, key, features, logit, skill, index)
        key = f"L-{self.next_listing:07d}"
        self.next_listing += 1
        sqft, rooms, city = _randint(rng, 250, 2500), _randint(rng, 1, 7), _choice(rng, _CITIES)
        features = {"sqft": sqft, "rooms": rooms, "city": city, "floor": _randint(rng, 0, 9)}
        truth = round(sqft * (300 if city == "Paris" else 180) * rng.uniform(0.85, 1.15) + rooms * 5000, 0)
        predicted = round(truth * rng.gauss(1.0, 0.25 - 0.12 * skill), 1)
        return GeneratedEvent(
            ts, envelope, service.service_id, service.endpoint_id, generation, service.key_name, key,
            features, predicted, None, truth, None, index,
        )  # fmt: skip

    def _binary(
        self,
        ts: datetime,
        envelope: Envelope,
        service: _Service,
        generation: str,
        key: str,
        features: dict[str, Any],
        logit: float,
        skill: float,
        index: int | None,
    ) -> GeneratedEvent:
        assert service.classes is not None
        positive, negative = service.classes
        rng = self.rng
        truth = positive if rng.random() < _sigmoid(logit) else negative
        # The model sees the hidden probability through noise that shrinks with each generation.
        estimate = _sigmoid(logit + rng.gauss(0.0, 2.0 * (1.1 - skill)))
        proba = round(min(max(estimate, 0.0005), 0.9995), 4)
        probas = {positive: proba, negative: round(1 - proba, 4)}
        return GeneratedEvent(
            ts, envelope, service.service_id, service.endpoint_id, generation, service.key_name, key,
            features, positive if proba >= 0.5 else negative, probas, truth, positive, index,
        )  # fmt: skip

    def _bad(self, ts: datetime, envelope: Envelope) -> GeneratedLine:
        if envelope == "A":
            text = _envelope_a_raw(ts, "Could not serialize query: java.lang.IllegalStateException", "WARN")
        else:
            # A line cut short, as a crashed writer or a full disk leaves it.
            text = b'{"severity":"INFO","logger":"dku.audit.apinode-query","topic":"apinode-query","mes'
        return GeneratedLine(ts, envelope, text, "bad")

    def _other_topic(self, ts: datetime) -> GeneratedLine:
        rng = self.rng
        topic, message = _choice(
            rng,
            (
                ("generic", {"msgType": "application-open", "user": "admin"}),
                ("authfail", {"msgType": "api-key-rejected", "reason": "unknown key"}),
                ("generic", {"msgType": "service-activated", "serviceId": "fraud"}),
            ),
        )
        record = {
            "severity": "INFO",
            "logger": f"dku.audit.{topic}",
            "topic": topic,
            "message": message,
            "mdc": {},
            "timestamp": _iso(ts),
        }
        return GeneratedLine(ts, "B", orjson.dumps(record), "other_topic")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _timing(rng: random.Random) -> dict[str, int]:
    return {
        "preProcessing": _randint(rng, 40, 400),
        "wait": _randint(rng, 0, 60),
        "preparation": _randint(rng, 2, 40),
        "prediction": _randint(rng, 800, 40_000),
        "postProcessing": _randint(rng, 5, 60),
    }


def _result(event: GeneratedEvent) -> dict[str, Any]:
    if event.probas is None:
        return {"prediction": event.prediction}
    proba = event.probas[event.positive or ""]
    return {
        "prediction": event.prediction,
        "probas": event.probas,
        "probaPercentile": min(100, max(1, math.ceil(proba * 100))),
    }


def _message(events: tuple[GeneratedEvent, ...], rng: random.Random) -> dict[str, Any]:
    first = events[0]
    message: dict[str, Any] = {
        "msgType": "prediction-query",
        "serviceId": first.service_id,
        "endpointId": first.endpoint_id,
        "serviceGenerationId": first.generation,
    }
    if first.batch_index is None:
        message["features"] = first.features
        message["context"] = {first.key_name: first.key}
        message["result"] = _result(first)
    else:
        message["items"] = [{"features": e.features, "context": {e.key_name: e.key}} for e in events]
        message["results"] = [_result(e) for e in events]
    message["timing"] = _timing(rng)
    return message


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}+0000"


def _envelope_a_raw(ts: datetime, body: str, severity: str) -> bytes:
    stamp = ts.strftime("%Y/%m/%d-%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    return (
        f'{{"timestamp" : "{stamp}", "logger": "{QUERIES_LOGGER}", "severity" : "{severity}", '
        f'"message" : {body}}}'
    ).encode()


def _envelope(envelope: Envelope, ts: datetime, message: dict[str, Any], rng: random.Random) -> bytes:
    if envelope == "A":
        return _envelope_a_raw(ts, orjson.dumps(message).decode(), "INFO")
    record = {
        "severity": "INFO",
        "logger": AUDIT_LOGGER,
        "topic": "apinode-query",
        "message": message,
        "mdc": {
            "apiKey": f"k-{_randint(rng, 1, 4)}",
        },
        "callTime": _randint(rng, 1, 80),
        "timestamp": _iso(ts),
    }
    return orjson.dumps(record)


def iter_lines(
    *,
    days: int = 7,
    per_day: int = 400,
    seed: int = 42,
    start: date = DEFAULT_START,
    bad_rate: float = 0.004,
    other_topic_rate: float = 0.03,
) -> Iterator[GeneratedLine]:
    """Every generated line in time order (about `per_day` lines a day over `days` UTC days)."""
    simulator = _Simulator(seed, bad_rate=bad_rate, other_topic_rate=other_topic_rate)
    yield from simulator.lines(days=days, per_day=per_day, start=start)


def iter_events(
    *, days: int = 7, per_day: int = 400, seed: int = 42, start: date = DEFAULT_START
) -> Iterator[GeneratedEvent]:
    """The predicted records of `generate_log_folder` with the same arguments, in log order.

    Use it to synthesise outcomes for logged predictions: each event has its context key
    (`key_name`, `key`), its timestamp and the `truth` that "finally happened".
    """
    for line in iter_lines(days=days, per_day=per_day, seed=seed, start=start):
        yield from line.events


class _RollingFile:
    """log4j 1.x RollingFileAppender: past `max_bytes`, X.(i) → X.(i+1), X → X.1, then a new X."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("wb")
        self.size = 0
        self.rotations = 0

    def write(self, line: bytes) -> None:
        if self.size and self.size + len(line) + 1 > self.max_bytes:
            self._rotate()
        self.fh.write(line + b"\n")
        self.size += len(line) + 1

    def _rotate(self) -> None:
        self.fh.close()
        if self.rotations >= self.backups:
            raise ValueError(
                f"{self.path.name} would need more than {self.backups} backups: raise max_file_bytes"
            )
        for i in range(min(self.rotations, self.backups - 1), 0, -1):
            self.path.with_name(f"{self.path.name}.{i}").rename(
                self.path.with_name(f"{self.path.name}.{i + 1}")
            )
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        self.fh = self.path.open("wb")
        self.size = 0

    def close(self) -> None:
        self.fh.close()


def generate_log_folder(
    path: Path,
    *,
    days: int = 7,
    per_day: int = 400,
    seed: int = 42,
    start: date = DEFAULT_START,
    max_file_bytes: int = 256 * 1024,
) -> LogFolderSummary:
    """Write a DSS-like log folder: `api-queries/queries.log*` (envelope A, 10 backups) and
    `audit/audit.log*` (envelope B and other audit topics, 20 backups), rotated at `max_file_bytes`.

    The same arguments always give byte-identical files. Raises ValueError when the volume would
    need more backups than log4j keeps (no line is ever dropped silently).
    """
    path = Path(path)
    writers = {
        "A": _RollingFile(path / "api-queries" / "queries.log", max_file_bytes, 10),
        "B": _RollingFile(path / "audit" / "audit.log", max_file_bytes, 20),
    }
    summary = LogFolderSummary(path=path)
    by_endpoint: Counter[str] = Counter()
    by_day: Counter[str] = Counter()
    try:
        for line in iter_lines(days=days, per_day=per_day, seed=seed, start=start):
            writers[line.envelope].write(line.text)
            summary.lines += 1
            if line.kind == "bad":
                summary.bad_lines += 1
            elif line.kind == "other_topic":
                summary.other_topic_lines += 1
            else:
                summary.queries += 1
                summary.records += len(line.events)
                for event in line.events:
                    by_endpoint[f"{event.service_id}/{event.endpoint_id}"] += 1
                    by_day[event.ts.date().isoformat()] += 1
    finally:
        for writer in writers.values():
            writer.close()
    summary.files = sorted(str(p.relative_to(path)) for p in path.rglob("*.log*"))
    summary.days = [start + timedelta(days=i) for i in range(days)]
    summary.records_by_endpoint = dict(sorted(by_endpoint.items()))
    summary.records_by_day = dict(sorted(by_day.items()))
    return summary


def write_lines(path: Path, n: int, *, seed: int = 42, days: int = 7, start: date = DEFAULT_START) -> int:
    """Stream `n` query lines (envelopes A and B mixed, no bad lines) to one file; returns its size.

    This is the benchmark input: about 530 bytes a line on average, spread over `days` days.
    """
    per_day = max(1, math.ceil(n / days))
    written = 0
    size = 0
    simulator = _Simulator(seed, bad_rate=0.0, other_topic_rate=0.0)
    with Path(path).open("wb", buffering=8 * 1024 * 1024) as fh:
        for line in simulator.lines(days=days, per_day=per_day, start=start):
            if written == n:
                break
            fh.write(line.text)
            fh.write(b"\n")
            size += len(line.text) + 1
            written += 1
    return size
