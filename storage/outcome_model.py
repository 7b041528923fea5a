"""What an outcome is: the one validation and normalisation shared by the REST API and the importer.

Clients send outcome objects (JSON); `parse_outcomes()` validates a list of them with one pydantic
model and returns `Outcome` values ready for the intake log, or raises `InvalidOutcome` whose
details name each bad field with its item index. Nothing here does I/O.

"Same body" (for idempotency) is `Outcome.fingerprint`: a digest of the normalised outcome without
`received_at` and `key_id` (set by the server), and with `occurred_at` only when the client gave it
(a defaulted `occurred_at` is the time of receipt, so a retry would otherwise never match).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from service.errors import InvalidOutcome

KEY_PATH = re.compile(r"^(context|features)\.[^\s.,][^\s,]*\Z")
"""A key path: `context.<name>` or `features.<name>` (the name may itself contain dots). It ends in an
end-of-text anchor, not `$`, which also matches before a final newline: a path ending in a newline was
accepted (review finding). No comma: the label join compares a key's paths joined by commas with a
policy's (`context.a,features.b` was read as two paths; review finding)."""

KEY_VALUE_FORBIDDEN = ("\x00", "\x1f")
"""Characters a key value may not hold: U+0000 (the intake's SQLite JSON functions stop at it) and U+001F,
which the label join puts between the values of a several-path key (`x` + `y\x1fz` matched `x\x1fy` +
`z`; review finding)."""

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)  # RFC 3339 section 5.6 date-time: an offset (Z or +hh:mm) is required

_JSON_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?\Z")


Scalar = StrictStr | StrictBool | StrictInt | Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A value or key value: string, number or boolean (JSON null, arrays and objects are refused)."""

IdText = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""An id: 1-256 characters, none of them a control character. The intake log's SQLite JSON functions
stop at U+0000: an outcome_id of "crm-1", U+0000, "x" was indexed as "crm-1", clashed with it and latched the
intake shut for every client, and a record_id with one was found under its prefix (review finding)."""


class OutcomeIn(BaseModel):
    """One outcome as a client sends it: the target (record_id or key), the value and when it happened."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    outcome_id: IdText | None = Field(
        None, description="Client idempotency key; a random UUID is generated when absent."
    )
    record_id: IdText | None = Field(None, description="The predicted record this outcome is about.")
    key: dict[str, Scalar] | None = Field(
        None,
        description="Target by business key: {path: value} with paths context.<name> or features.<name>.",
        examples=[{"context.transaction_id": "tx-1"}],
    )
    service_id: IdText | None = Field(None, description="DSS API service the outcome belongs to.")
    endpoint_id: IdText | None = Field(None, description="DSS API endpoint the outcome belongs to.")
    outcome_type: IdText = Field("label", description="Which named outcome this is (default label).")
    value: Scalar = Field(description="What finally happened: string, number or boolean.")
    occurred_at: Annotated[str, Field(pattern=_RFC3339.pattern)] | None = Field(
        None,
        description="RFC 3339 time it happened (offset required); default: time of receipt.",
        examples=["2026-01-31T12:00:00Z"],
    )
    attributes: dict[str, Any] | None = Field(None, description="Free-form extra data, kept as JSON.")

    @field_validator("key")
    @classmethod
    def _key_paths(cls, key: dict[str, Any] | None) -> dict[str, Any] | None:
        if key is None:
            return None
        if not key:
            raise ValueError("key needs at least one path: value pair")
        bad = [path for path in key if not KEY_PATH.match(path)]
        if bad:
            raise ValueError(f"key paths must be context.<name> or features.<name>, got {bad}")
        with_nul = [
            path
            for path, part in key.items()
            if isinstance(part, str) and any(c in part for c in KEY_VALUE_FORBIDDEN)
        ]
        if with_nul:
            raise ValueError(f"key values must not contain U+0000 or U+001F, at {with_nul}")
        return key

    @model_validator(mode="after")
    def _one_target(self) -> OutcomeIn:
        if (self.record_id is None) == (self.key is None):
            raise ValueError("give exactly one target: record_id or key")
        return self


class OutcomeBatchIn(BaseModel):
    """A batch of outcomes: `{"outcomes": [...]}`."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeIn] = Field(description="The outcomes, stored all or none.")


_ADAPTER: TypeAdapter[list[OutcomeIn]] = TypeAdapter(list[OutcomeIn])


