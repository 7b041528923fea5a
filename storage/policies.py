"""Outcome join policies: how the outcomes of one endpoint become labels, validated from hindsight.toml."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ConfigError
from storage.layout import Layout

ATTRIBUTIONS = ("last_before", "all_within")
DEFAULT_OUTCOME_TYPE = "label"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = dt.timedelta(days=36_500)
MAX_DURATION_TEXT = "100 years (36500d)"
"""The longest window or maturity: far beyond any real label delay, far inside every type it passes."""
# A join path: record_id, or context./features. followed by dotted names; the characters are limited so
# that a path can be turned into a JSON pointer and an SQL literal without any escaping ambiguity.
_PATH = re.compile(r"^(context|features)(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)+\Z")
_FIELDS = {
    "service_id",
    "endpoint_id",
    "outcome_type",
    "join_on",
    "attribution",
    "window",
    "positive",
    "maturity",
    "implicit_value",
}


@dataclass(frozen=True)
class Policy:
    """How outcomes of `outcome_type` become labels of the predictions of one endpoint."""

    service_id: str
    endpoint_id: str
    outcome_type: str = DEFAULT_OUTCOME_TYPE
    join_on: tuple[str, ...] = ("record_id",)
    attribution: str = "last_before"
    window: dt.timedelta | None = None
    positive: str | None = None
    maturity: dt.timedelta | None = None
    implicit_value: str | None = None

    @property
    def joins_on_record_id(self) -> bool:
        """True when predictions are matched by record_id only (attribution then plays no part)."""
        return self.join_on == ("record_id",)


def parse_duration(text: str, *, field: str, where: str = "policy") -> dt.timedelta:
    """A duration such as `90d`, `12h`, `30m`, `45s` or `2w` (one number, one unit), up to 100 years."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"{where}: {field}={text!r} is not a duration: "
            "write a number and a unit s, m, h, d or w (e.g. 90d)"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: {field}={text!r} must be longer than zero")
    # Checked before building the timedelta: a huge number would overflow it (OverflowError) or, below
    # that, the epoch microseconds and INTERVAL the label join computes with (storage/label_sql.py).
    if seconds > MAX_DURATION.total_seconds():
        raise ConfigError(f"{where}: {field}={text!r} is too long: at most {MAX_DURATION_TEXT}")
    duration = dt.timedelta(seconds=seconds)
    if not duration:
        # "0.0000001s" passed as more than zero, became a zero timedelta, and the views refused it later,
        # on every /v1/metrics call of a server that had started fine (review finding)
        raise ConfigError(f"{where}: {field}={text!r} is shorter than a microsecond, the join's resolution")
    return duration


def _text(raw: Mapping[str, Any], field: str, where: str, *, required: bool = False) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise ConfigError(f"{where}: {field} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {field} must be a non-empty string, got {value!r}")
    if value != value.strip() and field in _EXACT:
        # compared as text with ids and labels: "fraud " matched no endpoint, silently (review finding)
        raise ConfigError(f"{where}: {field} {value!r} has spaces at its ends; ids and labels match exactly")
    return value


_EXACT = frozenset({"service_id", "endpoint_id", "outcome_type", "positive", "implicit_value"})


def _join_on(raw: Any, where: str) -> tuple[str, ...]:
    paths = [raw] if isinstance(raw, str) else raw
    if not isinstance(paths, list | tuple) or not paths or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{where}: join_on must be a path or a non-empty list of paths, got {raw!r}")
    for path in paths:
        if path != "record_id" and not _PATH.match(path):
            raise ConfigError(
                f"{where}: join_on path {path!r} is not valid: use record_id, context.<name> or "
                "features.<name> (names of letters, digits, _ and -, dotted for nested objects)"
            )
    if "record_id" in paths and len(paths) > 1:
        raise ConfigError(f"{where}: record_id identifies one prediction; do not combine it with other paths")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{where}: join_on lists a path twice: {paths}")
    return tuple(sorted(paths))


