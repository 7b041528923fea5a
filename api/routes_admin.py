"""Key management over HTTP (scope `admin`): list, create and revoke API keys; every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.audit import admin_log, audit
from api.auth import RequireAdmin, client_ip
from api.body import JsonBody
from api.models import ErrorResponse, KeyCreate, KeyCreated, KeyInfo, KeyListing
from api.runtime import RuntimeDep

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 422)}


@router.get("", response_model=KeyListing, responses=_ERRORS, summary="List API keys")
def list_keys(key: RequireAdmin, runtime: RuntimeDep) -> dict[str, Any]:
    """Every key with its scopes and state (never a secret)."""
    return {"keys": [k.as_dict() for k in runtime.keys.list()]}


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _key_create(body: bytes) -> KeyCreate:
    """The request's KeyCreate; its errors answered as FastAPI's own validation errors (422)."""
    try:
        return KeyCreate.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


@router.post(
    "",
    response_model=KeyCreated,
    status_code=201,
    responses={**_ERRORS, 415: {"model": ErrorResponse}},
    summary="Create an API key",
    # the body is read after the key and Content-Type checks, so it is declared here: as a typed
    # parameter FastAPI parsed it first, and a bad body got a 400 or 422 before the 401 or 415
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": KeyCreate.model_json_schema()}},
        }
    },
)
def create_key(
    request: Request,
    key: RequireAdmin,
    runtime: RuntimeDep,
    _json: JsonBody,
    raw: Annotated[bytes, Depends(_raw_body)],
) -> dict[str, Any]:
    """Create a key; the token in the answer is shown this once."""
    body = _key_create(raw)
    created = runtime.keys.create(body.name, body.scopes)
    audit(
        admin_log,
        "key_created",
        by_key_id=key.id,
        key_id=created.key.id,
        name=created.key.name,
        scopes=list(created.key.scopes),
        client_ip=client_ip(request),
    )
    return {"key": created.key.as_dict(), "token": created.token}


@router.delete(
    "/{key_id}",
    response_model=KeyInfo,
    responses={**_ERRORS, 404: {"model": ErrorResponse}},
    summary="Revoke an API key",
)
def revoke_key(key_id: str, request: Request, key: RequireAdmin, runtime: RuntimeDep) -> dict[str, Any]:
    """Revoke a key (idempotent): it is refused from the next request on."""
    revoked = runtime.keys.revoke(key_id)
    audit(admin_log, "key_revoked", by_key_id=key.id, key_id=revoked.id, client_ip=client_ip(request))
    return revoked.as_dict()
