"""`hindsight keys create|list|revoke`: manage the API keys stored hashed in <root>/state/keys.sqlite."""

from __future__ import annotations

from typing import Annotated

import typer

from service.errors import NotFound
from service.render import OutputFormat, render_rows

keys_app = typer.Typer(help="Manage API keys (the secret is shown once, at creation).", no_args_is_help=True)


@keys_app.command("create")
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="outcomes:write, read or admin; repeat for several.")
    ],
) -> None:
    """Create a key and print it alone on stdout, once (it is stored only hashed).

    Example: hindsight keys create --name crm --scope outcomes:write --scope read
    """
    from api.audit import admin_log, audit
    from service.cli import audit_log, state_of
    from storage.keys import KeyStore
    from storage.layout import Layout

    settings = state_of(ctx).settings()
    with audit_log(settings):  # key changes made here go to hindsight.audit.admin, as over HTTP
        store = KeyStore(Layout(settings.root).keys_db)
        try:
            created = store.create(name, scope)
        finally:
            store.close()
        audit(
            admin_log,
            "key_created",
            by="cli",
            key_id=created.key.id,
            name=name,
            scopes=list(created.key.scopes),
        )
    typer.echo(created.token)
    # the store's path: a key created under a mistyped --root is one no server of the real root accepts
    where = Layout(settings.root).keys_db
    typer.echo(
        f"created key {created.key.id} ({' '.join(created.key.scopes)}) in {where}; keep it safe", err=True
    )


@keys_app.command("list")
def list_command(
    ctx: typer.Context,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """List keys: id, name, scopes, created, revoked (never a secret).

    Example: hindsight keys list --format json
    """
    from service.cli import state_of
    from storage.keys import KeyStore
    from storage.layout import Layout

    path = Layout(state_of(ctx).settings().root).keys_db
    keys = []
    if path.exists():
        store = KeyStore(path)
        try:
            keys = store.list()
        finally:
            store.close()
    else:
        # not created here: a mistyped --root used to leave an empty key store behind (review finding)
        typer.echo(f"no key store at {path}: no key was created under this root", err=True)
    rows = [[k.id, k.name, " ".join(k.scopes), k.created_at, k.revoked_at or ""] for k in keys]
    typer.echo(render_rows(["id", "name", "scopes", "created", "revoked"], rows, fmt))


@keys_app.command("revoke")
def revoke_command(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The id shown by `hindsight keys list` (or the whole key).")],
) -> None:
    """Revoke a key: every later request with it gets 401.

    Example: hindsight keys revoke 3f9a0c12d4e5
    """
    from api.audit import admin_log, audit
    from service.cli import audit_log, state_of
    from storage.keys import KeyStore, redact
    from storage.layout import Layout

    settings = state_of(ctx).settings()
    path = Layout(settings.root).keys_db
    if not path.exists():
        raise NotFound(f"no key {redact(key_id)}: there is no key store at {path} (is --root right?)")
    with audit_log(settings):
        store = KeyStore(path)
        try:
            key = store.revoke(key_id)
        finally:
            store.close()
        audit(admin_log, "key_revoked", by="cli", key_id=key.id)
    typer.echo(f"revoked key {key.id} ({key.name}) at {key.revoked_at}")


def register(app: typer.Typer) -> None:
    """Attach the `keys` group to the main CLI."""
    app.add_typer(keys_app, name="keys")
