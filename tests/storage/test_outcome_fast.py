"""The fast outcome validator agrees with the pydantic model: it accepts only what the model accepts."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import InvalidOutcome
from storage.outcome_model import Outcome, parse_outcomes, parse_outcomes_fast, parse_outcomes_model

_TEXT = st.one_of(
    st.sampled_from(["", "r1", "label", " x ", "é", "12.5", "1e3", "NaN", "-0", "x" * 256, "x" * 257]),
    st.text(max_size=8),
)
_SCALAR = st.one_of(
    _TEXT,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
_ODD = st.one_of(
    st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers())
)
_KEY_PATHS = st.sampled_from(
    ["context.a", "features.b", "context.a.b", "context.", "other.a", "context. a", "features.x y", "context"]
)
_TIMES = st.sampled_from(
    [
        "2026-01-31T12:00:00Z",
        "2026-01-31t12:00:00.123456789+02:00",
        "2026-01-31 12:00:00-05:30",
        "2026-02-30T12:00:00Z",
        "2026-01-31T12:00:00",
        "2026-01-31T12:00:00Z\n",
        "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",  # full-width digits
        "yesterday",
    ]
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "outcome_id": st.one_of(st.none(), _TEXT, _ODD),
    "record_id": st.one_of(st.none(), _TEXT, st.integers()),
    "key": st.one_of(st.none(), st.dictionaries(_KEY_PATHS, st.one_of(_SCALAR, _ODD), max_size=3), _ODD),
    "service_id": st.one_of(st.none(), _TEXT),
    "endpoint_id": st.one_of(st.none(), _TEXT),
    "outcome_type": st.one_of(st.none(), _TEXT),
    "value": st.one_of(_SCALAR, _ODD),
    "occurred_at": st.one_of(st.none(), _TIMES, st.integers()),
    "attributes": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _SCALAR, max_size=2), _ODD),
    "extra": _TEXT,
}


_VALID: dict[str, st.SearchStrategy[Any]] = {
    "outcome_id": st.one_of(st.none(), st.text(min_size=1, max_size=6)),
    "service_id": st.text(min_size=1, max_size=6),
    "outcome_type": st.sampled_from(["label", "amount"]),
    "occurred_at": _TIMES,
    "attributes": st.dictionaries(
        st.text(max_size=3), st.one_of(_SCALAR, st.lists(st.integers())), max_size=2
    ),
}


@st.composite
def _items(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(_ODD)  # not an object at all
    # Mostly valid items with a few odd fields: both paths get exercised, and the fast one accepts often.
    item: dict[str, Any] = {"value": draw(_SCALAR)}
    if draw(st.booleans()):
        item["record_id"] = draw(st.text(min_size=1, max_size=6))
    else:
        item["key"] = draw(st.dictionaries(st.sampled_from(["context.a", "features.b"]), _SCALAR, min_size=1))
    for name in draw(st.sets(st.sampled_from(sorted(_VALID)), max_size=3)):
        item[name] = draw(_VALID[name])
    for name in draw(st.sets(st.sampled_from(sorted(_FIELDS)), max_size=2)):
        item[name] = draw(_FIELDS[name])
    return item


def _same_body(outcome: Outcome) -> Outcome:
    return outcome._replace(outcome_id="(generated)") if outcome.generated_id else outcome


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_items(), min_size=1, max_size=4))
def test_fast_path_accepts_only_what_the_model_accepts_with_the_same_result(items: list[Any]) -> None:
    fast = parse_outcomes_fast(items)
    try:
        model = parse_outcomes_model(items)
    except InvalidOutcome:
        assert fast is None, "the fast path accepted items the model refuses"
        return
    except (TypeError, ValueError):  # values the model lets through but JSON cannot hold (huge ints)
        assert fast is None
        return
    if fast is not None:
        assert [_same_body(o) for o in fast] == [_same_body(o) for o in model]


def test_plain_valid_items_take_the_fast_path() -> None:
    items = orjson.loads(
        orjson.dumps(
            [
                {
                    "record_id": "r1",
                    "value": "fraud",
                    "occurred_at": "2026-01-31T12:00:00Z",
                    "service_id": "s",
                },
                {"outcome_id": "o1", "key": {"context.tx": "t1", "features.n": 2}, "value": 0.5},
                {
                    "record_id": "r2",
                    "value": True,
                    "attributes": {"note": ["a", 1]},
                    "outcome_type": "amount",
                },
            ]
        )
    )
    fast = parse_outcomes_fast(items)
    assert fast is not None
    assert [_same_body(o) for o in fast] == [_same_body(o) for o in parse_outcomes_model(items)]
    assert [o.generated_id for o in fast] == [True, False, True]
    assert len({o.outcome_id for o in fast}) == 3


def test_an_invalid_item_gets_the_models_error_details() -> None:
    items = [{"record_id": "r1", "value": "x"}, {"record_id": "r2", "value": None}]
    assert parse_outcomes_fast(items) is None
    try:
        parse_outcomes(items)
    except InvalidOutcome as exc:
        assert exc.details == [
            {"index": 1, "field": "value", "loc": ["value"], "message": "must be a string, number or boolean"}
        ]
    else:
        raise AssertionError("an invalid item was accepted")
