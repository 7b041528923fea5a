"""The plain values the API is built from (the CLI makes them from the settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storage.policies import Policy


@dataclass(frozen=True)
class ApiConfig:
    """Everything `create_app` needs; api/ never sees the Settings object (imports flow one way)."""

    root: Path
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_items: int = 10_000
    flush_interval: float = 1.0
    group_commit_ms: float = 2.0
    intake_commit: Literal["loop", "thread"] = "loop"  # who commits single outcomes (docs/design.md)
    audit_calls: bool = False
    logs_dir: Path | None = None
    logging_config: Path | None = None
    policies: tuple[Policy, ...] | None = None  # outcome join policies; None: <root>/hindsight.toml
    immature_threshold: float = 0.5  # settings eval.immature_threshold, for GET /v1/metrics

    @property
    def audit_dir(self) -> Path:
        """Where the default audit handlers write: `logs_dir`, else `<root>/logs`."""
        return self.logs_dir if self.logs_dir is not None else self.root / "logs"