def policy_from_mapping(raw: Mapping[str, Any], *, where: str = "policy") -> Policy:
    """Validate one `[[policies]]` table (or the settings' dict form of it) into a Policy."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table, got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
        )
    service_id = _text(raw, "service_id", where, required=True)
    endpoint_id = _text(raw, "endpoint_id", where, required=True)
    assert service_id is not None and endpoint_id is not None
    where = f"{where} ({service_id}/{endpoint_id})"
    attribution = raw.get("attribution")
    if attribution is None:  # not `or`: an empty attribution is an error, as in hindsight.toml
        attribution = "last_before"
    if attribution not in ATTRIBUTIONS:
        raise ConfigError(
            f"{where}: attribution must be one of {', '.join(ATTRIBUTIONS)}, got {attribution!r}"
        )
    window_text = _text(raw, "window", where)
    maturity_text = _text(raw, "maturity", where)
    implicit_value = _text(raw, "implicit_value", where)
    if implicit_value is not None and maturity_text is None:
        raise ConfigError(f"{where}: implicit_value needs a maturity (after how long it applies)")
    return Policy(
        service_id=service_id,
        endpoint_id=endpoint_id,
        outcome_type=_text(raw, "outcome_type", where) or DEFAULT_OUTCOME_TYPE,
        join_on=_join_on(raw.get("join_on", "record_id"), where),
        attribution=attribution,
        window=None if window_text is None else parse_duration(window_text, field="window", where=where),
        positive=_text(raw, "positive", where),
        maturity=None
        if maturity_text is None
        else parse_duration(maturity_text, field="maturity", where=where),
        implicit_value=implicit_value,
    )


def policy_to_mapping(policy: Policy) -> dict[str, Any]:
    """The `[[policies]]` table of `policy`, without its unset fields; `policy_from_mapping` reads it back
    to an equal Policy (export manifests store the policies this way)."""
    raw: dict[str, Any] = {
        "service_id": policy.service_id,
        "endpoint_id": policy.endpoint_id,
        "outcome_type": policy.outcome_type,
        "join_on": list(policy.join_on),
        "attribution": policy.attribution,
        "window": None if policy.window is None else _duration_text(policy.window),
        "positive": policy.positive,
        "maturity": None if policy.maturity is None else _duration_text(policy.maturity),
        "implicit_value": policy.implicit_value,
    }
    return {k: v for k, v in raw.items() if v is not None}


def _duration_text(duration: dt.timedelta) -> str:
    """A duration in the `parse_duration` syntax, in seconds to the microsecond."""
    micros = duration // dt.timedelta(microseconds=1)
    whole, frac = divmod(micros, 1_000_000)
    return f"{whole}s" if not frac else f"{whole}.{frac:06d}s"


def policies_from_config(items: Sequence[Mapping[str, Any]]) -> list[Policy]:
    """Validate a list of policy tables (from the TOML file or `Settings.policies` dumped to dicts)."""
    policies = [
        policy_from_mapping({k: v for k, v in item.items() if v is not None}, where=f"policies[{i}]")
        for i, item in enumerate(items)
    ]
    seen: set[tuple[str, str, str]] = set()
    for policy in policies:
        ident = (policy.service_id, policy.endpoint_id, policy.outcome_type)
        if ident in seen:
            raise ConfigError(
                f"two policies for {policy.service_id}/{policy.endpoint_id} and outcome_type "
                f"{policy.outcome_type!r}: keep one"
            )
        seen.add(ident)
    return policies


CONFIG_SECTIONS = ("root", "log_level", "ingest", "kafka", "api", "eval", "policies")
"""The top-level names of hindsight.toml: the fields of `service.settings.Settings` (a test keeps the two
in sync; storage may not import the settings)."""


def load_policies(root: Path | str) -> list[Policy]:
    """The `[[policies]]` declared in `<root>/hindsight.toml` (none when the file does not exist)."""
    path = Layout(Path(root)).config_file
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a Windows editor's BOM too
    except FileNotFoundError:
        if path.is_symlink():  # a dangling link is a broken config, not "no config" (review finding)
            raise ConfigError(
                f"config file {path} links to {path.readlink()}, which does not exist"
            ) from None
        return []
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    # The other sections are the CLI's settings, not read here, but a name that is none of them is refused
    # as the CLI refuses it: `[[policy]]` left a notebook on the default policies, silently (review finding)
    unknown = sorted(set(document) - set(CONFIG_SECTIONS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(CONFIG_SECTIONS)} (the join policies are [[policies]] tables)"
        )
    items = document.get("policies", [])
    if not isinstance(items, list):
        raise ConfigError(f"{path}: policies must be an array of tables ([[policies]])")
    return policies_from_config(items)
