"""Reads for the API: a prediction with the outcomes posted for its record_id and for its keys."""

from __future__ import annotations

from pathlib import Path

from storage.outcome_reads import prediction_with_outcomes
from storage.policies import policies_from_config
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions


def test_a_prediction_joined_by_a_key_shows_the_outcomes_of_its_key(tmp_path: Path) -> None:
    # GET /v1/predictions/{id} listed only outcomes posted with the record_id: for an endpoint joined by
    # a business key, none (review finding)
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), context={"tx": "t1"}, features={"n": 7}),
            prediction("r2", at(0), context={"tx": "t2"}),
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome("by-id", "OK", at(1), record_id="r1"),
            outcome("by-key", "FRAUD", at(2), key={"context.tx": "t1"}),
            outcome("by-number", "1", at(3), key={"features.n": 7}, outcome_type="chargeback"),
            outcome("by-text", "2", at(4), key={"features.n": "7"}, outcome_type="chargeback"),
            outcome("other-type", "x", at(1), key={"context.tx": "t1"}, outcome_type="refund"),
            outcome("other-endpoint", "x", at(1), key={"context.tx": "t1"}, endpoint_id="other"),
            outcome("other-key", "OK", at(1), key={"context.tx": "t2"}),
        ],
    )
    policies = policies_from_config(
        [
            {"service_id": "fraud", "endpoint_id": "score", "join_on": "context.tx"},
            {
                "service_id": "fraud",
                "endpoint_id": "score",
                "join_on": "features.n",
                "outcome_type": "chargeback",
            },
        ]
    )
    found = prediction_with_outcomes(tmp_path, None, "r1", policies)
    assert found["prediction"]["record_id"] == "r1"
    assert [o["outcome_id"] for o in found["outcomes"]] == ["by-id", "by-key", "by-number", "by-text"]
    # without the policies only the record_id joins, as for an endpoint without any
    assert [o["outcome_id"] for o in prediction_with_outcomes(tmp_path, None, "r1", [])["outcomes"]] == [
        "by-id"
    ]
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = "context.tx"\n',
        encoding="utf-8",
    )
    read_from_root = prediction_with_outcomes(tmp_path, None, "r2")
    assert [o["outcome_id"] for o in read_from_root["outcomes"]] == ["other-key"]


def test_a_key_is_read_from_the_logged_text(tmp_path: Path) -> None:
    # an integer beyond 64 bits was read as a float, so the outcome the label join gives it was not shown
    big = "12345678901234567890123"
    write_predictions(tmp_path, [prediction("r1", at(0), context='{"tx": ' + big + "}")])
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(1), key={"context.tx": big})])
    policies = policies_from_config(
        [{"service_id": "fraud", "endpoint_id": "score", "join_on": "context.tx"}]
    )
    found = prediction_with_outcomes(tmp_path, None, "r1", policies)
    assert [o["outcome_id"] for o in found["outcomes"]] == ["o1"]
