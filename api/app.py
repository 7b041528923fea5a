"""The API's composition point: `create_app(config)` builds the FastAPI app (the only entry point)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import routes_admin, routes_docs, routes_health, routes_metrics, routes_outcomes
from api.calls import CallAuditMiddleware
from api.config import ApiConfig
from api.errors import install_error_handlers
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
    app.include_router(routes_health.router)
    app.include_router(routes_outcomes.post_route(config.max_batch_items))
    app.include_router(routes_outcomes.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_docs.router)
    app.include_router(routes_metrics.router)
    if config.audit_calls:
        app.add_middleware(CallAuditMiddleware)
    return app
