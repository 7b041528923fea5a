"""The one typed settings object, read once at the edge from flags, HINDSIGHT_* env and hindsight.toml.

Precedence, highest first: explicit overrides (command-line flags), environment variables
(`HINDSIGHT_ROOT`, `HINDSIGHT_KAFKA__BOOTSTRAP`, ...), the TOML file (`--config FILE`, else
`<root>/hindsight.toml` when it exists), then the defaults below. Library code never sees this
object: the CLI and the API factory pass plain values down.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("./hindsight-data")
CONFIG_FILE_NAME = "hindsight.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true as 1: `max_line_bytes = true` quarantined every line (review finding)
        field = cls.model_fields[info.field_name or ""]
        if isinstance(value, bool) and field.annotation in (int, float):
            raise ValueError(f"a number is needed, not {str(value).lower()}")
        return value


class IngestSettings(_Section):
    """How query logs are read and parsed."""

    source_tz: str = Field(
        "UTC",
        description="IANA zone of envelope-A timestamps (their trailing Z is literal); "
        "explicit offsets in envelopes B and C always win.",
    )
    max_line_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Lines longer than this are quarantined without being held whole in memory (at least "
        "64 KiB: a line quarantined is never read again, and `max_line_bytes = 16` quarantined every line).",
    )
    batch_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="How many bytes of input are parsed and committed together in one Delta commit.",
    )
    follow_interval: float = Field(
        5.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds between scans of the log folders with --follow (at most a day).",
    )
    parse_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="Pieces of a batch parsed at the same time. One parse already uses two threads (the C "
        "parser) and every core (DuckDB, for the lines left to it): on 2 cores more than 1 was measured "
        "between 5% faster and 25% slower, for about 50 MiB of memory per extra thread.",
    )


class KafkaSettings(_Section):
    """Where and how `hindsight ingest kafka` consumes."""

    bootstrap: str | None = Field(None, description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
    topic: str | None = Field(None, description="Topic holding the DSS query log lines.")
    group: str = Field("hindsight", description="Consumer group id; processes in one group share partitions.")

    @field_validator("bootstrap", "topic", "group", mode="before")
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty")
        return value

    session_timeout_ms: int = Field(
        10000, gt=0, description="librdkafka session.timeout.ms; lower makes group joins faster."
    )
    heartbeat_interval_ms: int = Field(
        1000,
        gt=0,
        description="librdkafka heartbeat.interval.ms; keep it under a third of the session timeout.",
    )
    batch_max_messages: int = Field(
        100_000, gt=0, description="Most messages gathered before one Delta commit."
    )
    batch_max_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest a batch waits before it is committed, in seconds (at most an hour).",
    )
    batch_max_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Most message bytes gathered before one Delta commit (bounds memory for large messages).",
    )
    source_epoch: int = Field(
        0,
        ge=0,
        description="The topic's incarnation: after it was deleted and recreated (offsets restart at 0), set "
        "one higher so its partitions are read afresh under new positions; the rows already stored stay.",
    )
    unavailable_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="How long the broker may stay unreachable (at start or mid-run) before the command "
        "gives up with BrokerUnavailable; --until-idle shortens it when smaller.",
    )
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka options passed through as is (security.protocol, sasl.*, ssl.*, ...).",
    )


class ApiSettings(_Section):
    """The outcomes REST API served by `hindsight serve`."""

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 for every interface).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        le=512 * 1024 * 1024,  # a body is held, parsed and stored in memory; bulk files: `outcomes import`
        description="Largest request body accepted (413 above); at most 512 MiB.",
    )
    max_batch_items: int = Field(10_000, gt=0, description="Most outcomes in one request.")
    flush_interval: float = Field(
        1.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds between moves of intake-log outcomes into the Delta table (at most an hour).",
    )
    group_commit_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="How long the intake log's writer thread waits to gather concurrent writes into one "
        "fsync.",
    )
    intake_commit: Literal["loop", "thread"] = Field(
        "loop",
        description="Who commits single outcomes and small requests to the intake log: loop (the event "
        "loop, one commit per group of requests arriving within a few loop iterations; best on local "
        "disks) or thread (the writer thread, which lingers group_commit_ms; for slow fsync such as "
        "network storage). Batches always use the thread.",
    )
    audit_calls: bool = Field(False, description="Log every call to hindsight.audit.calls.")
    logs_dir: Path | None = Field(None, description="Folder for audit logs; default <root>/logs.")
    logging_config: Path | None = Field(
        None,
        description="JSON file with a logging.config dictConfig that replaces the default audit handlers "
        "(JSON lines in <logs_dir>/audit-<name>.log); formatter class api.audit.JsonFormatter.",
    )

    @field_validator("logs_dir", "logging_config", mode="before")
    @classmethod
    def _paths_not_empty(cls, value: Any, info: ValidationInfo) -> Any:
        return _not_empty_path(value, f"api.{info.field_name}")

    @field_validator("host", mode="before")
    @classmethod
    def _host_not_empty(cls, value: Any) -> Any:
        # uvicorn takes "" for every interface: HINDSIGHT_API__HOST= (an unset shell variable) opened the
        # API to the network (review finding); every interface is asked for by name
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give an interface (127.0.0.1, or 0.0.0.0 for every one)")
        return value


class PolicySettings(_Section):
    """How outcomes of one endpoint become labels (see docs/design.md, join policies)."""

    service_id: str = Field(description="Service the policy applies to.")
    endpoint_id: str = Field(description="Endpoint the policy applies to.")
    outcome_type: str = Field("label", description="Which named outcome this policy turns into labels.")
    join_on: str | list[str] = Field(
        "record_id",
        description="record_id, context.<name> or features.<name>; a list joins on all of them.",
    )
    attribution: Literal["last_before", "all_within"] = Field(
        "last_before",
        description="last_before: the last prediction for the key before occurred_at; "
        "all_within: every prediction for the key inside the window.",
    )
    window: str | None = Field(None, description="Longest occurred_at - ts that still counts, e.g. 90d, 12h.")
    positive: str | None = Field(None, description='The positive class for binary metrics (1 reads as "1").')
    maturity: str | None = Field(
        None, description="After this long with no outcome, the implicit label applies."
    )
    implicit_value: str | None = Field(
        None, description="The label given at maturity; omit it to leave such predictions pending."
    )

    @field_validator("positive", "implicit_value", mode="before")
    @classmethod
    def _class_as_text(cls, value: Any) -> Any:
        # labels are text compared by text or by number (docs/design.md): `positive = 1` is the class "1",
        # as an outcome value 1 is; it was refused as "Input should be a valid string" (review finding)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float) and math.isfinite(value):
            return str(value)
        return value

    @field_validator("window", "maturity", mode="before")
    @classmethod
    def _duration_as_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'a duration is a number and a unit in quotes, e.g. "{value}d"; got {value}')
        return value


class EvalSettings(_Section):
    """How metrics are computed."""

    immature_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A cohort whose share of pending labels is above this is immature.",
    )


class Settings(BaseSettings):
    """Every setting of hindsight; each field has a description (a test checks it)."""

    model_config = SettingsConfigDict(
        env_prefix="HINDSIGHT_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    root: Path = Field(DEFAULT_ROOT, description="Folder holding the tables, intake log, keys and logs.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Level of the operational log on stderr (DEBUG, INFO, WARNING, ERROR, CRITICAL)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("root", mode="before")
    @classmethod
    def _root_not_empty(cls, value: Any) -> Any:
        return _not_empty_path(value, "root")

    ingest: IngestSettings = Field(default_factory=IngestSettings, description="File and line parsing.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka ingestion.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="The REST API.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Metrics.")
    policies: list[PolicySettings] = Field(
        default_factory=list,
        description="Outcome join policies, one per endpoint ([[policies]] tables).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags beat env; the TOML file is merged in load_settings() below the env.
        return (init_settings, env_settings)


def _not_empty_path(value: Any, where: str) -> Any:
    """`value` unless it is an empty or blank path: an empty HINDSIGHT_ROOT (an unset shell variable) or
    `logs_dir = ""` used to mean the current folder."""
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{where} is an empty path; give a folder or file name")
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SettingsLoadError(ValueError):
    """The settings cannot be loaded; `service.cli` turns it into a ConfigError (this module imports
    nothing of the project, so it cannot raise one itself)."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: a file saved by a Windows editor starts with a byte-order mark, which TOML refused as
        # "Invalid statement (at line 1, column 1)" (review finding)
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise SettingsLoadError(
                f"config file {path} links to {path.readlink()}, which does not exist"
            ) from exc
        raise SettingsLoadError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsLoadError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SettingsLoadError(
            f"config file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    except OSError as exc:
        raise SettingsLoadError(f"cannot read config file {path}: {exc.strerror}") from exc


def _env_values() -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Values given by HINDSIGHT_* variables, nested on '__', so they can beat the TOML file; and the
    variable each came from, for error messages.

    A variable whose first part names no setting is not ours (HINDSIGHT_KEY holding an API key for curl
    broke every command with "key: Extra inputs are not permitted", review finding): it is skipped with a
    warning, which also shows a misspelt name. Inside a section an unknown name is an error, as in the file.
    """
    values: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for name, raw in os.environ.items():
        if not name.upper().startswith("HINDSIGHT_") or name.upper() == "HINDSIGHT_CRASH_AT":
            continue
        parts = name[len("HINDSIGHT_") :].lower().split("__")
        if parts[0] not in Settings.model_fields:
            log.warning("ignoring environment variable %s: not a hindsight setting", name)
            continue
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = raw
        names[tuple(parts)] = name
    return values, names


def _nested(parts: tuple[str, ...]) -> dict[str, Any]:
    """{'a': {'b': True}} for ('a', 'b'): where one variable put its value."""
    node: dict[str, Any] = {}
    top = node
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = True
    return top


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model holding the value at `loc` (the parent of its last part), if any."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = field.annotation
        args = getattr(inner, "__args__", ())
        candidates = [inner, *args]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


_PATH_SETTINGS = (("root",), ("api", "logs_dir"), ("api", "logging_config"))
"""The settings that are paths: a relative one in a file is relative to the file's folder."""


def _relative_to(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`values` with its relative paths made relative to `folder`: `logs_dir = "audit-logs"` in
    <root>/hindsight.toml meant a folder under the current one, wherever a command ran (review finding)."""
    for where in _PATH_SETTINGS:
        node: Any = values
        for part in where[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(where[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value.strip():
            # `~/x` is the home folder's, as a shell would read it (it was a folder named `~`)
            path = Path(value).expanduser()
            node[where[-1]] = str(path if path.is_absolute() else folder / path)
    return values


def _given(values: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Whether a source's values hold something at `loc` (keys of tables, indexes of arrays)."""
    node: Any = values
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        return False
    return True


def _problem(err: Any, sources: list[tuple[str, dict[str, Any]]]) -> str:
    """One validation error as `where (from what): what is wrong`; the first source holding it is named."""
    loc: tuple[int | str, ...] = tuple(err["loc"])
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))
    origin = next((f" ({label})" for label, values in sources if _given(values, loc)), "")
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        message = "unknown setting" + (f"; known: {', '.join(model.model_fields)}" if model else "")
    return f"{where}{origin}: {message}"


def load_settings(
    *, root: Path | None = None, config: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings: overrides > env > TOML (config, else <root>/hindsight.toml) > defaults."""
    env, env_names = _env_values()
    chosen_root = root or (Path(env["root"]) if isinstance(env.get("root"), str) else DEFAULT_ROOT)
    file_values: dict[str, Any] = {}
    path = config if config is not None else chosen_root / CONFIG_FILE_NAME
    if config is not None or path.is_file() or path.is_symlink():
        file_values = _relative_to(_read_toml(path), path.parent)
    merged = _deep_merge(_deep_merge(file_values, env), overrides or {})
    merged["root"] = root if root is not None else merged.get("root", chosen_root)
    try:
        # Env is already merged above; validate the merged dict without re-reading the env.
        return Settings.model_validate(merged)
    except ValidationError as exc:
        sources = [("command line", overrides or {})]
        sources += [(f"environment variable {name}", _nested(parts)) for parts, name in env_names.items()]
        sources.append((f"in {path}", file_values))
        problems = "; ".join(_problem(err, sources) for err in exc.errors())
        raise SettingsLoadError(f"invalid settings: {problems}", exc.errors(include_url=False)) from exc
