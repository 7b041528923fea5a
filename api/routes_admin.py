"""Key management over HTTP (scope `admin`): list, create and revoke API keys; every change is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

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


@router.post(
    "",
    response_model=KeyCreated,
    status_code=201,
    responses={**_ERRORS, 415: {"model": ErrorResponse}},
    summary="Create an API key",
)
def create_key(
    body: KeyCreate, request: Request, key: RequireAdmin, runtime: RuntimeDep, _json: JsonBody
) -> dict[str, Any]:
    """Create a key; the token in the answer is shown this once."""
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