class Outcome(NamedTuple):
    """One validated, normalised outcome (everything but received_at, key_id and intake_seq).

    A NamedTuple rather than a frozen dataclass: building 10,000 of them is a third of the cost.
    """

    outcome_id: str
    record_id: str | None
    key: str | None
    service_id: str | None
    endpoint_id: str | None
    outcome_type: str
    value: str
    value_number: float | None
    value_json: str
    occurred_at_us: int | None
    attributes: str | None
    fingerprint: str  # 32 hex digits
    generated_id: bool = False  # the server made the id up (random uuid7): it cannot be stored already

    def occurred_or(self, received_at_us: int) -> int:
        """occurred_at in microseconds since the epoch, defaulting to the time of receipt."""
        return received_at_us if self.occurred_at_us is None else self.occurred_at_us


def canonical_key(pairs: dict[str, Any]) -> str:
    """The canonical JSON text of a key: sorted paths, compact (what the `key` column holds)."""
    return orjson.dumps(pairs, option=_SORTED).decode()


def text_number(text: str) -> float | None:
    """The number a text stands for: a finite JSON number (`1`, `-0.5`, `1e3`), else None (`+1`, `.5`,
    `1_000`, `nan`). An outcome's `value_number`, an implicit label's and a positive class's all use it."""
    number = float(text) if _JSON_NUMBER.match(text) else None
    return number if number is not None and math.isfinite(number) else None


def _value_forms(value: str | bool | int | float) -> tuple[str, float | None, str]:
    if isinstance(value, bool):
        text = "true" if value else "false"
        return text, 1.0 if value else 0.0, text
    if isinstance(value, int | float):
        as_json = orjson.dumps(value).decode()
        return as_json, float(value), as_json
    return value, text_number(value), orjson.dumps(value).decode()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)  # batches often repeat timestamps; parsing is the costly part
def _epoch_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 text (already matched by the pattern)."""
    if len(text) > 32:  # fromisoformat takes at most 6 fraction digits: cut nanoseconds (truncation)
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}"
    try:
        parsed = dt.datetime.fromisoformat(text.upper())
    except ValueError as exc:  # the pattern lets through what the calendar or clock refuses
        # Python's text is clear for dates ("day is out of range for month"), not for offsets
        if "offset" not in str(exc):
            raise
        raise ValueError(
            f"occurred_at {text} is not a valid RFC 3339 date-time: the offset must be within ±23:59"
        ) from exc
    micros = (parsed - _EPOCH) // _MICROSECOND
    if not _EARLIEST_US <= micros < _LATEST_US:
        # Same bounds as prediction timestamps: outside them DuckDB and Python disagree on how to
        # read the value back, and the record's reads would fail for good (review finding).
        raise ValueError(f"occurred_at {text} is outside 1900-01-01 .. 2199-12-31 UTC")
    return micros


_EARLIEST_US = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _MICROSECOND
_LATEST_US = (dt.datetime(2200, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _MICROSECOND


_RANDOM_POOL = bytearray()
_RANDOM_LOCK = threading.Lock()


def _random_bytes(size: int) -> bytes:
    # One os.urandom call per 64 KiB: each call releases the GIL, which costs a thread switch
    # under load (measured: ~80 us per call inside the server); the bytes are the same CSPRNG's.
    with _RANDOM_LOCK:
        if len(_RANDOM_POOL) < size:
            _RANDOM_POOL.extend(os.urandom(max(65_536, size)))
        taken = bytes(_RANDOM_POOL[:size])
        del _RANDOM_POOL[:size]
    return taken


def new_ids(count: int) -> list[str]:
    """`count` time-ordered random UUIDs (version 7, RFC 9562 section 5.7) as text.

    Version 7 rather than 4: ids made later sort later, so the intake log's outcome_id index grows
    at its right edge instead of touching pages all over the B-tree (measured: a 10,000-outcome
    commit grew from 50 to 170 ms as the index of random uuid4 keys grew).
    """
    millis = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    if count >= _VECTOR_IDS_FROM:
        return _new_ids_vector(count, millis)
    raw = bytearray(_random_bytes(16 * count))
    for start in range(0, 16 * count, 16):
        raw[start : start + 6] = millis
        raw[start + 6] = (raw[start + 6] & 0x0F) | 0x70  # version 7
        raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # variant 10
    h = raw.hex()
    return [
        f"{h[o : o + 8]}-{h[o + 8 : o + 12]}-{h[o + 12 : o + 16]}-{h[o + 16 : o + 20]}-{h[o + 20 : o + 32]}"
        for o in range(0, 32 * count, 32)
    ]


_VECTOR_IDS_FROM = 64  # below this, numpy's per-call overhead costs more than the Python loop
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_SPANS = ((0, 0, 8), (9, 8, 12), (14, 12, 16), (19, 16, 20), (24, 20, 32))
"""(text start, hex start, hex end) of the five dash-separated groups of a UUID's text."""


