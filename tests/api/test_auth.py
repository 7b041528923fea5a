"""The auth matrix: no key, wrong key, revoked key, and each scope against each endpoint, Bearer and Basic."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.api.conftest import Server, make_key

SCOPES = ("outcomes:write", "read", "admin")
# (method, path, json body, the scope it needs, the status a key with that scope gets)
ENDPOINTS = [
    ("POST", "/v1/outcomes", {"record_id": "r", "value": 1}, "outcomes:write", 200),
    ("GET", "/v1/outcomes?record_id=r", None, "read", 200),
    ("GET", "/v1/predictions/r", None, "read", 404),
    ("GET", "/readyz", None, "read", 200),
    ("GET", "/v1/admin/keys", None, "admin", 200),
    ("POST", "/v1/admin/keys", {"name": "n", "scopes": ["read"]}, "admin", 201),
    ("DELETE", "/v1/admin/keys/000000000000", None, "admin", 404),
    ("GET", "/openapi.json", None, "read", 200),
    ("GET", "/docs", None, "read", 200),
]


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("auth") / "root"
    tokens = {scope: make_key(root, scope, name=scope) for scope in SCOPES}
    revoked = make_key(root, *SCOPES, name="revoked")
    srv = Server(root, env={"HINDSIGHT_API__AUDIT_CALLS": "true"})
    srv.start()
    admin = bearer(tokens["admin"])
    revoked_id = revoked.split("_")[1]
    assert httpx.delete(f"{srv.url}/v1/admin/keys/{revoked_id}", headers=admin).status_code == 200
    yield srv, tokens, revoked
    srv.stop()


def _call(srv: Server, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, srv.url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("auth", [bearer, basic], ids=["bearer", "basic"])
@pytest.mark.parametrize(
    ("method", "path", "body", "needed", "ok"), ENDPOINTS, ids=[f"{e[0]} {e[1]}" for e in ENDPOINTS]
)
def test_each_scope_against_each_endpoint(world, auth, method, path, body, needed, ok) -> None:  # type: ignore[no-untyped-def]
    srv, tokens, revoked = world
    for scope, token in tokens.items():
        response = _call(srv, method, path, body, auth(token))
        expected = ok if scope == needed else 403
        assert response.status_code == expected, (scope, response.text)
        if expected == 403:
            assert response.json()["error"]["type"] == "Forbidden"
    for bad in (revoked, tokens[needed] + "x", "hsk_000000000000_nope", "not-a-key"):
        response = _call(srv, method, path, body, auth(bad))
        assert response.status_code == 401, response.text
        assert response.json()["error"]["type"] == "AuthError"
        assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "needed", "ok"), ENDPOINTS, ids=[f"{e[0]} {e[1]}" for e in ENDPOINTS]
)
def test_no_key_is_401_and_healthz_needs_none(world, method, path, body, needed, ok) -> None:  # type: ignore[no-untyped-def]
    srv, _tokens, _revoked = world
    for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Token abc"}):
        response = _call(srv, method, path, body, headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthError"
    assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}


def _call_lines(srv: Server) -> list[dict[str, object]]:
    log = srv.root / "logs" / "audit-calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_every_call_is_audited_when_enabled(world) -> None:  # type: ignore[no-untyped-def]
    srv, tokens, _revoked = world
    reader_id = tokens["read"].split("_")[1]
    time.sleep(0.2)  # let earlier calls' lines be written (the audit writer drains every 50 ms)
    before = len(_call_lines(srv))
    assert (
        httpx.get(srv.url + "/v1/outcomes?record_id=audit-me", headers=bearer(tokens["read"])).status_code
        == 200
    )
    assert httpx.get(srv.url + "/v1/outcomes?record_id=audit-me").status_code == 401
    deadline = time.monotonic() + 5
    lines = _call_lines(srv)
    while len(lines) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        lines = _call_lines(srv)
    calls = [(x["method"], x["path"], x["status"], x["key_id"]) for x in lines[before:]]
    assert calls == [("GET", "/v1/outcomes", 200, reader_id), ("GET", "/v1/outcomes", 401, None)]
    assert all(token not in json.dumps(lines) for token in tokens.values())


def test_every_route_of_the_app_needs_a_key_except_healthz(world) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from api.config import ApiConfig

    srv, _tokens, _revoked = world
    schema = create_app(ApiConfig(root=srv.root)).openapi()  # every route a client can call
    routes = [(m.upper(), path) for path, item in schema["paths"].items() for m in item]
    assert ("GET", "/v1/metrics") in routes and ("POST", "/v1/outcomes") in routes
    for method, template in routes:
        path = template.replace("{record_id}", "r").replace("{key_id}", "000000000000")
        response = httpx.request(method, srv.url + path, timeout=10)
        expected = 200 if path == "/healthz" else 401
        assert response.status_code == expected, (method, path, response.text)


def test_a_whole_key_pasted_for_its_id_revokes_it_and_is_written_nowhere(world) -> None:  # type: ignore[no-untyped-def]
    srv, tokens, _revoked = world
    leaked = make_key(srv.root, "read", name="leaked")
    leaked_id, secret = leaked.split("_")[1], leaked.split("_", 2)[2]
    assert httpx.get(srv.url + f"/v1/predictions/{leaked}").status_code == 401  # a 401 is logged too
    response = httpx.delete(f"{srv.url}/v1/admin/keys/{leaked}", headers=bearer(tokens["admin"]))
    assert response.status_code == 200 and response.json()["id"] == leaked_id
    assert httpx.get(srv.url + "/readyz", headers=bearer(leaked)).status_code == 401
    unknown = httpx.delete(
        f"{srv.url}/v1/admin/keys/hsk_0123456789ab_s3cret", headers=bearer(tokens["admin"])
    )
    assert unknown.status_code == 404 and "s3cret" not in unknown.text
    time.sleep(0.3)  # the audit writer drains every 50 ms
    logs = "".join(path.read_text() for path in (srv.root / "logs").glob("*.log"))
    assert f"hsk_{leaked_id}_<redacted>" in logs  # the calls were logged, without their secrets
    assert secret not in logs and "s3cret" not in logs


@pytest.mark.parametrize("header", ["Token abc", "Basic not-base64!", "Bearer"])
def test_an_unreadable_authorization_header_is_not_called_missing(world, header: str) -> None:  # type: ignore[no-untyped-def]
    srv, _tokens, _revoked = world
    response = httpx.get(srv.url + "/readyz", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("unreadable Authorization header: send ")
    assert httpx.get(srv.url + "/readyz").json()["error"]["message"].startswith("missing API key")
