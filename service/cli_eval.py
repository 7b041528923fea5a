"""`hindsight eval`: model metrics per endpoint and cohort, from the labelled view (storage.metrics)."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli_options import AsOfOption, DayFromOption, DayToOption
from service.errors import InputError
from service.render import OutputFormat, render_rows, to_json


def eval_command(
    ctx: typer.Context,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Only this endpoint, as SERVICE/ENDPOINT.")
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="Cohorts: day, week (ISO, from Monday), generation or none.")
    ] = "day",
    as_of: AsOfOption = None,
    date_from: DayFromOption = None,
    date_to: DayToOption = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """Compute model metrics from predictions joined to outcomes under the declared policies.

    Binary endpoints get accuracy, precision, recall, f1, roc_auc, pr_auc, log_loss, brier (and a
    calibration table in JSON); multiclass get accuracy, macro_f1, log_loss; regression get mae, rmse,
    mape, r2. A cohort whose share of pending labels is above eval.immature_threshold is immature.

    Example: hindsight eval --endpoint fraud/score --by week --as-of 2026-03-01 --format json
    """
    from service.cli import state_of
    from storage.interrupt import run_interruptibly
    from storage.metrics import (
        Cohort,
        MetricsQuery,
        evaluate,
        metrics_table,
        parse_as_of,
        parse_day,
        parse_endpoint,
    )
    from storage.policies import policies_from_config

    settings = state_of(ctx).settings()
    try:
        cohort = Cohort(by)
    except ValueError as exc:
        raise InputError(f"--by must be one of day, week, generation, none; got {by!r}") from exc
    query = MetricsQuery(
        endpoint=None if endpoint is None else parse_endpoint(endpoint),
        by=cohort,
        as_of=None if as_of is None else parse_as_of(as_of, "--as-of"),
        date_from=parse_day(date_from, "--from"),
        date_to=parse_day(date_to, "--to"),
        immature_threshold=settings.eval.immature_threshold,
    )
    policies = policies_from_config([p.model_dump() for p in settings.policies])
    rows = run_interruptibly(lambda: evaluate(settings.root, query, policies=policies))
    if query.endpoint is None and query.date_from is None and query.date_to is None:
        # a policy for `Fraud/score` labelled nothing and the endpoint fell back to the default policy,
        # with exit code 0 (review finding): ids match exactly, so say which policy found no prediction
        evaluated = {(row["service_id"], row["endpoint_id"]) for row in rows}
        for policy in policies:
            if (policy.service_id, policy.endpoint_id) not in evaluated:
                named = f"{policy.service_id}/{policy.endpoint_id} ({policy.outcome_type})"
                typer.echo(
                    f"warning: the policy for {named} matches no prediction made up to the as-of time; "
                    "service_id and endpoint_id match exactly (hindsight sql 'SELECT DISTINCT service_id, "
                    "endpoint_id FROM predictions')",
                    err=True,
                )
    if fmt is OutputFormat.json:
        typer.echo(to_json(rows))
        return
    columns, values = metrics_table(rows, compact=fmt is OutputFormat.table)
    typer.echo(render_rows(columns, values, fmt, title="metrics" if fmt is OutputFormat.table else None))


def register(app: typer.Typer) -> None:
    """Attach `hindsight eval` to the main CLI."""
    app.command("eval")(eval_command)
