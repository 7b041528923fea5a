"""The SQL of the label join: policies table, keyed predictions, attribution, and the as-of table macros.

Policy values reach SQL in two ways only: as bound parameters (rows of the `_hs_policies` temp table)
or, for join paths, as JSON-pointer literals quoted by `storage.views.quote_literal` after the path
was validated by `storage.policies`. Nothing from a request is ever interpolated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import duckdb

from service.errors import ConfigError
from storage.outcome_model import text_number
from storage.policies import DEFAULT_OUTCOME_TYPE, MAX_DURATION, MAX_DURATION_TEXT, Policy
from storage.views import quote_ident, quote_literal

POLICIES_TABLE = "_hs_policies"
PREDICTIONS_SOURCE = "_hs_predictions"  # the `predictions` view's snapshot (evaluation_views)
OUTCOMES_SOURCE = "_hs_outcomes"  # the `outcomes` view's snapshot
SEPARATOR = "chr(31)"  # joins the parts of a multi-path key; unit separator, never in sane ids

UNMATCHED_REASONS: dict[str, str] = {
    "superseded by a later outcome": "it was attributed, but every prediction it went to took a later "
    "outcome of the same type (a correction, or a later event for the same key)",
    "no policy for outcome_type": "no policy of its endpoint (or of any endpoint, when it names none) uses "
    "this outcome_type; without a policy only 'label' joins, on record_id",
    "no policy joins on this target": "a policy uses this outcome_type but joins on other paths than the "
    "outcome's key",
    "no prediction with this key": "no prediction (made up to the as-of time) has this record_id or key",
    "prediction on another endpoint": "a prediction has this record_id, but on another service or "
    "endpoint than the outcome names",
    "no prediction before occurred_at": "predictions with this key exist, but all were made after the "
    "outcome occurred",
    "outside window": "the prediction it would go to was made longer than the policy's window before "
    "the outcome occurred",
}
"""Why an outcome is in `unmatched_outcomes`, checked in this order."""


def key_specs(policies: Sequence[Policy]) -> list[tuple[str, ...]]:
    """The distinct key-path sets the policies join on (record_id excluded); spec id = index + 1."""
    specs: list[tuple[str, ...]] = []
    for policy in policies:
        if not policy.joins_on_record_id and policy.join_on not in specs:
            specs.append(policy.join_on)
    return specs


def create_policies_table(con: duckdb.DuckDBPyConnection, policies: Sequence[Policy]) -> None:
    """(Re)create `_hs_policies`: one row per policy plus the default (policy_id 0), values bound."""
    specs = key_specs(policies)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {POLICIES_TABLE} (
            policy_id INTEGER, service_id VARCHAR, endpoint_id VARCHAR, outcome_type VARCHAR,
            spec_id INTEGER, key_paths VARCHAR, attribution VARCHAR, "window" INTERVAL,
            maturity INTERVAL, implicit_value VARCHAR, positive VARCHAR,
            window_us BIGINT, maturity_us BIGINT, implicit_number DOUBLE)"""
    )
    rows: list[tuple[object, ...]] = [
        (
            0,
            None,
            None,
            DEFAULT_OUTCOME_TYPE,
            0,
            "record_id",
            "last_before",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    ]
    for i, policy in enumerate(policies, start=1):
        spec_id = 0 if policy.joins_on_record_id else specs.index(policy.join_on) + 1
        rows.append(
            (
                i,
                policy.service_id,
                policy.endpoint_id,
                policy.outcome_type,
                spec_id,
                ",".join(policy.join_on),  # validated paths hold no comma
                policy.attribution,
                policy.window,
                policy.maturity,
                policy.implicit_value,
                policy.positive,
                _micros(policy, "window", policy.window),
                _micros(policy, "maturity", policy.maturity),
                # the outcomes' rule (a JSON number), not DuckDB's cast: "+1" was 1.0 as an implicit
                # label and no number as an observed one, two classes for one label (review finding)
                None if policy.implicit_value is None else text_number(policy.implicit_value),
            )
        )
    con.executemany(f"INSERT INTO {POLICIES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _micros(policy: Policy, field: str, duration: dt.timedelta | None) -> int | None:
    # Time arithmetic is done on epoch microseconds: TIMESTAMPTZ +/- INTERVAL goes through ICU calendars,
    # measured 10-15x slower on 10M rows.
    if duration is None:
        return None
    # parse_duration bounds what hindsight.toml gives; a Policy built in code is checked here, before a
    # BIGINT or INTERVAL overflow becomes a DuckDB conversion error
    if not dt.timedelta(0) < duration <= MAX_DURATION:
        raise ConfigError(
            f"policy ({policy.service_id}/{policy.endpoint_id}): {field}={duration} must be longer "
            f"than zero and at most {MAX_DURATION_TEXT}"
        )
    return duration // dt.timedelta(microseconds=1)


def _pointer(path: str) -> str:
    """`context.a.b` -> the literal '/a/b' (RFC 6901 pointer; validated names hold no '/' or '~')."""
    return quote_literal("/" + "/".join(path.split(".")[1:]))


def _prediction_key(spec: tuple[str, ...]) -> str:
    parts = [f"json_extract_string(p.{quote_ident(path.split('.')[0])}, {_pointer(path)})" for path in spec]
    return f" || {SEPARATOR} || ".join(parts)


def _outcome_key(spec: tuple[str, ...]) -> str:
    # The outcome key is canonical JSON {"context.transaction_id": "tx-1"}: one member per full path.
    parts = [f"json_extract_string(o.key, {quote_literal('/' + path)})" for path in spec]
    return f" || {SEPARATOR} || ".join(parts)


def _case(specs: list[tuple[str, ...]], render: Callable[[tuple[str, ...]], str], policy: str) -> str:
    if not specs:
        return "NULL::VARCHAR"
    whens = " ".join(f"WHEN {i} THEN {render(spec)}" for i, spec in enumerate(specs, start=1))
    return f"CASE {policy}.spec_id {whens} END"


def _ctes(policies: Sequence[Policy]) -> str:
    """The shared CTEs (parameter `as_of`): kp, ko, op, cand, won."""
    specs = key_specs(policies)
    return f"""
    kp AS NOT MATERIALIZED (
        -- keyed predictions: one row per prediction and policy of its endpoint (or the default).
        -- Inlined into each join, not materialised: each branch is one scan that probes its hash table,
        -- the record_id branch without the JSON key; storing 10M rows first cost more (0.9 CPU-s).
        SELECT p.record_id, epoch_us(p.ts) AS ts_us, p.service_id, p.endpoint_id,
               coalesce(pol.policy_id, 0) AS policy_id,
               {_case(specs, _prediction_key, "pol")} AS jkey
        FROM {PREDICTIONS_SOURCE} p
        LEFT JOIN {POLICIES_TABLE} pol
               ON pol.service_id = p.service_id AND pol.endpoint_id = p.endpoint_id AND pol.policy_id > 0
        WHERE p.ts <= as_of
    ),
    ko AS (
        -- outcomes known at as_of
        SELECT outcome_id, record_id, key, service_id, endpoint_id, outcome_type, value, value_number,
               occurred_at, received_at, intake_seq, epoch_us(occurred_at) AS occurred_us,
               array_to_string(json_keys(key), ',') AS key_paths  -- canonical JSON: paths sorted
        FROM {OUTCOMES_SOURCE}
        WHERE received_at <= as_of
    ),
    ko_pol AS (
        -- each known outcome next to every policy, through a one-row list: a hash join on outcome_type
        -- would chain all outcomes under one or two keys (measured 5x slower at 1M outcomes)
        SELECT o.*, unnest(all_pol.pols) AS pl
        FROM ko o, (SELECT list(p ORDER BY p.policy_id) AS pols FROM {POLICIES_TABLE} p) all_pol
    ),
    typed AS (
        -- the pairs whose outcome_type and endpoint agree
        SELECT * FROM ko_pol
        WHERE pl.outcome_type = outcome_type
          AND (service_id IS NULL OR pl.service_id IS NULL OR service_id = pl.service_id)
          AND (endpoint_id IS NULL OR pl.endpoint_id IS NULL OR endpoint_id = pl.endpoint_id)
    ),
    op_rows AS MATERIALIZED (
        -- each known outcome with every policy it may feed (type, endpoint and target paths agree)
        SELECT o.* EXCLUDE (pl), pl.policy_id, pl.attribution, pl.window_us,
               CASE WHEN o.record_id IS NULL THEN {_case(specs, _outcome_key, "pl")} END AS jkey
        FROM typed o
        WHERE o.record_id IS NOT NULL OR (pl.spec_id > 0 AND o.key_paths = pl.key_paths)
    ),
    op AS MATERIALIZED (
        -- orow numbers these pairs so the joins below carry and group by one BIGINT, not wide rows.
        -- row_number() OVER () runs on one thread, and so does the pipeline feeding it: numbering the
        -- stored op_rows keeps the Parquet read and JSON work above on every core (measured -1 s wall
        -- at 5M outcomes for +0.2 CPU-s)
        SELECT *, row_number() OVER () AS orow FROM op_rows
    ),
    cand AS (
        -- (outcome-policy pair, prediction) candidates, as (orow, record_id, policy_id).
        -- record_id targets: the prediction with that record_id, whatever the policy's attribution
        -- (the few record_id outcomes are the hash join's build side, not all outcomes)
        SELECT o.orow, k.record_id, k.policy_id
        FROM (SELECT * FROM op WHERE record_id IS NOT NULL) o
        JOIN kp k ON k.record_id = o.record_id AND k.policy_id = o.policy_id
        WHERE (o.service_id IS NULL OR o.service_id = k.service_id)
          AND (o.endpoint_id IS NULL OR o.endpoint_id = k.endpoint_id)
          AND (o.window_us IS NULL OR o.occurred_us - k.ts_us <= o.window_us)
        UNION ALL
        -- last_before: the last prediction with the key made at or before occurred_at (and inside the
        -- window: if the last one is outside, so are all earlier ones). A hash join on the key and
        -- arg_max, not an ASOF JOIN: measured 3x faster at 1M predictions (docs/design.md). Grouped by
        -- orow alone: grouping by (outcome_id, policy_id) with any_value of every column cost 5 s at 10M.
        -- Ties on ts (the items of one batch query share its timestamp) go to the greatest record_id,
        -- so the same data always gives the same labels.
        SELECT o.orow, arg_max(k.record_id, (k.ts_us, k.record_id)), any_value(o.policy_id)
        FROM (SELECT orow, policy_id, jkey, occurred_us, window_us FROM op
              WHERE jkey IS NOT NULL AND attribution = 'last_before') o
        JOIN kp k ON k.policy_id = o.policy_id AND k.jkey = o.jkey AND k.ts_us <= o.occurred_us
         AND (o.window_us IS NULL OR k.ts_us >= o.occurred_us - o.window_us)
        GROUP BY o.orow
        UNION ALL
        -- all_within: every prediction with the key inside the window before occurred_at
        SELECT o.orow, k.record_id, k.policy_id
        FROM (SELECT orow, policy_id, jkey, occurred_us, window_us FROM op
              WHERE jkey IS NOT NULL AND attribution = 'all_within') o
        JOIN kp k ON k.policy_id = o.policy_id AND k.jkey = o.jkey AND k.ts_us <= o.occurred_us
         AND (o.window_us IS NULL OR k.ts_us >= o.occurred_us - o.window_us)
    ),
    won AS (
        -- corrections: of the outcomes attributed to one prediction, the latest wins. The arg_max keeps
        -- a BIGINT (orow) and the winner's columns are joined back after: carrying a struct of them
        -- through arg_max was the slowest step at 10M predictions (measured 9 s of 13 s).
        SELECT c.record_id, c.policy_id, o.outcome_id, o.value, o.value_number, o.occurred_at,
               o.received_at
        FROM (SELECT c.record_id, c.policy_id,
                     arg_max(c.orow, (o.occurred_at, o.received_at, o.intake_seq, o.outcome_id)) AS orow
              FROM cand c JOIN op o ON o.orow = c.orow
              GROUP BY c.record_id, c.policy_id) c
        JOIN op o ON o.orow = c.orow
    )"""


def won_macro(policies: Sequence[Policy]) -> str:
    """`_hs_won_as_of(as_of)`: per prediction and policy, the winning outcome known at as_of."""
    return f"""CREATE OR REPLACE TEMP MACRO _hs_won_as_of(as_of) AS TABLE
    WITH {_ctes(policies)}
    SELECT * FROM won"""


def _labelled_select(won_source: str, extra_columns: Sequence[str] = ()) -> str:
    """The labelled rows; `extra_columns` adds columns of the prediction (validated names from code)."""
    mature = "epoch_us(p.ts) + pol.maturity_us <= epoch_us(as_of::TIMESTAMPTZ)"
    extra = "".join(f"p.{quote_ident(name)}, " for name in extra_columns)
    return f"""
    SELECT p.record_id, p.ts, p.day, p.service_id, p.endpoint_id, p.generation, {extra}
           p.prediction, p.prediction_value, p.probas,
           coalesce(pol.outcome_type, '{DEFAULT_OUTCOME_TYPE}') AS outcome_type,
           CASE WHEN w.outcome_id IS NOT NULL THEN w.value WHEN {mature} THEN pol.implicit_value END AS label,
           CASE WHEN w.outcome_id IS NOT NULL THEN w.value_number
                WHEN {mature} THEN pol.implicit_number END AS label_value,
           CASE WHEN w.outcome_id IS NOT NULL THEN 'observed'
                WHEN pol.implicit_value IS NOT NULL AND {mature} THEN 'implicit'
                ELSE 'pending' END AS label_state,
           CASE WHEN w.outcome_id IS NOT NULL THEN w.received_at
                WHEN pol.implicit_value IS NOT NULL AND {mature}
                THEN make_timestamptz(epoch_us(p.ts) + pol.maturity_us) END AS labelled_at,
           to_microseconds(epoch_us(labelled_at) - epoch_us(p.ts)) AS label_delay,
           w.outcome_id, w.occurred_at AS outcome_occurred_at
    FROM {PREDICTIONS_SOURCE} p
    LEFT JOIN {POLICIES_TABLE} pol
           ON pol.service_id = p.service_id AND pol.endpoint_id = p.endpoint_id AND pol.policy_id > 0
    LEFT JOIN {won_source} w ON w.record_id = p.record_id AND w.policy_id = coalesce(pol.policy_id, 0)
    WHERE p.ts <= as_of"""


def labelled_macro() -> str:
    """`labelled_as_of(as_of)`: one row per prediction (ts <= as_of) and policy, labels known at as_of."""
    return f"""CREATE OR REPLACE TEMP MACRO labelled_as_of(as_of) AS TABLE
    {_labelled_select("_hs_won_as_of(as_of)")}"""


WON_TABLE = "_hs_won"


def labelled_with_won_table_macro() -> str:
    """`_hs_labelled_with_won(as_of)`: `labelled_as_of` over winners first stored in the `_hs_won` table.

    The metrics store the winners in a temp table so DuckDB knows their row count and builds the hash
    table on them, not on the predictions (measured at 10M predictions: the final join went from 11.6 s
    to a few seconds)."""
    return f"""CREATE OR REPLACE TEMP MACRO _hs_labelled_with_won(as_of) AS TABLE
    {_labelled_select(WON_TABLE)}"""


EXPORT_MACRO = "_hs_labelled_export"


def labelled_export_macro() -> str:
    """`_hs_labelled_export(as_of)`: `_hs_labelled_with_won` with each prediction's features and context
    (what `storage.export` writes; the views leave out these widest columns). Like the metrics, it reads
    winners first stored in `_hs_won` at the same as_of: at 10M predictions an export took 64 s and 6.1 GB
    with `_hs_won_as_of` inlined, 23 s and 2.9 GB this way (measured on a loaded machine)."""
    return f"""CREATE OR REPLACE TEMP MACRO {EXPORT_MACRO}(as_of) AS TABLE
    {_labelled_select(WON_TABLE, ("features", "context"))}"""


def unmatched_macro(policies: Sequence[Policy]) -> str:
    """`unmatched_outcomes_as_of(as_of)`: outcomes known at as_of that no prediction took, with a reason."""
    reasons = list(UNMATCHED_REASONS)
    return f"""CREATE OR REPLACE TEMP MACRO unmatched_outcomes_as_of(as_of) AS TABLE
    WITH {_ctes(policies)},
    um AS (SELECT * FROM ko ANTI JOIN (SELECT DISTINCT outcome_id FROM won) USING (outcome_id)),
    lost AS (SELECT DISTINCT o.outcome_id FROM cand c JOIN op o ON o.orow = c.orow),
    own AS (SELECT DISTINCT service_id, endpoint_id FROM {POLICIES_TABLE} WHERE policy_id > 0),
    typed_own AS (
        -- `typed` for the reasons: the default policy serves only endpoints without policies, so it does
        -- not type an outcome that names an endpoint with policies of its own (no policy of that endpoint
        -- has its outcome_type). `typed` keeps such pairs for the labels: they can reach no prediction
        -- (kp gives policy 0 only to endpoints without policies), and dropping them there would add a
        -- join to the path `_hs_won_as_of` takes.
        SELECT outcome_id FROM typed WHERE pl.policy_id > 0
        UNION ALL
        SELECT outcome_id FROM (SELECT * FROM typed WHERE pl.policy_id = 0) ANTI JOIN own
                               USING (service_id, endpoint_id)
    ),
    targeted AS (SELECT * FROM op SEMI JOIN um USING (outcome_id)),
    seen AS (
        -- a record_id target is looked up whatever the prediction's endpoint and policy, so that the
        -- reason can say which of the two did not fit
        SELECT outcome_id, min(ts_us) FILTER (WHERE fits) AS first_us, true AS by_record,
               bool_or(on_endpoint) AS on_endpoint, bool_or(fits) AS fits
        FROM (SELECT o.outcome_id, k.ts_us,
                     (o.service_id IS NULL OR o.service_id = k.service_id)
                     AND (o.endpoint_id IS NULL OR o.endpoint_id = k.endpoint_id) AS on_endpoint,
                     on_endpoint AND k.policy_id = o.policy_id AS fits
              FROM targeted o JOIN kp k ON k.record_id = o.record_id)
        GROUP BY outcome_id
        UNION ALL
        SELECT o.outcome_id, min(k.ts_us), false, true, true
        FROM targeted o JOIN kp k ON k.jkey = o.jkey AND k.policy_id = o.policy_id
        GROUP BY o.outcome_id
    ),
    seen1 AS (SELECT outcome_id, min(first_us) AS first_us, bool_or(by_record AND fits) AS by_record,
                     bool_or(on_endpoint) AS on_endpoint, bool_or(fits) AS fits
              FROM seen GROUP BY outcome_id)
    SELECT um.outcome_id, um.record_id, um.key, um.service_id, um.endpoint_id, um.outcome_type,
           um.value, um.value_number, um.occurred_at, um.received_at,
           CASE WHEN um.outcome_id IN (SELECT outcome_id FROM lost) THEN {quote_literal(reasons[0])}
                WHEN um.outcome_id NOT IN (SELECT outcome_id FROM typed_own) THEN {quote_literal(reasons[1])}
                WHEN um.outcome_id NOT IN (SELECT outcome_id FROM targeted) THEN {quote_literal(reasons[2])}
                WHEN s.outcome_id IS NULL THEN {quote_literal(reasons[3])}
                WHEN NOT s.on_endpoint THEN {quote_literal(reasons[4])}
                -- its prediction's endpoint has policies, none for this outcome_type
                WHEN NOT s.fits THEN {quote_literal(reasons[1])}
                WHEN NOT s.by_record AND s.first_us > epoch_us(um.occurred_at)
                THEN {quote_literal(reasons[5])}
                ELSE {quote_literal(reasons[6])} END AS reason
    FROM um LEFT JOIN seen1 s USING (outcome_id)"""
