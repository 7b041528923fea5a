"""The evaluation benchmark's three sides (hindsight, pandas, the DuckDB floor) agree on small data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bench import evaluate_floor
from bench.evaluate import _check_agreement, generate, pandas_baseline
from storage.metrics import Cohort, MetricsQuery, evaluate

AS_OF = "2026-03-15T00:00:00Z"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "root"
    generate(path, 30_000, 15_000)
    return path


@pytest.fixture(scope="module")
def pandas_rows(root: Path) -> list[dict[str, object]]:
    return pandas_baseline(root, AS_OF)


def test_the_data_labels_most_days(pandas_rows: list[dict[str, object]]) -> None:
    # the comparisons below mean something only if the cohorts have labels of both classes
    assert len(pandas_rows) == 30
    assert all(isinstance(row["n_labelled"], int) and row["n_labelled"] > 100 for row in pandas_rows)
    assert all(row["roc_auc"] is not None for row in pandas_rows)


def test_hindsight_agrees_with_pandas(root: Path, pandas_rows: list[dict[str, object]]) -> None:
    as_of = dt.datetime(2026, 3, 15, tzinfo=dt.UTC)
    rows = evaluate(root, MetricsQuery(by=Cohort.day, as_of=as_of))
    _check_agreement(rows, pandas_rows)


def test_the_floor_agrees_with_pandas(root: Path, pandas_rows: list[dict[str, object]]) -> None:
    _check_agreement(evaluate_floor.evaluate(root, AS_OF), pandas_rows, "the floor")


def test_a_disagreement_stops_the_benchmark(root: Path, pandas_rows: list[dict[str, object]]) -> None:
    rows = evaluate_floor.evaluate(root, AS_OF)
    rows[3]["pr_auc"] = float(rows[3]["pr_auc"]) + 1e-3  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="pr_auc: the floor"):
        _check_agreement(rows, pandas_rows, "the floor")
    with pytest.raises(SystemExit, match="has 29 cohorts"):
        _check_agreement(rows[1:], pandas_rows, "the floor")
