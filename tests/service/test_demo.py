"""Tests of `hindsight demo`: it works on an empty root and a second run adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.demo import SAMPLE_FOLDER, run_demo
from service.demo_outcomes import synthesise_outcomes
from tests.ingest.file_logs import run_cli


def test_demo_ingests_the_generated_folder_and_is_rerunnable(tmp_path: Path) -> None:
    first = run_demo(tmp_path / "demo", days=3, per_day=200, seed=1)
    assert first.generated is not None
    assert first.ingest.records == first.generated.records
    assert first.ingest.quarantined == first.generated.bad_lines
    assert first.ingest.skipped == first.generated.other_topic_lines
    assert first.per_day.columns == ["day", "churn/predict", "fraud/score", "price/estimate"]
    per_day = {row[0].isoformat(): sum(row[1:]) for row in first.per_day.rows}
    assert per_day == first.generated.records_by_day
    assert [row[0] for row in first.sample.rows] == ["v1", "v2", "v3"]
    assert sum(row[1] for row in first.sample.rows) == first.generated.records_by_endpoint["fraud/score"]
    expected_outcomes = synthesise_outcomes(days=3, per_day=200, seed=1)
    assert (first.outcomes.created, first.outcomes.duplicate) == (len(expected_outcomes), 0)
    coverage = {row[0]: row[1:] for row in first.coverage.rows}
    assert set(coverage) == {"churn/predict", "fraud/score", "price/estimate"}
    for endpoint, (predictions, observed, implicit, pending) in coverage.items():
        assert predictions == first.generated.records_by_endpoint[endpoint]
        assert observed + implicit + pending == predictions
    # fraud: no chargeback after the 60-day maturity means legit, so nothing stays pending
    assert coverage["fraud/score"][3] == 0 and coverage["fraud/score"][2] > 0
    cohorts = {(row[0], row[1]) for row in first.metrics.rows}
    assert cohorts == {
        ("churn/predict", "v4"), ("churn/predict", "v5"), ("fraud/score", "v1"), ("fraud/score", "v2"),
        ("fraud/score", "v3"), ("price/estimate", "v1"), ("price/estimate", "v2"),
    }  # fmt: skip
    second = run_demo(tmp_path / "demo", days=3, per_day=200, seed=1)
    assert second.generated is None and second.ingest.records == 0
    assert (second.outcomes.created, second.outcomes.duplicate) == (0, len(expected_outcomes))
    # parallel float aggregation may differ in the last bits between runs; nothing more
    assert len(second.metrics.rows) == len(first.metrics.rows)
    for again, before in zip(second.metrics.rows, first.metrics.rows, strict=True):
        for value, expected in zip(again, before, strict=True):
            if isinstance(expected, float):
                assert value == pytest.approx(expected, rel=1e-12)
            else:
                assert value == expected
    assert second.per_day.rows == first.per_day.rows
    assert not (tmp_path / "demo" / f"{SAMPLE_FOLDER}.tmp").exists()


def test_demo_command_prints_summary_table_and_sample_query(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "demo", "--root", str(tmp_path / "demo-data"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("generated 2800 log lines")
    assert "records per day" in out and "fraud/score" in out and "2026-03-07" in out
    assert "mean_fraud_proba" in out
    assert "metrics by model generation" in out and "roc_auc" in out
    again = run_cli(tmp_path, "demo", "--root", str(tmp_path / "demo-data"))
    assert again.returncode == 0
    assert "0 records over 0 days" in again.stdout
