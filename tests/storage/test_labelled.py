"""Tests of the label join: attribution, windows, corrections, maturity, as-of and unmatched reasons."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigError
from storage import connect
from storage.policies import Policy, policies_from_config
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions

TX = "context.transaction_id"
COLUMNS = "record_id, outcome_type, label, label_state, outcome_id"


def fraud_policy(**overrides: Any) -> list[Policy]:
    raw = {"service_id": "fraud", "endpoint_id": "score", "join_on": TX, "window": "90d"}
    raw.update(overrides)
    return policies_from_config([raw])


def labelled(root: Path, policies: list[Policy], as_of: dt.datetime | None = None) -> list[tuple[Any, ...]]:
    con = connect(root, policies=policies)
    source = "labelled" if as_of is None else "labelled_as_of(?::TIMESTAMPTZ)"
    params = [] if as_of is None else [as_of]
    rows = con.execute(f"SELECT {COLUMNS} FROM {source} ORDER BY record_id, outcome_type", params).fetchall()
    con.close()
    return rows


def unmatched(root: Path, policies: list[Policy], as_of: dt.datetime | None = None) -> list[tuple[Any, ...]]:
    con = connect(root, policies=policies)
    source = "unmatched_outcomes" if as_of is None else "unmatched_outcomes_as_of(?::TIMESTAMPTZ)"
    params = [] if as_of is None else [as_of]
    rows = con.execute(f"SELECT outcome_id, reason FROM {source} ORDER BY outcome_id", params).fetchall()
    con.close()
    return rows


def tx(i: str) -> dict[str, str]:
    return {"transaction_id": i}


def test_last_before_gives_the_outcome_to_the_last_prediction_before_it(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), context=tx("t1")),
            prediction("r2", at(1), context=tx("t1")),
            prediction("r3", at(5), context=tx("t1")),  # after the outcome: not a candidate
        ],
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(2), key={TX: "t1"})])
    assert labelled(tmp_path, fraud_policy()) == [
        ("r1", "label", None, "pending", None),
        ("r2", "label", "FRAUD", "observed", "o1"),
        ("r3", "label", None, "pending", None),
    ]
    assert unmatched(tmp_path, fraud_policy()) == []


def test_last_before_breaks_a_tie_on_ts_by_the_greatest_record_id(tmp_path: Path) -> None:
    # Items of one batch query share its timestamp; the choice must not depend on hash order.
    names = [f"r{i:02d}" for i in range(12)]
    write_predictions(tmp_path, [prediction(name, at(1), context=tx("t1")) for name in reversed(names)])
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(2), key={TX: "t1"})])
    rows = labelled(tmp_path, fraud_policy())
    assert [r[0] for r in rows if r[3] == "observed"] == ["r11"]


def test_all_within_gives_the_outcome_to_every_prediction_inside_the_window(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), context=tx("t1")),  # 10 days before: outside the 7-day window
            prediction("r2", at(4), context=tx("t1")),
            prediction("r3", at(9), context=tx("t1")),
            prediction("r4", at(11), context=tx("t1")),  # after the outcome
        ],
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(10), key={TX: "t1"})])
    policy = fraud_policy(attribution="all_within", window="7d")
    assert labelled(tmp_path, policy) == [
        ("r1", "label", None, "pending", None),
        ("r2", "label", "FRAUD", "observed", "o1"),
        ("r3", "label", "FRAUD", "observed", "o1"),
        ("r4", "label", None, "pending", None),
    ]


def test_an_outcome_outside_the_window_stays_unmatched(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(
        tmp_path,
        [outcome("late", "FRAUD", at(91), key={TX: "t1"}), outcome("ok", "FRAUD", at(89), key={TX: "t2"})],
    )
    assert labelled(tmp_path, fraud_policy()) == [("r1", "label", None, "pending", None)]
    assert unmatched(tmp_path, fraud_policy()) == [
        ("late", "outside window"),
        ("ok", "no prediction with this key"),
    ]


def test_a_correction_wins_and_the_superseded_event_is_reported(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(
        tmp_path,
        [
            outcome("first", "FRAUD", at(3), key={TX: "t1"}, received_at=at(3)),
            outcome("fix", "OK", at(3), key={TX: "t1"}, received_at=at(4)),  # same occurred_at, later
        ],
    )
    assert labelled(tmp_path, fraud_policy()) == [("r1", "label", "OK", "observed", "fix")]
    assert unmatched(tmp_path, fraud_policy()) == [("first", "superseded by a later outcome")]
    # As known between the two events, the first one was the label.
    assert labelled(tmp_path, fraud_policy(), as_of=at(3, hours=12)) == [
        ("r1", "label", "FRAUD", "observed", "first")
    ]


def test_a_later_occurred_at_wins_over_a_later_received_at(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(
        tmp_path,
        [
            outcome("newer", "OK", at(5), key={TX: "t1"}, received_at=at(6)),
            outcome("older", "FRAUD", at(2), key={TX: "t1"}, received_at=at(7)),  # back-filled
        ],
    )
    assert labelled(tmp_path, fraud_policy()) == [("r1", "label", "OK", "observed", "newer")]


def test_maturity_gives_the_implicit_label_or_leaves_pending(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [prediction("old", at(0), context=tx("t1")), prediction("young", at(100), context=tx("t2"))],
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(1), key={TX: "t9"})])
    policy = fraud_policy(maturity="120d", implicit_value="OK")
    as_of = at(130)
    assert labelled(tmp_path, policy, as_of=as_of) == [
        ("old", "label", "OK", "implicit", None),
        ("young", "label", None, "pending", None),
    ]
    # Judged at an earlier time, neither was mature.
    assert labelled(tmp_path, policy, as_of=at(110)) == [
        ("old", "label", None, "pending", None),
        ("young", "label", None, "pending", None),
    ]
    # Maturity without an implicit value leaves predictions pending forever.
    assert labelled(tmp_path, fraud_policy(maturity="120d"), as_of=at(400))[0] == (
        "old",
        "label",
        None,
        "pending",
        None,
    )


def test_label_delay_and_labelled_at(tmp_path: Path) -> None:
    write_predictions(
        tmp_path, [prediction("r1", at(0), context=tx("t1")), prediction("r2", at(0), context=tx("t2"))]
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(2), key={TX: "t1"}, received_at=at(3))])
    con = connect(tmp_path, policies=fraud_policy(maturity="120d", implicit_value="OK"))
    rows = con.execute(
        "SELECT record_id, labelled_at, label_delay FROM labelled_as_of(?::TIMESTAMPTZ) ORDER BY record_id",
        [at(200)],
    ).fetchall()
    assert rows == [("r1", at(3), dt.timedelta(days=3)), ("r2", at(120), dt.timedelta(days=120))]


def test_as_of_ignores_outcomes_received_later_and_predictions_made_later(tmp_path: Path) -> None:
    write_predictions(
        tmp_path, [prediction("r1", at(0), context=tx("t1")), prediction("r2", at(10), context=tx("t2"))]
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(2), key={TX: "t1"}, received_at=at(8))])
    assert labelled(tmp_path, fraud_policy(), as_of=at(5)) == [("r1", "label", None, "pending", None)]
    assert unmatched(tmp_path, fraud_policy(), as_of=at(5)) == []
    assert labelled(tmp_path, fraud_policy(), as_of=at(9)) == [("r1", "label", "FRAUD", "observed", "o1")]


def test_several_outcome_types_each_need_their_policy(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(
        tmp_path,
        [
            outcome("lab", "FRAUD", at(1), key={TX: "t1"}),
            outcome("cb", "250.5", at(2), key={TX: "t1"}, outcome_type="chargeback_amount"),
            outcome("other", "x", at(2), key={TX: "t1"}, outcome_type="survey"),
        ],
    )
    policies = policies_from_config(
        [
            {"service_id": "fraud", "endpoint_id": "score", "join_on": TX},
            {
                "service_id": "fraud",
                "endpoint_id": "score",
                "join_on": TX,
                "outcome_type": "chargeback_amount",
                "attribution": "all_within",
            },
        ]
    )
    assert labelled(tmp_path, policies) == [
        ("r1", "chargeback_amount", "250.5", "observed", "cb"),
        ("r1", "label", "FRAUD", "observed", "lab"),
    ]
    assert unmatched(tmp_path, policies) == [("other", "no policy for outcome_type")]


def test_a_multiple_key_join_needs_every_path_to_match(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), context={"shop": "s1"}, features={"customer_id": 7}),
            prediction("r2", at(0), context={"shop": "s2"}, features={"customer_id": 7}),
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome("both", "FRAUD", at(1), key={"context.shop": "s1", "features.customer_id": 7}),
            outcome("one", "FRAUD", at(1), key={"features.customer_id": 7}),
            outcome("miss", "FRAUD", at(1), key={"context.shop": "s3", "features.customer_id": 7}),
        ],
    )
    policy = fraud_policy(join_on=["features.customer_id", "context.shop"])
    assert labelled(tmp_path, policy) == [
        ("r1", "label", "FRAUD", "observed", "both"),
        ("r2", "label", None, "pending", None),
    ]
    assert unmatched(tmp_path, policy) == [
        ("miss", "no prediction with this key"),
        ("one", "no policy joins on this target"),
    ]


def test_an_outcome_that_arrives_before_its_prediction_is_labelled_once_it_arrives(tmp_path: Path) -> None:
    write_outcomes(tmp_path, [outcome("early", "FRAUD", at(1), key={TX: "t1"})])
    assert unmatched(tmp_path, fraud_policy()) == [("early", "no prediction with this key")]
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    assert labelled(tmp_path, fraud_policy()) == [("r1", "label", "FRAUD", "observed", "early")]
    assert unmatched(tmp_path, fraud_policy()) == []


def test_a_key_seen_only_after_the_outcome_is_reported_so(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(5), context=tx("t1"))])
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(1), key={TX: "t1"})])
    assert unmatched(tmp_path, fraud_policy()) == [("o1", "no prediction before occurred_at")]


def test_endpoints_without_a_policy_join_label_outcomes_on_record_id(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [
            prediction("r1", at(0), service_id="churn", endpoint_id="predict"),
            prediction("r2", at(0), service_id="churn", endpoint_id="predict"),
            prediction("r3", at(0), context=tx("t3")),
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome("o1", "yes", at(1), record_id="r1"),
            outcome("o2", "yes", at(1), record_id="r2", outcome_type="revenue"),
            outcome("o3", "FRAUD", at(1), record_id="r3"),  # record_id targets also feed keyed policies
            outcome("o4", "yes", at(1), record_id="r1", service_id="churn", endpoint_id="other"),
        ],
    )
    assert labelled(tmp_path, fraud_policy()) == [
        ("r1", "label", "yes", "observed", "o1"),
        ("r2", "label", None, "pending", None),
        ("r3", "label", "FRAUD", "observed", "o3"),
    ]
    assert unmatched(tmp_path, fraud_policy()) == [
        ("o2", "no policy for outcome_type"),
        ("o4", "prediction on another endpoint"),  # r1 is churn/predict, not churn/other
    ]
    # With no policies at all every endpoint is on the default.
    assert labelled(tmp_path, [])[2] == ("r3", "label", "FRAUD", "observed", "o3")


def test_outcomes_naming_another_endpoint_do_not_label_this_one(tmp_path: Path) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(
        tmp_path, [outcome("o1", "FRAUD", at(1), key={TX: "t1"}, service_id="fraud", endpoint_id="other")]
    )
    assert labelled(tmp_path, fraud_policy()) == [("r1", "label", None, "pending", None)]
    assert unmatched(tmp_path, fraud_policy()) == [("o1", "no policy joins on this target")]


def test_label_coverage_counts_states_and_delays_per_day(tmp_path: Path) -> None:
    write_predictions(
        tmp_path,
        [
            prediction("a", at(0), context=tx("t1")),
            prediction("b", at(0, hours=1), context=tx("t2")),
            prediction("c", at(0, hours=2), context=tx("t3")),
            prediction("d", at(1), context=tx("t4")),
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome("o1", "FRAUD", at(1), key={TX: "t1"}, received_at=at(1)),
            outcome("o2", "OK", at(2), key={TX: "t2"}, received_at=at(3, hours=1)),
        ],
    )
    con = connect(tmp_path, policies=fraud_policy(maturity="1d", implicit_value="OK"))
    rows = con.execute("SELECT * FROM label_coverage").fetchall()
    assert rows == [
        # delays 1 day and 3 days: median 2 days, p90 (linear) 1 + 0.9 * 2 = 2.8 days
        (
            "fraud",
            "score",
            "label",
            dt.date(2026, 1, 1),
            3,
            2,
            1,
            0,
            dt.timedelta(days=2),
            dt.timedelta(days=2.8),
        ),
        ("fraud", "score", "label", dt.date(2026, 1, 2), 1, 0, 1, 0, None, None),
    ]


def test_policy_values_are_never_sql(tmp_path: Path) -> None:
    nasty = "x'; DROP TABLE _hs_policies; --"
    write_predictions(tmp_path, [prediction("r1", at(0), service_id=nasty, context=tx("t1"))])
    write_outcomes(tmp_path, [outcome("o1", "it's", at(1), key={TX: "t1"})])
    policy = policies_from_config(
        [{"service_id": nasty, "endpoint_id": "score", "join_on": TX, "positive": nasty}]
    )
    assert labelled(tmp_path, policy) == [("r1", "label", "it's", "observed", "o1")]


@pytest.mark.parametrize("view", ["labelled", "unmatched_outcomes", "label_coverage"])
def test_views_over_an_empty_root_are_empty(tmp_path: Path, view: str) -> None:
    con = connect(tmp_path, policies=fraud_policy())
    assert con.execute(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]


def test_connect_reads_the_policies_declared_in_the_root(tmp_path: Path) -> None:
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = "context.transaction_id"\n',
        encoding="utf-8",
    )
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(1), key={TX: "t1"})])
    con = connect(tmp_path)
    assert con.execute("SELECT label FROM labelled").fetchall() == [("FRAUD",)]


def test_the_metrics_path_sees_the_same_labels(tmp_path: Path) -> None:
    write_predictions(
        tmp_path, [prediction("r1", at(0), context=tx("t1")), prediction("r2", at(1), context=tx("t2"))]
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(2), key={TX: "t1"})])
    con = connect(tmp_path, policies=fraud_policy(maturity="1d", implicit_value="OK"))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _hs_won AS SELECT * FROM _hs_won_as_of(?::TIMESTAMPTZ)", [at(5)]
    )
    direct = con.execute("SELECT * FROM labelled_as_of(?::TIMESTAMPTZ) ORDER BY ALL", [at(5)]).fetchall()
    stored = con.execute(
        "SELECT * FROM _hs_labelled_with_won(?::TIMESTAMPTZ) ORDER BY ALL", [at(5)]
    ).fetchall()
    assert stored == direct and [r[12] for r in direct] == ["observed", "implicit"]


def test_durations_of_100_years_work_in_the_join(tmp_path: Path) -> None:
    write_predictions(
        tmp_path, [prediction("r1", at(0), context=tx("t1")), prediction("r2", at(0), context=tx("t2"))]
    )
    write_outcomes(tmp_path, [outcome("o1", "FRAUD", at(36_500), key={TX: "t1"})])
    policy = fraud_policy(window="36500d", maturity="36500d", implicit_value="OK")
    assert labelled(tmp_path, policy, as_of=at(36_500)) == [
        ("r1", "label", "FRAUD", "observed", "o1"),
        ("r2", "label", "OK", "implicit", None),
    ]
    assert labelled(tmp_path, policy, as_of=at(36_499)) == [
        ("r1", "label", None, "pending", None),
        ("r2", "label", None, "pending", None),
    ]


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (Policy("fraud", "score", window=dt.timedelta(days=36_501)), "window=36501 days, 0:00:00"),
        (
            Policy("fraud", "score", maturity=dt.timedelta(days=200_000_000)),
            "maturity=200000000 days, 0:00:00",
        ),
        (Policy("fraud", "score", window=dt.timedelta(0)), "window=0:00:00"),
    ],
)
def test_a_policy_built_in_code_with_a_bad_duration_is_a_config_error(
    tmp_path: Path, policy: Policy, problem: str
) -> None:
    write_predictions(tmp_path, [prediction("r1", at(0), context=tx("t1"))])
    with pytest.raises(ConfigError) as caught:
        labelled(tmp_path, [policy])
    assert str(caught.value) == (
        f"policy (fraud/score): {problem} must be longer than zero and at most 100 years (36500d)"
    )


def test_an_outcome_type_the_named_endpoint_has_no_policy_for_says_so(tmp_path: Path) -> None:
    # shop/reco's only policy is for conversions: a `label` naming shop/reco has no policy, even though
    # the default policy (for endpoints without any) takes `label` outcomes on record_id
    write_predictions(
        tmp_path,
        [
            prediction("p1", at(0), service_id="shop", endpoint_id="reco"),
            prediction("p2", at(0), service_id="churn", endpoint_id="predict"),
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome("label_reco", "buy", at(1), record_id="p1", service_id="shop", endpoint_id="reco"),
            outcome(
                "conv_reco",
                "buy",
                at(1),
                record_id="p1",
                service_id="shop",
                endpoint_id="reco",
                outcome_type="conversion",
            ),
            outcome(
                "label_p2_named", "yes", at(1), record_id="p2", service_id="churn", endpoint_id="predict"
            ),
            outcome(
                "label_p1_on_churn", "yes", at(1), record_id="p1", service_id="churn", endpoint_id="predict"
            ),
            # no endpoint named: p1's endpoint is found through the prediction, and has no `label` policy
            outcome("label_p1_unnamed", "buy", at(1), record_id="p1"),
        ],
    )
    policies = policies_from_config(
        [{"service_id": "shop", "endpoint_id": "reco", "outcome_type": "conversion"}]
    )
    assert labelled(tmp_path, policies) == [
        ("p1", "conversion", "buy", "observed", "conv_reco"),
        ("p2", "label", "yes", "observed", "label_p2_named"),
    ]
    assert unmatched(tmp_path, policies) == [
        ("label_p1_on_churn", "prediction on another endpoint"),  # p1 is shop/reco's
        ("label_p1_unnamed", "no policy for outcome_type"),
        ("label_reco", "no policy for outcome_type"),
    ]


def test_an_implicit_label_has_the_number_an_observed_one_with_its_text_has(tmp_path: Path) -> None:
    # "+1" is no JSON number: an observed "+1" had no label_value while the implicit "+1" was 1.0
    write_predictions(
        tmp_path, [prediction("r1", at(0), context=tx("t1")), prediction("r2", at(0), context=tx("t2"))]
    )
    write_outcomes(tmp_path, [outcome("o1", "+1", at(1), key={TX: "t1"})])
    policies = fraud_policy(maturity="30d", implicit_value="+1", positive="1")
    con = connect(tmp_path, policies=policies)
    rows = con.execute(
        "SELECT record_id, label, label_value, label_state FROM labelled_as_of(?::TIMESTAMPTZ) ORDER BY 1",
        [at(60)],
    ).fetchall()
    con.close()
    assert rows == [("r1", "+1", None, "observed"), ("r2", "+1", None, "implicit")]
    numeric = fraud_policy(maturity="30d", implicit_value="1e0")
    con = connect(tmp_path, policies=numeric)
    assert con.execute(
        "SELECT label_value FROM labelled_as_of(?::TIMESTAMPTZ) WHERE record_id = 'r2'", [at(60)]
    ).fetchall() == [(1.0,)]
    con.close()
