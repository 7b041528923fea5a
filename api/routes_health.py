"""Liveness (`/healthz`, no key) and readiness (`/readyz`: intake writable, flusher alive, no fail-stop)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from api.auth import RequireRead
from api.models import ErrorResponse, Health, Readiness
from api.runtime import RuntimeDep
from service.errors import NotReady

log = logging.getLogger("hindsight.api")

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> dict[str, Any]:
    """The process answers; needs no key."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={code: {"model": ErrorResponse} for code in (401, 403, 503)},
    summary="Readiness",
)
def readyz(key: RequireRead, runtime: RuntimeDep) -> dict[str, Any]:
    """Ready when the intake log takes writes, the flusher runs and no storage failure stopped writes.

    `checks.flusher_stalled` says that no flush completed for a long while (another process holding the
    outcomes table's lock, say): writes are still acknowledged durably, so the service stays ready,
    but the outcomes wait in the intake log; monitor it."""
    checks = runtime.readiness()
    if checks["flusher_stalled"]:
        log.warning(
            "no flush to Delta completed for %.0f s; outcomes wait in the intake log",
            checks["seconds_since_flush"],
        )
    if not (checks["intake_writable"] and checks["flusher_alive"] and checks["fail_stop"] is None):
        raise NotReady("not ready: " + (checks["fail_stop"] or "a background worker stopped"), details=checks)
    return {"ready": True, "checks": checks}