def _new_ids_vector(count: int, millis: bytes) -> list[str]:
    """`new_ids` for a batch: the bits and the hex text of all ids built by numpy in a few array
    operations (0.3 us an id instead of 0.8 us in a Python loop over each id)."""
    raw = np.frombuffer(_random_bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, :6] = np.frombuffer(millis, dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70  # version 7
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # variant 10
    hexed = np.empty((count, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX_DIGITS[raw >> 4]
    hexed[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for at, start, end in _UUID_SPANS:
        text[:, at : at + end - start] = hexed[:, start:end]
    joined = text.tobytes().decode("ascii")
    return [joined[o : o + 36] for o in range(0, 36 * count, 36)]


def normalise(item: OutcomeIn, new_id: str | None = None) -> Outcome:
    """Turn a validated outcome into its stored form and fingerprint (ValueError for an impossible date).

    `new_id` is the id to use when the client gave none (default: a fresh uuid7).
    """
    return _normalised(
        item.outcome_id,
        item.record_id,
        item.key,
        item.service_id,
        item.endpoint_id,
        item.outcome_type,
        item.value,
        item.occurred_at,
        item.attributes,
        new_id,
    )


class FieldProblem(ValueError):
    """A value the model's types accept but that cannot be stored, naming its field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _normalised(
    outcome_id: str | None,
    record_id: str | None,
    key_pairs: dict[str, Any] | None,
    service_id: str | None,
    endpoint_id: str | None,
    outcome_type: str,
    raw_value: str | bool | int | float,
    occurred_at: str | None,
    raw_attributes: dict[str, Any] | None,
    new_id: str | None,
) -> Outcome:
    """The one normalisation of both validators (the pydantic model and the fast path)."""
    forms = _STR_FORMS.get(raw_value) if type(raw_value) is str else None
    if forms is None:
        forms = _str_forms(raw_value) if type(raw_value) is str else _value_forms(raw_value)
    value, value_number, value_json = forms
    key = None if key_pairs is None else orjson.dumps(key_pairs, option=_SORTED).decode()
    occurred = None if occurred_at is None else _epoch_us(occurred_at)
    try:
        attributes = None if raw_attributes is None else orjson.dumps(raw_attributes, option=_SORTED).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (254 levels)
        raise FieldProblem("attributes", f"attributes cannot be stored: {exc}") from exc
    body = (record_id, key, service_id, endpoint_id, outcome_type, value_json, occurred, attributes)
    fingerprint = blake2b(orjson.dumps(body), digest_size=16).hexdigest()
    generated = outcome_id is None
    # tuple.__new__ directly: the NamedTuple's generated __new__ is one more Python frame per outcome
    return _new_tuple(
        Outcome,
        (
            (new_id or new_ids(1)[0]) if generated else outcome_id,
            record_id,
            key,
            service_id,
            endpoint_id,
            outcome_type,
            value,
            value_number,
            value_json,
            occurred,
            attributes,
            fingerprint,
            generated,
        ),
    )


_new_tuple = tuple.__new__


_STR_FORMS: dict[str, tuple[str, float | None, str]] = {}
_STR_FORMS_MAX = 4096


def _str_forms(value: str) -> tuple[str, float | None, str]:
    """`_value_forms` of a text, remembered: outcome values repeat (labels, classes)."""
    forms = _STR_FORMS.get(value)
    if forms is None:
        forms = _value_forms(value)
        if len(value) <= 64:
            if len(_STR_FORMS) >= _STR_FORMS_MAX:
                _STR_FORMS.clear()
            _STR_FORMS[value] = forms
    return forms


_SORTED = orjson.OPT_SORT_KEYS


blake2b = hashlib.blake2b


_UNION_TAGS = {"str", "bool", "int", "float", "constrained-float"}


def _problems(exc: ValidationError, index_offset: int) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = list(err["loc"])
        first = loc.pop(0) if loc and isinstance(loc[0], int) else None
        index = first if isinstance(first, int) else None
        path = [str(p) for p in loc]
        message = err["msg"].removeprefix("Value error, ")
        if path and path[-1] in _UNION_TAGS:
            # The scalar union reports one error per member (value.str, value.int, ...): say it once.
            path, message = path[:-1], "must be a string, number or boolean"
        elif err["type"] == "string_pattern_mismatch" and path == ["occurred_at"]:
            message = (
                "must be an RFC 3339 date-time with an offset (and at most 9 fraction digits), "
                "e.g. 2026-01-31T12:00:00Z"
            )
        elif err["type"] == "string_pattern_mismatch":  # an id (IdText)
            message = "must not contain control characters (U+0000-U+001F, U+007F)"
        problems.append(
            {
                "index": None if index is None else index + index_offset,
                "field": path[0] if path else "target",
                "loc": path,
                "message": message,
            }
        )
    return problems


def _dedupe(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for problem in problems:
        marker = (problem["index"], tuple(problem["loc"]), problem["message"])
        if marker not in seen:
            seen.add(marker)
            kept.append(problem)
    return kept


def conflict_within(outcomes: Sequence[Outcome]) -> tuple[int, int] | None:
    """The indexes (earlier, later) of the first outcome_id given twice with different contents in one
    request or file, or None. The same outcome twice is fine (the second is a duplicate)."""
    first: dict[str, tuple[int, str]] = {}
    for index, outcome in enumerate(outcomes):
        if outcome.generated_id:
            continue
        seen = first.setdefault(outcome.outcome_id, (index, outcome.fingerprint))
        if seen[1] != outcome.fingerprint:
            return seen[0], index
    return None


def repeated_detail(index: int) -> dict[str, Any]:
    """The error detail of an outcome_id repeated with other contents at item `index`."""
    return {
        "index": index,
        "field": "outcome_id",
        "loc": ["outcome_id"],
        "message": "repeated with other contents",
    }


def too_many_outcomes(count: int | None, max_items: int) -> InvalidOutcome:
    """The error for a request of `count` outcomes (None: not counted to the end) over `max_items`."""
    return InvalidOutcome(
        f"too many outcomes in one request: {count} > {max_items}"
        if count is not None
        else f"too many outcomes in one request: more than {max_items}",
        details=[
            {"index": None, "field": "outcomes", "loc": ["outcomes"], "message": f"at most {max_items} items"}
        ],
    )


def parse_outcomes(
    items: Sequence[Any], *, index_offset: int = 0, max_items: int | None = None
) -> list[Outcome]:
    """Validate and normalise outcome objects; any invalid item rejects them all (InvalidOutcome).

    `index_offset` shifts the item index in error details.
    """
    if max_items is not None and len(items) > max_items:
        raise too_many_outcomes(len(items), max_items)
    if not items:
        raise InvalidOutcome(
            "no outcomes given",
            details=[
                {"index": None, "field": "outcomes", "loc": ["outcomes"], "message": "at least one outcome"}
            ],
        )
    fast = parse_outcomes_fast(items)
    if fast is not None:
        return fast
    return parse_outcomes_model(items, index_offset=index_offset)


def parse_outcomes_model(items: Sequence[Any], *, index_offset: int = 0) -> list[Outcome]:
    """Validate with the pydantic model `OutcomeIn` (the reference rules; its errors are the API's)."""
    try:
        validated = _ADAPTER.validate_python(items)
    except ValidationError as exc:
        found = _dedupe(_problems(exc, index_offset))
        first = found[0]
        where = f"item {first['index']}" if first["index"] is not None else "body"
        raise InvalidOutcome(
            f"{len(found)} invalid field(s); first: {where}, {first['field']}: {first['message']}",
            details=found,
        ) from exc
    outcomes: list[Outcome] = []
    problems: list[dict[str, Any]] = []
    ids = iter(new_ids(sum(1 for item in validated if item.outcome_id is None)))
    for index, item in enumerate(validated):
        try:
            outcomes.append(normalise(item, next(ids) if item.outcome_id is None else None))
        except ValueError as exc:  # a date the pattern allows but the calendar does not (2026-02-30)
            field = exc.field if isinstance(exc, FieldProblem) else "occurred_at"
            problems.append(
                {"index": index + index_offset, "field": field, "loc": [field], "message": str(exc)}
            )
    if problems:
        fields = sorted({p["field"] for p in problems})
        raise InvalidOutcome(f"{len(problems)} invalid {'/'.join(fields)} value(s)", details=problems)
    return outcomes


# -- the fast path ----------------------------------------------------------------------------------
# Building a pydantic model per item was most of a batch's cost. The fast path checks the same rules
# by hand on plain JSON values and normalises through the same `_normalised`. It only ever ACCEPTS:
# on anything it does not fully recognise (an invalid field, an unusual type) it returns None and the
# pydantic model decides, so every error message and detail stays the model's. Its acceptance is a
# subset of the model's (tests check agreement on generated inputs).

_FIELDS = frozenset(OutcomeIn.model_fields)
_ID_MAX = 256
_RFC3339_ASCII = re.compile(_RFC3339.pattern.removesuffix("$") + r"\Z", re.ASCII)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can write; larger ints take the model's path


def _is_scalar(value: object) -> bool:
    kind = type(value)
    if kind is str or kind is bool:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    return kind is float and math.isfinite(value)  # type: ignore[arg-type]


_RFC3339_SEEN: set[str] = set()
"""occurred_at texts that matched the pattern (batches repeat timestamps; the match was a top cost)."""
_RFC3339_SEEN_MAX = 4096
_ABSENT = object()  # `value` missing (None is not a valid value either, but must not look present)


def _fast_item(item: Any, new_id: str | None) -> Outcome | None:
    if type(item) is not dict or not _FIELDS.issuperset(item):
        return None
    get = item.get
    outcome_id = get("outcome_id")
    record_id = get("record_id")
    service_id = get("service_id")
    endpoint_id = get("endpoint_id")
    outcome_type = get("outcome_type", "label")
    value = get("value", _ABSENT)
    # _is_id written out: this runs for every outcome of a batch, and a call per field showed up.
    # isprintable() is stricter than IdText's pattern (no control characters): what it refuses, the
    # model decides.
    if not (
        (
            outcome_id is None
            or (type(outcome_id) is str and 0 < len(outcome_id) <= _ID_MAX and outcome_id.isprintable())
        )
        and (
            record_id is None
            or (type(record_id) is str and 0 < len(record_id) <= _ID_MAX and record_id.isprintable())
        )
        and (
            service_id is None
            or (type(service_id) is str and 0 < len(service_id) <= _ID_MAX and service_id.isprintable())
        )
        and (
            endpoint_id is None
            or (type(endpoint_id) is str and 0 < len(endpoint_id) <= _ID_MAX and endpoint_id.isprintable())
        )
        and type(outcome_type) is str
        and 0 < len(outcome_type) <= _ID_MAX
        and outcome_type.isprintable()
        and (type(value) is str or _is_scalar(value))
    ):
        return None
    key = get("key")
    if key is not None:
        if type(key) is not dict or not key:
            return None
        for path, part in key.items():
            if type(path) is not str or not KEY_PATH.match(path) or not _is_scalar(part):
                return None
            if type(part) is str and ("\x00" in part or "\x1f" in part):  # the model refuses them
                return None
    if (record_id is None) == (key is None):
        return None
    occurred_at = get("occurred_at")
    if occurred_at is not None and (type(occurred_at) is not str or occurred_at not in _RFC3339_SEEN):
        if type(occurred_at) is not str or not _RFC3339_ASCII.match(occurred_at):
            return None
        if len(_RFC3339_SEEN) >= _RFC3339_SEEN_MAX:
            _RFC3339_SEEN.clear()
        _RFC3339_SEEN.add(occurred_at)
    attributes = get("attributes")
    if attributes is not None and (
        type(attributes) is not dict or not all(type(name) is str for name in attributes)
    ):
        return None
    try:
        return _normalised(
            outcome_id,
            record_id,
            key,
            service_id,
            endpoint_id,
            outcome_type,
            value,
            occurred_at,
            attributes,
            new_id,
        )
    except (ValueError, TypeError):  # an impossible date, unwritable attributes: the model reports it
        return None


def parse_outcomes_fast(items: Sequence[Any]) -> list[Outcome] | None:
    """The outcomes when every item is plainly valid, else None (then `parse_outcomes_model` decides)."""
    missing = sum(1 for item in items if type(item) is dict and item.get("outcome_id") is None)
    ids = iter(new_ids(missing)) if missing else None
    outcomes: list[Outcome] = []
    append = outcomes.append
    for item in items:
        new_id = (
            next(ids, None)
            if ids is not None and type(item) is dict and item.get("outcome_id") is None
            else None
        )
        outcome = _fast_item(item, new_id)
        if outcome is None:
            return None
        append(outcome)
    return outcomes
