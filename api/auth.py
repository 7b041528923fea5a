"""Authentication and scopes: `Authorization: Bearer KEY` or HTTP Basic with the key as the username.

Routers declare what they need with the aliases below, e.g. `key: RequireRead` (a 401 without a
valid key, a 403 without the scope). Every failure is written to `hindsight.audit.auth` with the key
id when the token carried one and the client IP; the token itself is never logged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from api.audit import audit, auth_log
from api.runtime import RuntimeDep
from service.errors import AuthError, Forbidden
from storage.keys import ApiKey, KeyStore, key_id_of, redact

_authorization = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="`Bearer <key>`, or HTTP Basic with the key as the username and any password.",
)


def token_from_header(header: str | None) -> str | None:
    """The API key in an Authorization header (Bearer, or Basic username), or None."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, _, _password = decoded.partition(":")
        return username or None
    return None


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def authorize(request: Request, keys: KeyStore, header: str | None, scope: str | None) -> ApiKey:
    """The request's API key, checked for `scope`: AuthError (401) or Forbidden (403), both audited.

    A plain function (not only a dependency) so the hot POST route can call it directly: FastAPI's
    dependency resolution cost more per request than the rest of that route's work.
    """
    token = token_from_header(header)
    try:
        if token is None:
            # a header that holds no key where one is looked for is not "missing" (review finding)
            what = "unreadable Authorization header" if header and header.strip() else "missing API key"
            raise AuthError(
                f"{what}: send 'Authorization: Bearer <key>' or HTTP Basic with the key as username",
                details={"key_id": None},
            )
        key = keys.authenticate(token)
    except AuthError as exc:
        audit(
            auth_log,
            "auth_failed",
            reason=exc.message,
            key_id=None if token is None else key_id_of(token),
            client_ip=client_ip(request),
            method=request.method,
            path=redact(request.url.path),
        )
        raise
    request.state.key_id = key.id
    if scope is not None and scope not in key.scopes:
        audit(
            auth_log,
            "scope_missing",
            key_id=key.id,
            scope=scope,
            client_ip=client_ip(request),
            method=request.method,
            path=redact(request.url.path),
        )
        raise Forbidden(
            f"API key {key.id} lacks the {scope!r} scope", details={"key_id": key.id, "scope": scope}
        )
    return key


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that authenticates and demands `scope` (403 Forbidden without it)."""

    async def check(
        request: Request, runtime: RuntimeDep, header: Annotated[str | None, Security(_authorization)]
    ) -> ApiKey:
        return authorize(request, runtime.keys, header, scope)

    return check


SECURITY_SCHEME = _authorization.scheme_name
"""The OpenAPI security scheme name of the Authorization header (for routes that check keys inline)."""


RequireRead = Annotated[ApiKey, Depends(require_scope("read"))]
"""A key with the `read` scope (outcomes, predictions, metrics, readiness)."""
RequireOutcomesWrite = Annotated[ApiKey, Depends(require_scope("outcomes:write"))]
"""A key with the `outcomes:write` scope."""
RequireAdmin = Annotated[ApiKey, Depends(require_scope("admin"))]
"""A key with the `admin` scope (key management)."""
