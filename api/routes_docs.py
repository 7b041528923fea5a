"""The OpenAPI schema and Swagger UI, behind a key like every endpoint but /healthz (scope `read`).

Browsers get a Basic prompt (401 carries `WWW-Authenticate: Basic`); paste the key as the username.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.auth import RequireRead

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, key: RequireRead) -> dict[str, Any]:
    """The OpenAPI schema of this server."""
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs")
def docs(key: RequireRead) -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="hindsight API")
