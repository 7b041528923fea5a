"""Where files go: the only module that knows the layout of everything under the root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from service.errors import ConfigError

_UNSAFE_ROOT_CHARACTERS = "%[]{}*?"


@dataclass(frozen=True)
class Layout:
    """Paths of every table, database and log under one hindsight root."""

    root: Path

    def __post_init__(self) -> None:
        # delta-rs turns the root into an object-store URL (it decodes `%XX`, panics on `[`) and
        # DuckDB's read_parquet treats `*?[]{}` as glob patterns: such roots cannot work reliably.
        bad = sorted(set(str(self.root)) & set(_UNSAFE_ROOT_CHARACTERS))
        if bad:
            raise ConfigError(
                f"the root {str(self.root)!r} contains {' '.join(bad)}: choose a folder path without "
                f"any of {_UNSAFE_ROOT_CHARACTERS}"
            )

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> Path:
        """The folder of the Delta table called `name` (predictions, quarantine, outcomes)."""
        return self.tables / name

    @property
    def predictions(self) -> Path:
        return self.table("predictions")

    @property
    def quarantine(self) -> Path:
        return self.table("quarantine")

    @property
    def outcomes(self) -> Path:
        return self.table("outcomes")

    @property
    def state(self) -> Path:
        """Small local databases: the outcome intake log, API keys."""
        return self.root / "state"

    @property
    def intake_db(self) -> Path:
        return self.state / "outcomes-intake.sqlite"

    @property
    def keys_db(self) -> Path:
        return self.state / "keys.sqlite"

    @property
    def locks(self) -> Path:
        """Advisory lock files, one per table: writers on this host serialise commits through them."""
        return self.root / "locks"

    def lock_file(self, table_name: str) -> Path:
        return self.locks / f"{table_name}.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config_file(self) -> Path:
        return self.root / "hindsight.toml"


def writable_hint(path: Path) -> str:
    """ " (the folder ... is not writable)" when the nearest existing folder of `path` is read-only, else "":
    SQLite says only "unable to open database file" or "attempt to write a readonly database"."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return "" if os.access(folder, os.W_OK) else f" (the folder {folder} is not writable)"
