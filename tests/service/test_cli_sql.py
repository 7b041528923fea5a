"""Tests of `hindsight sql`: table, CSV and JSON output over the views; bad SQL is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ingest.file_logs import qline, run_cli

QUERY = "SELECT service_id, count(*) AS n FROM predictions GROUP BY service_id"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sql")
    logs = base / "logs"
    logs.mkdir()
    (logs / "queries.log").write_bytes(b"".join(qline(i) for i in range(3)))
    result = run_cli(base / "root", "ingest", "files", str(logs))
    assert result.returncode == 0, result.stderr
    return base / "root"


def test_json_output(root: Path) -> None:
    result = run_cli(root, "sql", QUERY, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"service_id": "churn", "n": 3}]


def test_csv_output(root: Path) -> None:
    result = run_cli(root, "sql", QUERY, "--format", "csv")
    assert result.stdout == "service_id,n\nchurn,3\n"


FLOATS = "SELECT 1 / 3 AS third, 0.1::DOUBLE + 0.2::DOUBLE AS sum, 1e-300::DOUBLE AS tiny"


def test_csv_and_json_carry_floats_in_full(root: Path) -> None:
    csv_out = run_cli(root, "sql", FLOATS, "--format", "csv").stdout
    assert csv_out == f"third,sum,tiny\n{1 / 3!r},{0.1 + 0.2!r},1e-300\n"
    assert json.loads(run_cli(root, "sql", FLOATS, "--format", "json").stdout) == [
        {"third": 1 / 3, "sum": 0.1 + 0.2, "tiny": 1e-300}
    ]


def test_only_the_table_rounds_floats(root: Path) -> None:
    table = run_cli(root, "sql", FLOATS, env={"COLUMNS": "200"}).stdout
    [row] = [line for line in table.splitlines() if "0.333" in line]
    assert [c.strip() for c in row.split("│")[1:-1]] == ["0.333333", "0.3", "1e-300"]


def test_table_output(root: Path) -> None:
    result = run_cli(root, "sql", QUERY)
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert any("service_id" in line and "n" in line for line in lines)
    assert any("churn" in line and "3" in line for line in lines)


@pytest.mark.parametrize("query", ["SELECT nope FROM predictions", "SELEC", "SELECT * FROM nosuch"])
def test_bad_sql_is_one_error_line(root: Path, query: str) -> None:
    # DuckDB's message adds the query line and a caret: the error was three lines, with exit code 1
    result = run_cli(root, "sql", query)
    assert result.returncode == 2
    assert result.stderr.startswith("error: query failed:") and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_an_error_message_that_is_not_utf8_is_still_one_error_line(root: Path) -> None:
    # DuckDB cuts the quoted value inside an "é"; the binding raised UnicodeDecodeError (a traceback)
    result = run_cli(root, "sql", "SELECT ('xx' || repeat('é', 100))::JSON")
    assert result.returncode == 1
    # (Python 3.11.7 raised UnicodeDecodeError; Debian's 3.11.2, which CI runs, an empty duckdb.Error)
    assert (
        result.stderr
        == "error: query failed: DuckDB rejected it with an error message that is not valid UTF-8\n"
    )
    assert result.stdout == ""


def test_sql_on_an_empty_root_sees_empty_views(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "fresh", "sql", "SELECT count(*) AS n FROM predictions", "--format", "json")
    assert json.loads(result.stdout) == [{"n": 0}]


@pytest.mark.parametrize(
    ("query", "got"),
    [
        ("COPY (SELECT 1 AS x) TO 'x.csv'", "COPY"),
        ("SELECT 1; DROP VIEW predictions", "SELECT, DROP"),
        ("ATTACH 'x.duckdb'", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("SET threads = 1", "SET"),
        ("EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO 'x.csv'", "EXPLAIN"),  # ANALYZE runs the COPY
    ],
)
def test_only_one_read_only_query_runs(root: Path, query: str, got: str) -> None:
    # a COPY ... TO <root>/tables/outcomes (OVERWRITE) emptied the table (review finding)
    result = run_cli(root, "sql", query)
    assert result.returncode == 2
    assert result.stderr == (
        "error: hindsight sql runs one read-only query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW or "
        f"SUMMARIZE); got {got}\n"
    )


def test_a_copy_cannot_overwrite_a_table(root: Path) -> None:
    before = run_cli(root, "sql", "SELECT count(*) AS n FROM predictions", "--format", "json")
    target = root / "tables" / "predictions"
    copy = f"COPY (SELECT 1 AS x, 'a' AS p) TO '{target}' (FORMAT parquet, PARTITION_BY (p), OVERWRITE)"
    assert run_cli(root, "sql", copy).returncode == 2
    after = run_cli(root, "sql", "SELECT count(*) AS n FROM predictions", "--format", "json")
    assert json.loads(after.stdout) == json.loads(before.stdout) and json.loads(after.stdout)[0]["n"] > 0


@pytest.mark.parametrize(
    "query", ["DESCRIBE predictions", "SUMMARIZE SELECT 1 AS x", "FROM predictions LIMIT 1"]
)
def test_read_only_forms_still_run(root: Path, query: str) -> None:
    assert run_cli(root, "sql", query).returncode == 0
