"""`hindsight serve`: run the outcomes REST API on uvicorn (one worker: the intake log has one writer)."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from api.config import ApiConfig
from service.settings import Settings
from storage.policies import policies_from_config


def api_config(settings: Settings) -> ApiConfig:
    """The API's plain values from the settings (the composition point: api/ never sees Settings)."""
    from api.config import ApiConfig  # here, so other commands do not import FastAPI

    api = settings.api
    return ApiConfig(
        root=settings.root,
        max_body_bytes=api.max_body_bytes,
        max_batch_items=api.max_batch_items,
        flush_interval=api.flush_interval,
        group_commit_ms=api.group_commit_ms,
        intake_commit=api.intake_commit,
        audit_calls=api.audit_calls,
        logs_dir=api.logs_dir,
        logging_config=api.logging_config,
        # Validated here, at start-up: a bad policy is one clear error now, not a failing /v1/metrics later.
        policies=tuple(policies_from_config([p.model_dump() for p in settings.policies])),
        immature_threshold=settings.eval.immature_threshold,
    )


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (default 8000).")] = None,
) -> None:
    """Serve the REST API: POST /v1/outcomes, GET /v1/outcomes, /v1/predictions/{id}, admin keys.

    Example: hindsight --root ./data serve --host 0.0.0.0 --port 8000
    """
    import uvicorn

    from service.cli import state_of

    settings = state_of(ctx).settings(api={"host": host, "port": port})
    from api.app import create_app

    config = api_config(settings)
    _preflight(settings)
    app = create_app(config)
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then raises the signal again against the handlers it
    # found: Python's defaults made that exit 143 (or "aborted", 130) after a clean stop, where `ingest
    # files --follow` and `ingest kafka` exit 0 (review finding). Handlers that do nothing make it 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in _STOPS}
    try:
        uvicorn.run(
            app,
            host=settings.api.host,
            port=settings.api.port,
            workers=1,
            log_level=settings.log_level.lower(),
            access_log=False,  # every call is in hindsight.audit.calls when api.audit_calls is on
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOPS = (signal.SIGINT, signal.SIGTERM)


def _stopped(signum: int, frame: object) -> None:
    """What uvicorn's repeat of the signal that stopped it does once it has shut down: nothing."""


def _preflight(settings: Settings) -> None:
    """Open and close what the server opens at start-up (audit logs, key store, intake log), so a root it
    cannot write is one error line here: inside uvicorn's start-up it was a 50-line traceback."""
    from service.cli import audit_log
    from storage.keys import KeyStore
    from storage.layout import Layout
    from storage.outcome_intake import open_intake

    layout = Layout(settings.root)
    with audit_log(settings):
        KeyStore(layout.keys_db).close()
        with open_intake(layout.intake_db):
            pass


def register(app: typer.Typer) -> None:
    """Attach `serve` to the main CLI."""
    app.command("serve")(serve)
