"""Tests of outcome join policies: parsing, validation errors, the TOML file and the settings' form."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigError
from service.settings import PolicySettings, Settings, load_settings
from storage.policies import (
    CONFIG_SECTIONS,
    Policy,
    load_policies,
    parse_duration,
    policies_from_config,
    policy_from_mapping,
    policy_to_mapping,
)

BASE = {"service_id": "fraud", "endpoint_id": "score"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", dt.timedelta(seconds=45)),
        ("30m", dt.timedelta(minutes=30)),
        ("12h", dt.timedelta(hours=12)),
        ("90d", dt.timedelta(days=90)),
        ("2w", dt.timedelta(weeks=2)),
        ("1.5d", dt.timedelta(hours=36)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text, field="window") == expected


def test_the_longest_duration_is_100_years() -> None:
    assert parse_duration("36500d", field="window") == dt.timedelta(days=36_500)
    assert parse_duration("5214w", field="window") == dt.timedelta(weeks=5214)


@pytest.mark.parametrize(
    "text", ["90", "d", "90 days", "-1d", "0d", "1y", "", "36500.1d", "5215w", "9" * 400 + "s"]
)
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^policy: window="):
        parse_duration(text, field="window")


@pytest.mark.parametrize(
    ("field", "text", "problem"),
    [
        ("window", "90 days", "is not a duration: write a number and a unit s, m, h, d or w (e.g. 90d)"),
        ("window", "0d", "must be longer than zero"),
        ("window", "1000000000d", "is too long: at most 100 years (36500d)"),  # beyond timedelta's range
        ("maturity", "200000000d", "is too long: at most 100 years (36500d)"),  # beyond BIGINT microseconds
        ("maturity", "36501d", "is too long: at most 100 years (36500d)"),
        ("window", "0.0000001s", "is shorter than a microsecond, the join's resolution"),
    ],
)
def test_a_bad_duration_names_the_policy_and_the_field(field: str, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        policies_from_config([BASE, {**BASE, "outcome_type": "chargeback", field: text}])
    assert str(caught.value) == f"policies[1] (fraud/score): {field}={text!r} {problem}"


def test_a_full_policy() -> None:
    policy = policy_from_mapping(
        {
            **BASE,
            "outcome_type": "chargeback",
            "join_on": ["features.customer_id", "context.transaction_id"],
            "attribution": "all_within",
            "window": "90d",
            "positive": "FRAUD",
            "maturity": "120d",
            "implicit_value": "OK",
        }
    )
    assert policy == Policy(
        service_id="fraud",
        endpoint_id="score",
        outcome_type="chargeback",
        join_on=("context.transaction_id", "features.customer_id"),
        attribution="all_within",
        window=dt.timedelta(days=90),
        positive="FRAUD",
        maturity=dt.timedelta(days=120),
        implicit_value="OK",
    )


def test_defaults_join_label_outcomes_on_record_id() -> None:
    policy = policy_from_mapping(BASE)
    assert (policy.outcome_type, policy.join_on, policy.attribution, policy.window) == (
        "label",
        ("record_id",),
        "last_before",
        None,
    )
    assert policy.joins_on_record_id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"service_id": None}, "service_id is required"),
        ({"endpoint_id": ""}, "endpoint_id must be a non-empty string"),
        ({"join_on": "context.transaction id"}, "join_on path 'context.transaction id' is not valid"),
        ({"join_on": "payload.x"}, "join_on path 'payload.x' is not valid"),
        ({"join_on": "context.tx\n"}, r"join_on path 'context\.tx\\n' is not valid"),  # `$` let it through
        ({"join_on": "context.a'; DROP"}, "is not valid"),
        ({"join_on": []}, "join_on must be a path or a non-empty list"),
        ({"join_on": ["record_id", "context.a"]}, "do not combine it"),
        ({"join_on": ["context.a", "context.a"]}, "lists a path twice"),
        ({"attribution": "first_after"}, "attribution must be one of last_before, all_within"),
        ({"window": "soon"}, "is not a duration"),
        ({"implicit_value": "OK"}, "implicit_value needs a maturity"),
        ({"positve": "FRAUD"}, "unknown field"),
        # compared as text: "fraud " matched no endpoint, silently; "" read as last_before in notebooks
        ({"service_id": "fraud "}, "service_id 'fraud ' has spaces at its ends"),
        ({"positive": " FRAUD"}, "positive ' FRAUD' has spaces at its ends"),
        ({"attribution": ""}, "attribution must be one of last_before, all_within, got ''"),
    ],
)
def test_invalid_policies_get_specific_errors(overrides: dict[str, Any], message: str) -> None:
    raw = {**BASE, **overrides}
    with pytest.raises(ConfigError, match=message):
        policies_from_config([raw])


def test_two_policies_for_one_endpoint_and_type_are_refused() -> None:
    with pytest.raises(ConfigError, match="two policies for fraud/score and outcome_type 'label'"):
        policies_from_config([BASE, {**BASE, "join_on": "context.x"}])


def test_load_policies_reads_the_root_toml(tmp_path: Path) -> None:
    assert load_policies(tmp_path) == []
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = "context.transaction_id"\n'
        'window = "90d"\n',
        encoding="utf-8",
    )
    assert load_policies(tmp_path) == [
        Policy("fraud", "score", join_on=("context.transaction_id",), window=dt.timedelta(days=90))
    ]


def test_load_policies_refuses_a_misspelt_section_and_a_dangling_link(tmp_path: Path) -> None:
    # the CLI refused both; storage.connect (notebooks) ran on the default policies, silently
    (tmp_path / "hindsight.toml").write_text(
        '[[policy]]\nservice_id = "fraud"\nendpoint_id = "score"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) policy; known: root, log_level, "):
        load_policies(tmp_path)
    (tmp_path / "hindsight.toml").unlink()
    (tmp_path / "hindsight.toml").symlink_to(tmp_path / "moved.toml")
    with pytest.raises(ConfigError, match=r"hindsight.toml links to .*moved.toml, which does not exist"):
        load_policies(tmp_path)


def test_the_sections_the_library_knows_are_the_settings(tmp_path: Path) -> None:
    assert set(CONFIG_SECTIONS) == set(Settings.model_fields)


def test_load_policies_reports_bad_toml(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text("[[policies]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_policies(tmp_path)


def test_settings_and_the_library_agree(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = ["context.b", "context.a"]\n'
        'maturity = "2w"\nimplicit_value = "OK"\n',
        encoding="utf-8",
    )
    settings = load_settings(root=tmp_path)
    from_settings = policies_from_config([p.model_dump() for p in settings.policies])
    assert from_settings == load_policies(tmp_path)
    # Every field the settings know is one the library validates, and the other way round.
    assert set(PolicySettings.model_fields) == {f for f in Policy.__dataclass_fields__}


@pytest.mark.parametrize(
    "raw",
    [
        {"service_id": "s", "endpoint_id": "e"},
        {
            "service_id": "fraud",
            "endpoint_id": "score",
            "outcome_type": "chargeback",
            "join_on": ["features.b", "context.a"],
            "attribution": "all_within",
            "window": "1.5s",
            "positive": "FRAUD",
            "maturity": "36500d",
            "implicit_value": "OK",
        },
        {"service_id": "s", "endpoint_id": "e", "window": "0.000001s", "maturity": "3w"},
    ],
)
def test_a_policy_written_back_reads_as_the_same_policy(raw: dict[str, Any]) -> None:
    policy = policy_from_mapping(raw)
    assert policy_from_mapping(policy_to_mapping(policy)) == policy
