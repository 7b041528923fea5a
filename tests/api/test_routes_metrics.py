"""End-to-end tests of GET /v1/metrics on a real server: same result as `hindsight eval`, scopes, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.errors import SERVER_FAULT_MESSAGE
from api.routes_metrics import QUERY_PARAMETERS
from tests.api.conftest import Server, bearer, make_key
from tests.ingest.file_logs import run_cli
from tests.service.test_cli_eval import POLICY, scored
from tests.storage.eval_factories import at, outcome, write_outcomes, write_predictions


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path_factory.mktemp("metrics") / "root"
    root.mkdir()
    (root / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    write_predictions(
        root, [scored("r1", 0, "t1", 0.9), scored("r2", 0, "t2", 0.2), scored("r3", 1, "t3", 0.4)]
    )
    write_outcomes(
        root,
        [
            outcome("o1", "FRAUD", at(2), key={"context.transaction_id": "t1"}),
            outcome("o2", "OK", at(2), key={"context.transaction_id": "t2"}, received_at=at(30)),
        ],
    )
    tokens = {"read": make_key(root, "read", name="r"), "write": make_key(root, "outcomes:write", name="w")}
    srv = Server(root)
    srv.start()
    try:
        yield srv, tokens
    finally:
        srv.stop()


def get(srv: Server, token: str | None, **params: str) -> httpx.Response:
    headers = {} if token is None else bearer(token)
    return httpx.get(f"{srv.url}/v1/metrics", params=params, headers=headers, timeout=30)


def test_json_equals_the_cli(running: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = running
    for params in (
        {"by": "day"},
        {"by": "none", "as_of": "2026-01-10T00:00:00Z"},
        {"by": "week", "from": "2026-01-02"},
    ):
        response = get(srv, tokens["read"], **params)
        assert response.status_code == 200, response.text
        args = [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]
        cli = run_cli(srv.root, "eval", *args, "--format", "json")
        assert response.json() == json.loads(cli.stdout)
    rows = get(srv, tokens["read"], by="none", as_of="2026-01-10T00:00:00Z").json()
    assert [(r["n"], r["n_labelled"], r["accuracy"]) for r in rows] == [(3, 1, 1.0)]


def test_times_and_days_are_read_as_the_cli_reads_them(running: tuple[Server, dict[str, str]]) -> None:
    # pydantic used to read as_of=20260110 as 20,260,110 seconds after 1970 (an empty answer) and to
    # refuse from=20260101, which the CLI reads as a date: one spelling, two meanings (review finding)
    srv, tokens = running
    compact = get(srv, tokens["read"], by="none", as_of="20260110", **{"from": "20260101"})
    dashed = get(srv, tokens["read"], by="none", as_of="2026-01-10", **{"from": "2026-01-01"})
    assert compact.status_code == 200, compact.text
    assert compact.json() == dashed.json()
    assert [(r["n"], r["n_labelled"]) for r in compact.json()] == [(3, 1)]
    cli = run_cli(srv.root, "eval", "--by=none", "--as-of=20260110", "--from=20260101", "--format", "json")
    assert json.loads(cli.stdout) == compact.json()


def test_csv(running: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = running
    response = get(srv, tokens["read"], by="none", format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    header, row = response.text.splitlines()
    assert header.startswith("service_id,endpoint_id,outcome_type,cohort,task,n,n_labelled")
    assert row.startswith("fraud,score,label,all,binary,3,2,")


def test_csv_equals_the_cli_with_floats_in_full(running: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = running
    response = get(srv, tokens["read"], by="none", format="csv")
    cli = run_cli(srv.root, "eval", "--by=none", "--format", "csv")
    assert response.text == cli.stdout
    # 2 of 3 predictions labelled: the coverage column is the double 2/3 itself, not 0.666667
    header, row = response.text.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["coverage"] == repr(2 / 3)


@pytest.mark.parametrize(
    "params",
    [
        {"as-of": "2026-01-09"},
        {"asof": "2026-01-09", "by": "none"},
        {"endpoint": "fraud/score", "froms": "x"},
    ],
)
def test_unknown_query_parameters_are_refused(
    running: tuple[Server, dict[str, str]], params: dict[str, str]
) -> None:
    srv, tokens = running
    response = get(srv, tokens["read"], **params)
    assert response.status_code == 422
    [unknown] = [name for name in params if name not in ("by", "endpoint")]
    assert response.json() == {
        "error": {
            "type": "InputError",
            "message": f"unknown query parameter(s) {[unknown]}; use endpoint, by, as_of, from, to, format",
            "details": {"unknown": [unknown]},
        }
    }


def test_a_parameter_given_twice_is_refused(running: tuple[Server, dict[str, str]]) -> None:
    # FastAPI keeps the last value: by=day&by=week answered by week, by=week&by=day by day
    srv, tokens = running
    for name, values in (("by", ["day", "week"]), ("as_of", ["2026-01-10", "2026-01-02"])):
        response = httpx.get(
            f"{srv.url}/v1/metrics",
            params=[(name, v) for v in values],
            headers=bearer(tokens["read"]),
            timeout=30,
        )
        assert response.status_code == 422
        assert response.json()["error"]["message"] == (
            f"query parameter(s) ['{name}'] given more than once; give each once"
        )


def test_the_known_parameters_are_the_documented_ones(running: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = running
    schema = httpx.get(f"{srv.url}/openapi.json", headers=bearer(tokens["read"]), timeout=30).json()
    documented = [p["name"] for p in schema["paths"]["/v1/metrics"]["get"]["parameters"]]
    assert sorted(documented) == sorted(QUERY_PARAMETERS)


@pytest.mark.parametrize(
    ("token", "params", "status", "error"),
    [
        (None, {}, 401, "AuthError"),
        ("write", {}, 403, "Forbidden"),
        ("read", {"endpoint": "no-slash"}, 422, "InputError"),
        ("read", {"by": "month"}, 422, None),
        ("read", {"as_of": "soon"}, 422, None),
        ("read", {"as_of": "0001-01-01T00:00:00+23:00"}, 422, "InputError"),
        ("read", {"from": "2026-02-01", "to": "2026-01-01"}, 422, "InputError"),
        ("read", {"as_of": "1700000000"}, 422, "InputError"),  # not seconds since 1970
        ("read", {"from": "1767571200"}, 422, "InputError"),
        ("read", {"as_of": "2999-01-01T00:00:00Z"}, 422, "InputError"),  # in the future
        ("read", {"endpoint": "nope/x"}, 422, "InputError"),  # no prediction, no policy
    ],
)
def test_errors_have_the_one_shape(
    running: tuple[Server, dict[str, str]],
    token: str | None,
    params: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    srv, tokens = running
    response = get(srv, None if token is None else tokens[token], **params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    assert "--" not in body["error"]["message"]  # no CLI flag names in API errors
    if error is not None:
        assert body["error"]["type"] == error


def test_an_unused_root_path_is_not_touched(running: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = running
    before = sorted(p.name for p in Path(srv.root, "tables").iterdir())
    get(srv, tokens["read"])
    assert sorted(p.name for p in Path(srv.root, "tables").iterdir()) == before


def test_a_damaged_table_is_a_server_fault_whose_cause_stays_in_the_log(tmp_path: Path) -> None:
    # a damaged Parquet file was a 400 QueryError on one route and a 500 on another, both with the file's
    # path and DuckDB's text for any client (review finding)
    root = tmp_path / "root"
    root.mkdir()
    (root / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    write_predictions(root, [scored("r1", 0, "t1", 0.9)])
    token = make_key(root, "read", name="r")
    damaged = next((root / "tables" / "predictions").rglob("*.parquet"))
    damaged.write_bytes(b"not parquet at all")
    srv = Server(root)
    srv.start()
    try:
        for path in ("/v1/metrics", "/v1/predictions/r1", "/v1/predictions/hsk_0123456789ab_s3cret"):
            response = httpx.get(srv.url + path, headers=bearer(token), timeout=30)
            assert response.status_code == 500, (path, response.text)
            assert response.json()["error"] == {
                "type": "StorageError",
                "message": SERVER_FAULT_MESSAGE,
                "details": None,
            }
    finally:
        srv.stop()
    log = srv.stderr_path.read_text()
    assert damaged.name in log  # for the operator
    assert "hsk_0123456789ab_<redacted>" in log and "s3cret" not in log  # a key pasted into a path


def test_an_offset_whose_plus_the_url_made_a_space_gets_a_hint(
    running: tuple[Server, dict[str, str]],
) -> None:
    srv, tokens = running
    response = httpx.get(
        f"{srv.url}/v1/metrics?as_of=2026-01-10T10:00:00+05:00", headers=bearer(tokens["read"]), timeout=30
    )
    assert response.status_code == 422
    assert "send it as %2B" in response.json()["error"]["message"]
    encoded = get(srv, tokens["read"], as_of="2026-01-10T10:00:00+05:00")  # httpx encodes the '+'
    assert encoded.status_code == 200
