"""Outcome endpoints: POST /v1/outcomes (durable, idempotent), GET /v1/outcomes, GET /v1/predictions/{id}."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.audit import audit, outcomes_log
from api.auth import SECURITY_SCHEME, RequireRead, authorize, client_ip
from api.body import NDJSON_TYPES, read_outcome_items
from api.models import ErrorResponse, OutcomeList, OutcomeResults, PredictionWithOutcomes
from api.runtime import RuntimeDep, runtime_of
from service.errors import InputError
from storage.crashpoints import crash_point
from storage.outcome_model import KEY_PATH, OutcomeBatchIn, OutcomeIn, parse_outcomes
from storage.outcome_reads import find_outcomes, key_candidates, prediction_with_outcomes

router = APIRouter(tags=["outcomes"])

_INLINE_BELOW = 64  # validate small bodies on the event loop; larger ones in a worker thread


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def _request_body_schema(max_items: int) -> dict[str, Any]:
    outcome = OutcomeIn.model_json_schema()
    batch = OutcomeBatchIn.model_json_schema()
    batch.pop("$defs", None)
    batch["properties"]["outcomes"] = {
        "type": "array",
        "items": outcome,
        "minItems": 1,
        "maxItems": max_items,
        "description": "The outcomes, stored all or none.",
    }
    return {
        "required": True,
        "description": 'One outcome object, a batch {"outcomes": [...]}, or NDJSON (application/x-ndjson), '
        "one outcome per line.",
        "content": {
            "application/json": {"schema": {"oneOf": [outcome, batch]}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }


def post_route(max_items: int) -> APIRouter:
    """The POST route, whose documented body depends on the batch limit."""
    post = APIRouter(tags=["outcomes"])

    @post.post(
        "/v1/outcomes",
        response_model=OutcomeResults,
        responses=_errors(401, 403, 409, 413, 415, 422, 503),
        openapi_extra={"requestBody": _request_body_schema(max_items), "security": [{SECURITY_SCHEME: []}]},
        summary="Record outcomes",
    )
    async def post_outcomes(request: Request) -> Response:
        """Store outcomes durably (fsynced before the answer); the same outcome_id twice is a duplicate."""
        # No FastAPI dependencies on this hot route: resolving them cost more than the rest of a
        # single-outcome request. The key is checked inline by the same function the dependencies use.
        runtime = runtime_of(request)
        key = authorize(request, runtime.keys, request.headers.get("authorization"), "outcomes:write")
        items = await read_outcome_items(request, runtime.config.max_body_bytes)
        limit = runtime.config.max_batch_items
        if len(items) < _INLINE_BELOW:
            outcomes = parse_outcomes(items, max_items=limit)
        else:
            outcomes = await run_in_threadpool(parse_outcomes, items, max_items=limit)
        statuses = await runtime.store(outcomes, key.id)
        crash_point("outcomes.before_response")
        results = [{"outcome_id": o.outcome_id, "status": s} for o, s in zip(outcomes, statuses, strict=True)]
        created = [o.outcome_id for o, s in zip(outcomes, statuses, strict=True) if s == "created"]
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
        return Response(orjson.dumps({"results": results}), media_type="application/json")

    return post


def _key_params(request: Request) -> dict[str, str]:
    pairs: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in request.query_params.multi_items():
        if name.startswith("key."):
            pairs[name[len("key.") :]] = value
        elif name != "record_id":
            unknown.append(name)
    if unknown:
        raise InputError(
            f"unknown query parameter(s) {unknown}; use record_id or key.<path>", details={"unknown": unknown}
        )
    return pairs


@router.get(
    "/v1/outcomes",
    response_model=OutcomeList,
    responses=_errors(401, 403, 422),
    summary="Outcomes of a record or key",
)
def get_outcomes(
    request: Request, key: RequireRead, runtime: RuntimeDep, record_id: str | None = None
) -> dict[str, Any]:
    """Every outcome event of `?record_id=...` or of a key `?key.context.<name>=...`, oldest first."""
    pairs = _key_params(request)
    if (record_id is None) == (not pairs):
        raise InputError(
            "give exactly one target: record_id, or key.<path> parameters",
            details={"record_id": record_id, "key": pairs or None},
        )
    if pairs:
        bad = [p for p in pairs if not KEY_PATH.match(p)]
        if bad:
            raise InputError(
                f"key paths must be context.<name> or features.<name>, got {bad}", details={"key": bad}
            )
    found = find_outcomes(
        runtime.config.root, runtime.intake, record_id=record_id, keys=key_candidates(pairs) if pairs else ()
    )
    return {"outcomes": found}


@router.get(
    "/v1/predictions/{record_id}",
    response_model=PredictionWithOutcomes,
    responses=_errors(401, 403, 404),
    summary="A prediction with its outcomes",
)
def get_prediction(record_id: str, key: RequireRead, runtime: RuntimeDep) -> dict[str, Any]:
    """The prediction logged for `record_id` and every outcome event recorded for it."""
    return prediction_with_outcomes(runtime.config.root, runtime.intake, record_id)
