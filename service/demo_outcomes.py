"""The demo's second half: outcomes that "finally happened" to the sample predictions, and policies.

Each simulated business reports truth the way real ones do: chargebacks arrive only for fraud (days
to weeks later; no chargeback within the maturity means legit), churn is known a month after the
prediction for most customers, and a listing's sale price arrives when it sells (not all do).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from service.loggen import GeneratedEvent, iter_events

POLICIES_TOML = """\
# Join policies of the demo (see README, "Evaluating models").
[[policies]]
service_id = "fraud"
endpoint_id = "score"
outcome_type = "label"
join_on = "context.transaction_id"
attribution = "last_before"
window = "90d"
positive = "fraud"
maturity = "60d"          # no chargeback after 60 days: the payment was legit
implicit_value = "legit"

[[policies]]
service_id = "churn"
endpoint_id = "predict"
outcome_type = "label"
join_on = "context.customer_id"
attribution = "last_before"
window = "45d"
positive = "churn"

[[policies]]
service_id = "price"
endpoint_id = "estimate"
outcome_type = "label"
join_on = "context.listing_id"
window = "120d"
"""


def _outcome(event: GeneratedEvent, value: Any, delay: timedelta) -> dict[str, Any]:
    return {
        "outcome_id": f"demo-{event.service_id}-{event.key}-{int(event.ts.timestamp() * 1000)}",
        "key": {f"context.{event.key_name}": event.key},
        "service_id": event.service_id,
        "endpoint_id": event.endpoint_id,
        "outcome_type": "label",
        "value": value,
        "occurred_at": (event.ts + delay).isoformat(),
    }


def synthesise_outcomes(*, days: int, per_day: int, seed: int) -> list[dict[str, Any]]:
    """The outcomes of the sample logs generated with the same arguments (deterministic)."""
    rng = random.Random(seed * 7919 + 1)
    outcomes: list[dict[str, Any]] = []
    for event in iter_events(days=days, per_day=per_day, seed=seed):
        if event.service_id == "fraud":
            if event.truth == event.positive and rng.random() < 0.9:  # a few chargebacks never come
                outcomes.append(_outcome(event, event.truth, timedelta(days=rng.uniform(2, 50))))
        elif event.service_id == "churn":
            if rng.random() < 0.8:
                outcomes.append(_outcome(event, event.truth, timedelta(days=rng.uniform(20, 40))))
        elif rng.random() < 0.6:  # price: only listings that sold
            outcomes.append(_outcome(event, event.truth, timedelta(days=rng.uniform(5, 90))))
    return outcomes


def write_demo_inputs(root: Path, *, days: int, per_day: int, seed: int) -> Path:
    """Write `<root>/sample-outcomes.jsonl` (and `<root>/hindsight.toml` when absent); return the JSONL."""
    config = root / "hindsight.toml"
    if not config.exists():
        config.write_text(POLICIES_TOML, encoding="utf-8")
    path = root / "sample-outcomes.jsonl"
    lines = [
        json.dumps(o, sort_keys=True) for o in synthesise_outcomes(days=days, per_day=per_day, seed=seed)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
