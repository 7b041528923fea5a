"""The handlers that give every HTTP error one shape: `{"error": {"type", "message", "details"}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import AuthError, Forbidden, HindsightError, StorageError, WritesStopped
from storage.keys import redact

log = logging.getLogger("hindsight.api")

_HTTP_TYPES = {404: "NotFound", 405: "MethodNotAllowed", 401: "AuthError", 403: "Forbidden"}


def _shape(status: int, type_name: str, message: str, details: Any = None, **headers: str) -> JSONResponse:
    body = {"error": {"type": type_name, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _hindsight_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HindsightError)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthError) and not isinstance(exc, Forbidden):
        headers["WWW-Authenticate"] = 'Bearer realm="hindsight", Basic realm="hindsight"'
    if exc.retryable:
        headers["Retry-After"] = "1"
    if exc.status_code >= 500:
        log.error("%s %s failed: %s", request.method, redact(request.url.path), exc.message)
    if isinstance(exc, WritesStopped):
        # the cause (server paths, SQLite or delta-rs text) is for the operator's log and /readyz (read
        # scope), not for every client with a write key (review finding)
        return _shape(exc.status_code, exc.type_name, WRITES_STOPPED_MESSAGE, None, **headers)
    if isinstance(exc, StorageError):
        # likewise a storage fault's cause (a damaged table file named by its path, review finding)
        return _shape(500, exc.type_name, SERVER_FAULT_MESSAGE, None, **headers)
    return _shape(exc.status_code, exc.type_name, exc.message, exc.details, **headers)


SERVER_FAULT_MESSAGE = "the server could not read or write its storage; the cause is in its log"


WRITES_STOPPED_MESSAGE = (
    "the server stopped accepting writes after a storage failure and needs an operator: the cause is in "
    "its log and at /readyz; outcomes it acknowledged are safe"
)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "field": str(err.get("loc", ("",))[-1]),
            "message": err.get("msg"),
        }
        for err in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "message": "invalid request"}
    return _shape(
        422, "InputError", f"invalid request: {'.'.join(first['loc'])}: {first['message']}", details
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_name = _HTTP_TYPES.get(exc.status_code, "HTTPError")
    return _shape(exc.status_code, type_name, str(exc.detail), None, **(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s: unexpected error", request.method, redact(request.url.path))
    return _shape(500, "InternalError", "internal error; see the server log", None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one shape."""
    app.add_exception_handler(HindsightError, _hindsight_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
