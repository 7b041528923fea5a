"""Request and response models of the API (the outcome input model lives in storage.outcome_model)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.keys import MAX_NAME


class OutcomeResult(BaseModel):
    """What happened to one posted outcome."""

    outcome_id: str
    status: Literal["created", "duplicate"]


class OutcomeResults(BaseModel):
    """One result per posted outcome, in order."""

    results: list[OutcomeResult]


class StoredOutcome(BaseModel):
    """An outcome event as stored; `flushed` is false while it is only in the intake log."""

    outcome_id: str
    record_id: str | None
    key: dict[str, Any] | None
    service_id: str | None
    endpoint_id: str | None
    outcome_type: str
    value: str | bool | int | float
    occurred_at: dt.datetime
    received_at: dt.datetime
    attributes: dict[str, Any] | None
    key_id: str | None
    flushed: bool


class OutcomeList(BaseModel):
    outcomes: list[StoredOutcome]


class PredictionWithOutcomes(BaseModel):
    """A row of the `predictions` view and every outcome event of its record_id."""

    prediction: dict[str, Any]
    outcomes: list[StoredOutcome]


class ErrorBody(BaseModel):
    type: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody


class KeyCreate(BaseModel):
    """A new API key's name and scopes."""

    # an unknown field is an error: `expires_at` used to be dropped, leaving a key that never expires
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, description="Who or what uses the key.")
    scopes: list[Literal["outcomes:write", "read", "admin"]] = Field(
        min_length=1, description="outcomes:write, read and/or admin."
    )


class KeyInfo(BaseModel):
    """An API key without its secret."""

    id: str
    name: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None


class KeyCreated(BaseModel):
    """A key just created: `token` is shown this once and never stored."""

    key: KeyInfo
    token: str


class KeyListing(BaseModel):
    keys: list[KeyInfo]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Any]
