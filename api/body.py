"""Reading an outcomes request body: bounded while it streams, JSON or NDJSON, into a list of items."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from service.errors import InputError, InvalidOutcome, PayloadTooLarge, UnsupportedMediaType
from storage.outcome_model import too_many_outcomes

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it (or its declared length) passes `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes is over the limit of {max_bytes} bytes",
            details={"limit_bytes": max_bytes},
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"request body is over the limit of {max_bytes} bytes", details={"limit_bytes": max_bytes}
                )
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise InputError("the client disconnected before sending the whole body") from exc
    return b"".join(chunks)


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-cased ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _check_charset(request: Request) -> None:
    """A `charset` parameter other than UTF-8 is a 415: the body is always read as UTF-8, and a
    Latin-1 body used to be stored as mojibake (or refused with a message about surrogates)."""
    for parameter in request.headers.get("content-type", "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(
                    f"charset {charset!r} is not accepted; send the body as UTF-8 (charset=utf-8 or none)",
                    details={"charset": charset},
                )


def _bad_body(message: str, index: int | None = None) -> InvalidOutcome:
    return InvalidOutcome(message, details=[{"index": index, "field": "body", "loc": [], "message": message}])


def parse_items(kind: str, body: bytes, max_items: int | None = None) -> list[Any]:
    """The outcome objects of a body: one object, {"outcomes": [...]}, or NDJSON lines (refused as soon
    as a line past `max_items` is met, not after parsing every line)."""
    if kind in NDJSON_TYPES:
        items: list[Any] = []
        for index, line in enumerate(body.splitlines()):
            if not line.strip():
                continue
            if max_items is not None and len(items) == max_items:
                raise too_many_outcomes(None, max_items)
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise _bad_body(f"line {index + 1} is not valid JSON: {exc}", len(items)) from exc
        return items
    if kind not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {kind or '(none)'!r} is not accepted; "
            "use application/json or application/x-ndjson",
            details={"content_type": kind or None, "accepted": [*JSON_TYPES, *NDJSON_TYPES]},
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad_body(f"body is not valid JSON: {exc}") from exc
    if isinstance(parsed, dict) and "outcomes" in parsed:
        extra = sorted(set(parsed) - {"outcomes"})
        if extra:
            raise _bad_body(f"a batch holds only 'outcomes', not {extra}")
        if not isinstance(parsed["outcomes"], list):
            raise _bad_body("'outcomes' must be a list of outcome objects")
        return parsed["outcomes"]
    if isinstance(parsed, dict):
        return [parsed]
    raise _bad_body('the body must be an outcome object or {"outcomes": [...]}')


def require_json(request: Request) -> None:
    """A dependency for routes whose body is one JSON object: any other Content-Type, or a charset
    other than UTF-8, is a 415 (FastAPI's own check answers 422, as if the fields were wrong)."""
    kind = media_type(request)
    if kind not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {kind or '(none)'!r} is not accepted; use application/json",
            details={"content_type": kind or None, "accepted": list(JSON_TYPES)},
        )
    _check_charset(request)


JsonBody = Annotated[None, Depends(require_json)]


async def read_outcome_body(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """Check the content type (before reading anything), then read the bounded body: (media type, body)."""
    kind = media_type(request)
    if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
        parse_items(kind, b"")  # raises UnsupportedMediaType before the body is read
    _check_charset(request)
    return kind, await read_body(request, max_bytes)
