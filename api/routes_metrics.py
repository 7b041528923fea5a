"""`GET /v1/metrics`: the metrics of `hindsight eval`, from the same library function (storage.metrics)."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.auth import RequireRead
from api.models import ErrorResponse
from api.query_params import check_query
from api.runtime import RuntimeDep
from service.errors import InputError, QueryError, StorageError
from storage.metrics import (
    Cohort,
    MetricsQuery,
    evaluate,
    metrics_table,
    parse_as_of,
    parse_day,
    parse_endpoint,
)

router = APIRouter(tags=["metrics"])

QUERY_PARAMETERS = ("endpoint", "by", "as_of", "from", "to", "format")
"""The query parameters GET /v1/metrics knows; any other is a 422, as on GET /v1/outcomes."""


class CalibrationBin(BaseModel):
    """One of the 10 equal-width score bins (empty bins are left out)."""

    bin: int
    mean_predicted: float
    observed_rate: float
    count: int


class CohortMetrics(BaseModel):
    """Metrics of one endpoint, outcome_type and cohort; a task's metrics are null for other tasks."""

    service_id: str | None
    endpoint_id: str | None
    outcome_type: str
    cohort: str
    task: Literal["binary", "multiclass", "regression"]
    n: int
    n_labelled: int
    n_observed: int
    n_implicit: int
    n_pending: int
    coverage: float
    pending_share: float
    immature: bool
    positive: str | None = None
    n_predicted: int | None = None
    n_scored: int | None = None
    n_unknown_label: int | None = None
    positive_rate: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    calibration: list[CalibrationBin] | None = None
    macro_f1: float | None = None
    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    r2: float | None = None


def _csv(rows: list[dict[str, Any]]) -> str:
    columns, values = metrics_table(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in values])
    return buf.getvalue()


def _plus_hint(text: str) -> str:
    """`text`, or an InputError when it looks like an offset whose '+' the URL turned into a space."""
    if re.search(r"[T ]\d\d:\d\d(:\d\d(\.\d+)?)? \d\d(:?\d\d)?$", text):
        raise InputError(
            f"as_of {text!r} is not an ISO 8601 timestamp: a '+' in a URL reads as a space, send it as %2B"
        )
    return text


@router.get(
    "/v1/metrics",
    response_model=list[CohortMetrics],
    responses={
        200: {"content": {"text/csv": {}}},
        **{code: {"model": ErrorResponse} for code in (401, 403, 422)},
    },
    summary="Model metrics per endpoint and cohort",
)
def get_metrics(
    request: Request,
    key: RequireRead,
    runtime: RuntimeDep,
    endpoint: Annotated[str | None, Query(description="Only this endpoint, as SERVICE/ENDPOINT.")] = None,
    by: Annotated[Cohort, Query(description="Cohorts: day, week, generation or none.")] = Cohort.day,
    # as_of, from and to are read as text by the CLI's own parsers (storage.metrics), not by pydantic,
    # which took a number as seconds since 1970: one spelling must mean one instant in both
    as_of: Annotated[
        str | None,
        Query(description="Labels as known at this time, ISO 8601 (default now; no offset = UTC)."),
    ] = None,
    date_from: Annotated[
        str | None, Query(alias="from", description="First prediction day (YYYY-MM-DD).")
    ] = None,
    date_to: Annotated[
        str | None, Query(alias="to", description="Last prediction day (YYYY-MM-DD), included.")
    ] = None,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format", description="json or csv.")] = "json",
) -> Response:
    """What `hindsight eval` prints, for the same parameters (the table format is CLI-only)."""
    check_query(request, QUERY_PARAMETERS.__contains__, ", ".join(QUERY_PARAMETERS))
    config = runtime.config
    query = MetricsQuery(
        endpoint=None if endpoint is None else parse_endpoint(endpoint),
        by=by,
        as_of=None if as_of is None else parse_as_of(_plus_hint(as_of), "as_of"),
        date_from=parse_day(date_from, "from"),
        date_to=parse_day(date_to, "to"),
        immature_threshold=config.immature_threshold,
    )
    try:
        rows = evaluate(config.root, query, policies=config.policies)
    except QueryError as exc:
        # the metrics' SQL is ours and the request's values are bound: a failure is the storage's
        raise StorageError(exc.message) from exc
    if fmt == "csv":
        return Response(_csv(rows), media_type="text/csv")
    # exclude_unset: the keys of each row are those the CLI prints (a task's own metrics only)
    return JSONResponse(
        [CohortMetrics.model_validate(row).model_dump(mode="json", exclude_unset=True) for row in rows]
    )
