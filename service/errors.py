"""The one error tree of hindsight; every layer raises these, translated from third-party errors.

    HindsightError                      base: message, details, http status, retryable
    ├── ConfigError                     bad setting, config file or command-line value (exit 2)
    ├── InputError                      bad user input to a command or an endpoint (422)
    │   ├── InvalidOutcome              an outcome that fails validation (422)
    │   ├── PayloadTooLarge             request body over the size limit (413)
    │   ├── UnsupportedMediaType        wrong Content-Type (415)
    │   └── IdempotencyConflict         same outcome_id, different body (409)
    ├── NotFound                        a record, key or object that does not exist (404)
    ├── AuthError                       missing or wrong API key (401)
    │   └── Forbidden                   key lacks the scope (403)
    ├── SourceError                     an input path or stream that cannot be read
    │   └── BrokerUnavailable           Kafka cannot be reached (retryable)
    ├── StorageError                    a table, file or database cannot be written or read
    │   ├── CommitConflict              a concurrent writer won; retry may help
    │   └── FencedWriter                another process now owns this source position
    ├── QueryError                      a SQL query failed (bad SQL from the user, 400)
    └── NotReady                        the service cannot accept writes now (503)
        └── WritesStopped               fail-stop after a storage failure: only a restart helps (503)

No module here imports anything of the project; every other package may import this one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HindsightError(Exception):
    """Base of every error hindsight raises on purpose."""

    status_code: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def type_name(self) -> str:
        """The stable name clients see in the `error.type` field."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The one error shape, used over HTTP and by `--format json` on the CLI."""
        return {"error": {"type": self.type_name, "message": self.message, "details": self.details}}


class ConfigError(HindsightError):
    """A setting, a config file or a command-line value is wrong; fix it and run again."""

    status_code = 500
    exit_code = 2


class InputError(HindsightError):
    """Input given by the user is invalid."""

    status_code = 422
    exit_code = 2


class InvalidOutcome(InputError):
    """An outcome failed validation; details list each bad field with its item index."""

    status_code = 422


class PayloadTooLarge(InputError):
    """A request body is over the configured size limit."""

    status_code = 413


class UnsupportedMediaType(InputError):
    """A request has a Content-Type the endpoint does not take."""

    status_code = 415


class IdempotencyConflict(InputError):
    """An outcome_id was already stored with a different body; nothing was stored."""

    status_code = 409


class NotFound(HindsightError):
    """The thing asked for does not exist."""

    status_code = 404
    exit_code = 2  # on the command line, a name given that names nothing is bad input (as documented)


class AuthError(HindsightError):
    """No API key, or a key that is unknown or revoked."""

    status_code = 401


class Forbidden(AuthError):
    """The API key is valid but lacks the scope the endpoint needs."""

    status_code = 403


class SourceError(HindsightError):
    """An input path or stream cannot be read."""

    status_code = 400


class BrokerUnavailable(SourceError):
    """The Kafka broker cannot be reached; retrying later can help."""

    status_code = 503
    retryable = True


class StorageError(HindsightError):
    """A table, file or database under the root cannot be written or read."""

    status_code = 500


class CommitConflict(StorageError):
    """A concurrent writer committed first; the commit can be retried."""

    retryable = True


class FencedWriter(StorageError):
    """Another writer has moved this source's position past ours: this writer must stop."""

    status_code = 409


class QueryError(HindsightError):
    """A SQL query over the views failed."""

    status_code = 400


class NotReady(HindsightError):
    """The service stopped accepting writes (fail-stop after a storage failure) or is starting."""

    status_code = 503
    retryable = True


class WritesStopped(NotReady):
    """The intake log stopped accepting writes after a storage failure (fail-stop): a restart is needed.

    Clients see the type `NotReady` as before, without `Retry-After`: the header said to retry in a
    second, which cannot help (review finding)."""

    retryable = False

    @property
    def type_name(self) -> str:
        return "NotReady"
