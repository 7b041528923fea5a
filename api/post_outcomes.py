"""POST /v1/outcomes served by a plain ASGI endpoint: the hot path, without FastAPI's per-request machinery.

The operation is still declared (request body, responses, security) by `routes_outcomes.post_route`
for the OpenAPI schema; this endpoint is what serves it. Measured in-process: FastAPI's route
handler (dependency solving, Request wrapping, response rendering) cost more per single-outcome
request than authentication, parsing, validation and the intake commit together.
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.audit import audit, outcomes_log
from api.auth import authorize, client_ip
from api.body import NDJSON_TYPES, parse_items, read_outcome_body
from api.runtime import runtime_of
from service.errors import InvalidOutcome
from storage.crashpoints import crash_point
from storage.outcome_model import Outcome, conflict_within, parse_outcomes, repeated_detail

PATH = "/v1/outcomes"
INLINE_BELOW = 64  # validate up to this many outcomes on the event loop; more in a worker thread
INLINE_PARSE_BYTES = 64 * 1024
"""A body over this size is parsed and validated in one worker-thread call (a 16 MiB NDJSON body took
~1-2 s on the event loop, during which no other request was answered; review finding)."""


class PostOutcomes:
    """ASGI app: store outcomes durably (fsynced before the answer), idempotent by outcome_id.

    Errors are raised as `HindsightError`s and rendered by the app's exception handlers (the one
    error shape), as for every other route.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        runtime = runtime_of(request)
        key = authorize(request, runtime.keys, request.headers.get("authorization"), "outcomes:write")
        limit = runtime.config.max_batch_items
        kind, body = await read_outcome_body(request, runtime.config.max_body_bytes)
        if len(body) > INLINE_PARSE_BYTES:  # ~1-2 s for 16 MiB: the loop would answer nobody meanwhile
            outcomes = await run_in_threadpool(_outcomes, kind, body, limit)
        else:
            items = parse_items(kind, body, limit)
            if len(items) < INLINE_BELOW:
                outcomes = parse_outcomes(items, max_items=limit)
            else:
                outcomes = await run_in_threadpool(parse_outcomes, items, max_items=limit)
            _refuse_conflicts_within(outcomes)
        statuses = await runtime.store(outcomes, key.id, large=len(body) > INLINE_PARSE_BYTES)
        crash_point("outcomes.before_response")
        answer, created = _results(outcomes, statuses)
        audit(
            outcomes_log,
            "outcomes_written",
            key_id=key.id,
            client_ip=client_ip(request),
            created=len(created),
            duplicate=len(outcomes) - len(created),
            ndjson=request.headers.get("content-type", "").startswith(NDJSON_TYPES),
            outcome_ids=created,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _outcomes(kind: str, body: bytes, limit: int) -> list[Outcome]:
    """A large body's outcomes, parsed and validated in one worker-thread call."""
    outcomes = parse_outcomes(parse_items(kind, body, limit), max_items=limit)
    _refuse_conflicts_within(outcomes)
    return outcomes


def _refuse_conflicts_within(outcomes: list[Outcome]) -> None:
    """A 422 for an outcome_id given twice in the request with different contents (the intake log's 409
    said "already stored with a different body" of an id stored nowhere; review finding)."""
    conflict = conflict_within(outcomes)
    if conflict is not None:
        earlier, later = conflict
        raise InvalidOutcome(
            f"outcome_id {outcomes[later].outcome_id!r} comes twice in this request with different contents "
            f"(items {earlier} and {later}); nothing was stored",
            details=[repeated_detail(later)],
        )


def _results(outcomes: list[Outcome], statuses: list[str]) -> tuple[bytes, list[str]]:
    """The response body `{"results": [{"outcome_id", "status"}, ...]}` and the created ids."""
    results = [{"outcome_id": o.outcome_id, "status": s} for o, s in zip(outcomes, statuses, strict=True)]
    created = [o.outcome_id for o, s in zip(outcomes, statuses, strict=True) if s == "created"]
    return orjson.dumps({"results": results}), created


def post_outcomes_route() -> Route:
    """The serving route; mounted before the documented FastAPI operation of the same path and method."""
    return Route(PATH, PostOutcomes(), methods=["POST"], include_in_schema=False)
