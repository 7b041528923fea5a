"""Evaluation views: predictions joined to outcomes under the policies (labelled, coverage, unmatched)."""

from __future__ import annotations

import duckdb

from storage.label_sql import (
    OUTCOMES_SOURCE,
    PREDICTIONS_SOURCE,
    WON_TABLE,
    create_policies_table,
    labelled_macro,
    labelled_with_won_table_macro,
    unmatched_macro,
    won_macro,
)
from storage.layout import Layout
from storage.outcome_views import OUTCOMES_VIEW  # imported first, so `outcomes` is registered before
from storage.views import ViewContext, ViewSpec, register_view


def _create_labelled_as_of(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    context = ViewContext.of(layout)
    # The label views read the same snapshots as the `predictions` and `outcomes` views of this
    # connection (registered before them), not a second, possibly newer, read of the Delta logs.
    con.execute(f"CREATE OR REPLACE TEMP VIEW {PREDICTIONS_SOURCE} AS SELECT * FROM predictions")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {OUTCOMES_SOURCE} AS SELECT * FROM {OUTCOMES_VIEW}")
    create_policies_table(con, context.policies)
    con.execute(won_macro(context.policies))
    con.execute(labelled_macro())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {WON_TABLE} AS SELECT * FROM _hs_won_as_of(now()) LIMIT 0")
    con.execute(labelled_with_won_table_macro())


def _create_labelled(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    con.execute("CREATE OR REPLACE TEMP VIEW labelled AS SELECT * FROM labelled_as_of(now())")


def _create_unmatched(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    context = ViewContext.of(layout)
    con.execute(unmatched_macro(context.policies))
    con.execute(
        "CREATE OR REPLACE TEMP VIEW unmatched_outcomes AS SELECT * FROM unmatched_outcomes_as_of(now())"
    )


def _create_coverage(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    con.execute(
        """CREATE OR REPLACE TEMP VIEW label_coverage AS
        SELECT service_id, endpoint_id, outcome_type, day,
               count(*) AS predictions,
               count(*) FILTER (WHERE label_state = 'observed') AS observed,
               count(*) FILTER (WHERE label_state = 'implicit') AS implicit,
               count(*) FILTER (WHERE label_state = 'pending') AS pending,
               to_seconds(quantile_cont(epoch(label_delay), 0.5) FILTER (WHERE label_state = 'observed'))
                   AS median_label_delay,
               to_seconds(quantile_cont(epoch(label_delay), 0.9) FILTER (WHERE label_state = 'observed'))
                   AS p90_label_delay
        FROM labelled
        GROUP BY ALL
        ORDER BY service_id, endpoint_id, outcome_type, day"""
    )


register_view(
    ViewSpec(
        "labelled_as_of",
        "Table macro labelled_as_of(ts): the rows of `labelled` as they were known at ts (outcomes "
        "received after ts ignored, predictions made after ts left out, maturity judged at ts).",
        _create_labelled_as_of,
    )
)
register_view(
    ViewSpec(
        "labelled",
        "One row per prediction and outcome_type of a policy of its endpoint (or 'label' by record_id when "
        "the endpoint has no policy): its label, label_state observed/implicit/pending, labelled_at and "
        "label_delay (an interval), as known now.",
        _create_labelled,
    )
)
register_view(
    ViewSpec(
        "unmatched_outcomes",
        "One row per outcome event no prediction took (as known now), with the reason why; the table macro "
        "unmatched_outcomes_as_of(ts) gives the same as known at ts.",
        _create_unmatched,
    )
)
register_view(
    ViewSpec(
        "label_coverage",
        "One row per endpoint, outcome_type and prediction day: predictions, observed, implicit and pending "
        "labels, median and p90 delay (intervals) of the observed labels.",
        _create_coverage,
    )
)
