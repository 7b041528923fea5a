"""End to end through a real server: post, read back, idempotency across restarts, error shapes, audit."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import Keys, Server, bearer, outcome_rows, post, wait_for_rows


def test_single_batch_and_ndjson_posts_are_stored_and_flushed(server: Server, keys: Keys) -> None:
    one = post(server, keys.write, {"outcome_id": "a", "record_id": "r1", "value": "fraud"})
    batch = post(
        server,
        keys.write,
        {
            "outcomes": [
                {"outcome_id": "b", "record_id": "r2", "value": 1},
                {"key": {"context.tx": "t1"}, "value": True},
            ]
        },
    )
    ndjson = httpx.post(
        f"{server.url}/v1/outcomes",
        content=b'{"outcome_id": "c", "record_id": "r3", "value": 0.5}\n\n'
        b'{"outcome_id": "d", "record_id": "r4", "value": "x"}\n',
        headers={**bearer(keys.write), "Content-Type": "application/x-ndjson"},
    )
    assert one.status_code == batch.status_code == ndjson.status_code == 200
    assert one.json() == {"results": [{"outcome_id": "a", "status": "created"}]}
    generated = batch.json()["results"][1]["outcome_id"]
    assert batch.json() == {
        "results": [{"outcome_id": "b", "status": "created"}, {"outcome_id": generated, "status": "created"}]
    }
    assert ndjson.json()["results"] == [
        {"outcome_id": "c", "status": "created"},
        {"outcome_id": "d", "status": "created"},
    ]
    rows = wait_for_rows(server.root, 5)
    assert sorted(r[0] for r in rows) == sorted(["a", "b", "c", "d", generated])
    stored = outcome_rows(
        server.root,
        "SELECT outcome_id, record_id, key, outcome_type, value, value_number, value_json "
        "FROM outcomes ORDER BY intake_seq",
    )
    assert stored == [
        ("a", "r1", None, "label", "fraud", None, '"fraud"'),
        ("b", "r2", None, "label", "1", 1.0, "1"),
        (generated, None, '{"context.tx":"t1"}', "label", "true", 1.0, "true"),
        ("c", "r3", None, "label", "0.5", 0.5, "0.5"),
        ("d", "r4", None, "label", "x", None, '"x"'),
    ]


def test_large_bodies_parse_off_the_loop_and_ndjson_stops_at_the_item_limit(
    server: Server, keys: Keys
) -> None:
    headers = {**bearer(keys.write), "Content-Type": "application/x-ndjson"}
    lines = [b'{"outcome_id": "big%d", "record_id": "r%d", "value": 1}' % (n, n) for n in range(10_001)]
    too_many = httpx.post(f"{server.url}/v1/outcomes", content=b"\n".join(lines), headers=headers)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"] == "too many outcomes in one request: more than 10000"
    # a line past the limit is refused before it is parsed: it is not even JSON here
    bad_tail = httpx.post(
        f"{server.url}/v1/outcomes", content=b"\n".join([*lines[:10_000], b"{"]), headers=headers
    )
    assert "more than 10000" in bad_tail.json()["error"]["message"]
    # 10,000 lines (~560 kB, parsed in a worker thread) and blank lines are fine
    body = b"\n\n".join(lines[:10_000])
    assert len(body) > 64 * 1024
    stored = httpx.post(f"{server.url}/v1/outcomes", content=body, headers=headers)
    assert stored.status_code == 200
    assert [r["status"] for r in stored.json()["results"]] == ["created"] * 10_000
    assert stored.json()["results"][-1]["outcome_id"] == "big9999"


def test_get_outcomes_by_record_and_key_and_prediction_404(server: Server, keys: Keys) -> None:
    post(
        server,
        keys.write,
        {
            "outcome_id": "k1",
            "key": {"context.tx": "t-9", "features.n": 3},
            "value": "ok",
            "occurred_at": "2026-01-02T03:04:05.5+01:00",
            "attributes": {"src": "crm"},
        },
    )
    got = httpx.get(
        f"{server.url}/v1/outcomes",
        params={"key.context.tx": "t-9", "key.features.n": "3"},
        headers=bearer(keys.read),
    )
    assert got.status_code == 200
    [item] = got.json()["outcomes"]
    assert {k: item[k] for k in ("outcome_id", "key", "value", "occurred_at", "attributes")} == {
        "outcome_id": "k1",
        "key": {"context.tx": "t-9", "features.n": 3},
        "value": "ok",
        "occurred_at": "2026-01-02T02:04:05.500000Z",
        "attributes": {"src": "crm"},
    }
    none = httpx.get(f"{server.url}/v1/outcomes", params={"record_id": "nope"}, headers=bearer(keys.read))
    assert none.json() == {"outcomes": []}
    missing = httpx.get(f"{server.url}/v1/predictions/nope", headers=bearer(keys.read))
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFound"


def test_idempotency_survives_flush_and_restart(server: Server, keys: Keys) -> None:
    body = {"outcome_id": "same", "record_id": "r1", "value": "fraud", "occurred_at": "2026-01-01T00:00:00Z"}
    assert post(server, keys.write, body).json()["results"][0]["status"] == "created"
    wait_for_rows(server.root, 1)
    server.kill()
    server.start()
    again = post(server, keys.write, body)
    assert again.json() == {"results": [{"outcome_id": "same", "status": "duplicate"}]}
    changed = post(
        server,
        keys.write,
        {"outcomes": [{"outcome_id": "new", "record_id": "r2", "value": 1}, {**body, "value": "ok"}]},
    )
    assert changed.status_code == 409
    assert changed.json()["error"] == {
        "type": "IdempotencyConflict",
        "message": "1 outcome_id(s) already stored with a different body; nothing was stored",
        "details": [{"index": 1, "outcome_id": "same"}],
    }
    # nothing of the rejected request was stored: "new" is free and the view holds "same" once
    assert (
        post(server, keys.write, {"outcome_id": "new", "record_id": "r2", "value": 2}).json()["results"][0][
            "status"
        ]
        == "created"
    )
    rows = wait_for_rows(server.root, 2)
    assert rows == [("new",), ("same",)]
    # an id twice in one request with other contents is that request's fault, not a clash with storage
    twice = [{"outcome_id": "tw", "record_id": "r3", "value": v} for v in (1, 0)]
    within = post(
        server, keys.write, {"outcomes": [{"outcome_id": "x1", "record_id": "r", "value": 1}, *twice]}
    )
    assert within.status_code == 422
    assert within.json()["error"]["message"] == (
        "outcome_id 'tw' comes twice in this request with different contents (items 1 and 2); "
        "nothing was stored"
    )
    assert within.json()["error"]["details"][0]["index"] == 2
    assert (
        post(server, keys.write, {"outcomes": [twice[0], twice[0]]}).json()["results"][1]["status"]
        == "duplicate"
    )
    assert (
        post(server, keys.write, {"outcome_id": "x1", "record_id": "r", "value": 2}).status_code == 200
    )  # free


def test_thread_commit_mode_answers_like_the_loop_mode(tmp_path: Path, keys: Keys) -> None:
    srv = Server(
        tmp_path / "root",
        env={"HINDSIGHT_API__FLUSH_INTERVAL": "0.2", "HINDSIGHT_API__INTAKE_COMMIT": "thread"},
    )
    srv.start()
    try:
        single = {"outcome_id": "t1", "record_id": "r1", "value": "fraud"}
        assert post(srv, keys.write, single).json() == {
            "results": [{"outcome_id": "t1", "status": "created"}]
        }
        repeat = post(
            srv, keys.write, {"outcomes": [single, {"outcome_id": "t2", "record_id": "r2", "value": 1}]}
        )
        assert repeat.json()["results"] == [
            {"outcome_id": "t1", "status": "duplicate"},
            {"outcome_id": "t2", "status": "created"},
        ]
        assert post(srv, keys.write, {**single, "value": "ok"}).status_code == 409
        assert wait_for_rows(srv.root, 2) == [("t1",), ("t2",)]
    finally:
        srv.stop()


def test_omitted_occurred_at_is_not_part_of_the_body(server: Server, keys: Keys) -> None:
    body = {"outcome_id": "x1", "record_id": "r1", "value": "fraud"}
    assert post(server, keys.write, body).json()["results"][0]["status"] == "created"
    assert post(server, keys.write, body).json()["results"][0]["status"] == "duplicate"


def _assert_error(response: httpx.Response, status: int, type_name: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == type_name
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_422_names_each_bad_field_with_its_index_and_stores_nothing(server: Server, keys: Keys) -> None:
    bad = post(
        server,
        keys.write,
        {
            "outcomes": [
                {"outcome_id": "ok1", "record_id": "r", "value": 1},
                {"record_id": "r", "key": {"context.a": 1}, "value": 1},
                {"record_id": "r", "value": None, "occurred_at": "yesterday"},
                {"key": {"other.a": 1}, "value": "x", "colour": "red"},
            ]
        },
    )
    error = _assert_error(bad, 422, "InvalidOutcome")
    assert [(d["index"], d["field"]) for d in error["details"]] == [  # type: ignore[index, union-attr]
        (1, "target"),
        (2, "value"),
        (2, "occurred_at"),
        (3, "key"),
        (3, "colour"),
    ]
    assert (
        post(server, keys.write, {"outcome_id": "ok1", "record_id": "r", "value": 1}).json()["results"][0][
            "status"
        ]
        == "created"
    )


def test_413_415_and_bad_json_shapes(server: Server, keys: Keys) -> None:
    limit = 16 * 1024 * 1024
    too_big = httpx.post(
        f"{server.url}/v1/outcomes",
        content=b"[" + b" " * limit + b"]",
        headers={**bearer(keys.write), "Content-Type": "application/json"},
    )
    _assert_error(too_big, 413, "PayloadTooLarge")

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(17):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(
        f"{server.url}/v1/outcomes",
        content=chunks(),
        headers={**bearer(keys.write), "Content-Type": "application/json"},
    )
    _assert_error(streamed, 413, "PayloadTooLarge")
    wrong_type = httpx.post(
        f"{server.url}/v1/outcomes",
        content=b"a,b",
        headers={**bearer(keys.write), "Content-Type": "text/csv"},
    )
    _assert_error(wrong_type, 415, "UnsupportedMediaType")
    # the body is always read as UTF-8: a Latin-1 body was stored as mojibake
    latin1 = httpx.post(
        f"{server.url}/v1/outcomes",
        content='{"record_id": "r", "value": "café"}'.encode("latin-1"),
        headers={**bearer(keys.write), "Content-Type": "application/json; charset=ISO-8859-1"},
    )
    _assert_error(latin1, 415, "UnsupportedMediaType")
    utf8 = httpx.post(
        f"{server.url}/v1/outcomes",
        content='{"record_id": "r-utf8", "value": "café"}'.encode(),
        headers={**bearer(keys.write), "Content-Type": 'application/json; charset="UTF-8"'},
    )
    assert utf8.status_code == 200, utf8.text
    not_json = httpx.post(
        f"{server.url}/v1/outcomes",
        content=b"{nope",
        headers={**bearer(keys.write), "Content-Type": "application/json"},
    )
    _assert_error(not_json, 422, "InvalidOutcome")
    array = post(server, keys.write, [{"record_id": "r", "value": 1}])
    _assert_error(array, 422, "InvalidOutcome")
    too_many = post(server, keys.write, {"outcomes": [{"record_id": "r", "value": 1}] * 10_001})
    _assert_error(too_many, 422, "InvalidOutcome")


def test_every_endpoint_answers_errors_in_one_shape(server: Server, keys: Keys) -> None:
    h = bearer(keys.read)
    _assert_error(httpx.get(f"{server.url}/v1/outcomes", headers=h), 422, "InputError")
    _assert_error(
        httpx.get(f"{server.url}/v1/outcomes", params={"recordid": "x"}, headers=h), 422, "InputError"
    )
    _assert_error(
        httpx.get(f"{server.url}/v1/outcomes", params={"key.bad": "x"}, headers=h), 422, "InputError"
    )
    # a repeated parameter used to answer for its last value; an empty record_id with nothing
    _assert_error(
        httpx.get(f"{server.url}/v1/outcomes", params=[("record_id", "a"), ("record_id", "b")], headers=h),
        422,
        "InputError",
    )
    _assert_error(
        httpx.get(
            f"{server.url}/v1/outcomes",
            params=[("key.context.tx", "T-1"), ("key.context.tx", "T-2")],
            headers=h,
        ),
        422,
        "InputError",
    )
    _assert_error(
        httpx.get(f"{server.url}/v1/outcomes", params={"record_id": ""}, headers=h), 422, "InputError"
    )
    _assert_error(
        httpx.get(f"{server.url}/v1/predictions/none", params={"as_of": "2000-01-01"}, headers=h),
        422,
        "InputError",
    )
    _assert_error(httpx.get(f"{server.url}/v1/predictions/none", headers=h), 404, "NotFound")
    _assert_error(httpx.get(f"{server.url}/v1/nothing-here", headers=h), 404, "NotFound")
    _assert_error(httpx.put(f"{server.url}/v1/outcomes", headers=h), 405, "MethodNotAllowed")
    _assert_error(httpx.get(f"{server.url}/readyz"), 401, "AuthError")
    _assert_error(httpx.get(f"{server.url}/v1/admin/keys", headers=h), 403, "Forbidden")
    admin = bearer(keys.admin)
    _assert_error(
        httpx.post(f"{server.url}/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=admin),
        422,
        "InputError",
    )
    # an unknown field was dropped: a key asked to expire was created without expiry
    expiring = {"name": "x", "scopes": ["read"], "expires_at": "2026-12-31T00:00:00Z"}
    _assert_error(httpx.post(f"{server.url}/v1/admin/keys", json=expiring, headers=admin), 422, "InputError")
    # a body that is not declared JSON is a 415 (FastAPI alone answered 422), after the key check
    keys_url, body = f"{server.url}/v1/admin/keys", b'{"name": "f", "scopes": ["read"]}'
    as_form = {"content-type": "application/x-www-form-urlencoded"}
    latin = {"content-type": "application/json; charset=latin-1"}
    _assert_error(httpx.post(keys_url, content=body, headers=admin | as_form), 415, "UnsupportedMediaType")
    _assert_error(httpx.post(keys_url, content=body, headers=admin | latin), 415, "UnsupportedMediaType")
    _assert_error(httpx.post(keys_url, content=body, headers=as_form), 401, "AuthError")
    assert "f" not in [k["name"] for k in httpx.get(keys_url, headers=admin).json()["keys"]]
    as_json = {"content-type": "application/json"}
    # the checks come before the body is read: a body FastAPI could not parse got a 400 or 422 first
    latin_body = '{"name": "é", "scopes": ["read"]}'.encode("latin-1")
    _assert_error(
        httpx.post(keys_url, content=latin_body, headers=admin | latin), 415, "UnsupportedMediaType"
    )
    _assert_error(httpx.post(keys_url, content=latin_body, headers=latin), 401, "AuthError")
    _assert_error(httpx.post(keys_url, content=b"{not json", headers=as_json), 401, "AuthError")
    bad = _assert_error(
        httpx.post(keys_url, content=b"{not json", headers=admin | as_json), 422, "InputError"
    )
    assert str(bad["message"]).startswith("invalid request: body: Invalid JSON")
    assert httpx.post(keys_url, content=body, headers=admin | as_json).status_code == 201
    _assert_error(httpx.delete(f"{server.url}/v1/admin/keys/000000000000", headers=admin), 404, "NotFound")


def test_audit_logs_name_keys_never_secrets(server: Server, keys: Keys) -> None:
    post(server, keys.write, {"outcome_id": "aud1", "record_id": "r", "value": 1})
    httpx.get(f"{server.url}/readyz", headers=bearer(keys.write + "x"))
    httpx.get(f"{server.url}/readyz", headers=bearer(keys.write))  # valid key, missing scope
    created = httpx.post(
        f"{server.url}/v1/admin/keys", json={"name": "n", "scopes": ["read"]}, headers=bearer(keys.admin)
    )
    assert created.status_code == 201
    new_token = created.json()["token"]
    assert (
        httpx.delete(
            f"{server.url}/v1/admin/keys/{created.json()['key']['id']}", headers=bearer(keys.admin)
        ).status_code
        == 200
    )
    server.stop()
    logs = server.root / "logs"
    text = "".join(p.read_text() for p in sorted(logs.glob("*.log")))
    for secret in (keys.write, keys.read, keys.admin, keys.all, new_token):
        assert secret not in text
        assert secret[len("hsk_") + 13 :] not in text
    writer_id = keys.write.split("_")[1]
    outcomes_log = (logs / "audit-outcomes.log").read_text()
    assert f'"key_id":"{writer_id}"' in outcomes_log and '"aud1"' in outcomes_log
    auth_log = (logs / "audit-auth.log").read_text().splitlines()
    assert len(auth_log) == 2 and all(
        f'"key_id":"{writer_id}"' in line and "127.0.0.1" in line for line in auth_log
    )
    admin_log = (logs / "audit-admin.log").read_text()
    assert '"event":"key_created"' in admin_log and '"event":"key_revoked"' in admin_log
