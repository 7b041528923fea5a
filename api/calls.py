"""The `hindsight.audit.calls` middleware: one JSON line per call (method, path, status, key, client)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.audit import audit, calls_log
from storage.keys import redact


class CallAuditMiddleware:
    """Pure ASGI middleware (no body buffering); the key id comes from the auth dependency's request.state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": None}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            state = scope.get("state") or {}
            audit(
                calls_log,
                "call",
                method=scope["method"],
                path=redact(scope["path"]),  # a key pasted into a URL is not logged
                status=status["code"],
                key_id=state.get("key_id"),
                client_ip=client[0] if client else None,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
