"""Outcome endpoints: POST /v1/outcomes (durable, idempotent), GET /v1/outcomes, GET /v1/predictions/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.auth import SECURITY_SCHEME, RequireRead
from api.models import ErrorResponse, OutcomeList, OutcomeResults, PredictionWithOutcomes
from api.query_params import check_query
from api.runtime import RuntimeDep
from service.errors import InputError
from storage.outcome_model import KEY_PATH, OutcomeBatchIn, OutcomeIn
from storage.outcome_reads import find_outcomes, key_candidates, prediction_with_outcomes

router = APIRouter(tags=["outcomes"])


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
    """The documented POST operation, for the OpenAPI schema only (the body depends on the batch limit).

    It is not mounted: `api.post_outcomes.PostOutcomes` serves POST /v1/outcomes (see there why).
    """
    post = APIRouter(tags=["outcomes"])

    @post.post(
        "/v1/outcomes",
        response_model=OutcomeResults,
        responses=_errors(401, 403, 409, 413, 415, 422, 503),
        openapi_extra={"requestBody": _request_body_schema(max_items), "security": [{SECURITY_SCHEME: []}]},
        summary="Record outcomes",
    )
    async def post_outcomes() -> None:
        """Store outcomes durably (fsynced before the answer); the same outcome_id twice is a duplicate."""
        raise NotImplementedError("served by api.post_outcomes.PostOutcomes")  # never mounted

    return post


def _key_params(request: Request) -> dict[str, str]:
    check_query(
        request, lambda name: name == "record_id" or name.startswith("key."), "record_id or key.<path>"
    )
    return {
        name[len("key.") :]: value
        for name, value in request.query_params.multi_items()
        if name.startswith("key.")
    }


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
    if record_id == "":
        raise InputError("record_id must not be empty (no outcome can have one)", details={"record_id": ""})
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
def get_prediction(request: Request, record_id: str, key: RequireRead, runtime: RuntimeDep) -> dict[str, Any]:
    """The prediction logged for `record_id` and the outcome events recorded for it: by its record_id, and
    by its key under its endpoint's policies."""
    check_query(request, lambda name: False, "none (this route takes no query parameters)")
    config = runtime.config
    return prediction_with_outcomes(config.root, runtime.intake, record_id, config.policies)
