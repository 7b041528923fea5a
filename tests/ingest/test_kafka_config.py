"""Tests of the Kafka source settings: what users may pass through and what hindsight owns."""

from __future__ import annotations

import pytest

from ingest.kafka_config import KafkaSource
from service.errors import ConfigError


def test_user_options_pass_through_but_never_override_exactly_once_settings() -> None:
    source = KafkaSource("127.0.0.1:9092", "queries", options={"security.protocol": "SASL_SSL"})
    config = source.consumer_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["isolation.level"], config["enable.auto.commit"]) == ("read_committed", False)


@pytest.mark.parametrize("option", ["isolation.level", "enable.auto.commit", "group.id"])
def test_options_hindsight_owns_are_refused(option: str) -> None:
    with pytest.raises(ConfigError, match=f"{option} are set by hindsight itself"):
        KafkaSource("127.0.0.1:9092", "queries", options={option: "x"})


@pytest.mark.parametrize("bootstrap", ["", "localhost", "host:port", "a:1,,b"])
def test_bad_bootstrap_is_a_clear_error(bootstrap: str) -> None:
    with pytest.raises(ConfigError, match="invalid Kafka bootstrap"):
        KafkaSource(bootstrap, "queries")
