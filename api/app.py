"""The API's composition point: `create_app(config)` builds the FastAPI app (the only entry point)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import routes_admin, routes_docs, routes_health, routes_metrics, routes_outcomes
from api.calls import CallAuditMiddleware
from api.config import ApiConfig
from api.errors import install_error_handlers
from api.post_outcomes import post_outcomes_route
from api.runtime import Runtime


def create_app(config: ApiConfig) -> FastAPI:
    """The hindsight REST API over the root in `config`; stores open at startup, close at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.open(config)
        app.state.runtime = runtime
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="hindsight",
        summary="Record what finally happened to ML predictions; read predictions with their outcomes.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,  # served by routes_docs behind a key (every endpoint but /healthz needs one)
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.router.routes.append(post_outcomes_route())  # first: the hottest route is matched first
    app.include_router(routes_health.router)
    app.include_router(routes_outcomes.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_docs.router)
    app.include_router(routes_metrics.router)
    if config.audit_calls:
        app.add_middleware(CallAuditMiddleware)
    _document(app, routes_outcomes.post_route(config.max_batch_items).routes)
    return app


def _document(app: FastAPI, extra_routes: list[Any]) -> None:
    """Put operations served by plain ASGI routes (POST /v1/outcomes) into the app's OpenAPI schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=[*extra_routes, *app.routes],
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
