"""DuckDB views over the tables: `connect(root)` gives a stateless in-memory connection with them all.

Every view lives in the registry below with a docstring saying what a row is. Views over Delta
tables read a snapshot taken when the connection is opened (call `refresh(con, root)` to see newer
commits); a missing table gives an empty view with the right columns, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from service.errors import StorageError
from storage.commit import open_table
from storage.layout import Layout
from storage.policies import Policy, load_policies
from storage.schemas import TABLES


@dataclass(frozen=True)
class ViewContext(Layout):
    """What a view's `create` callback sees: the root's layout (inherited) and the join policies in force.

    It is a Layout, so callbacks written as `create(con, layout: Layout)` keep working unchanged.
    """

    policies: tuple[Policy, ...] = ()

    @classmethod
    def of(cls, layout: Layout) -> ViewContext:
        """`layout` itself when it is a ViewContext, else one with the policies declared under its root."""
        if isinstance(layout, ViewContext):
            return layout
        return cls(layout.root, tuple(load_policies(layout.root)))


@dataclass(frozen=True)
class ViewSpec:
    """One view of the registry: its name, what a row is, and how to create it."""

    name: str
    doc: str
    create: Callable[[duckdb.DuckDBPyConnection, Layout], None]
    """Called with a ViewContext by `refresh`; given a bare Layout, views read the root's policies."""


def quote_ident(name: str) -> str:
    """Quote an SQL identifier that comes from code or validated config (never from a request)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal that comes from code or validated config (never from a request)."""
    return "'" + value.replace("'", "''") + "'"


def _table_source(table: DeltaTable | None, schema: pa.Schema) -> object:
    if table is None:
        return schema.empty_table()
    # Filters and projections are pushed down into the dataset (NOTES.md, DuckDB section).
    return table.to_pyarrow_dataset()


def _delta_view(table_name: str) -> Callable[[duckdb.DuckDBPyConnection, Layout], None]:
    def create(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
        source = _table_source(open_table(layout.table(table_name)), TABLES[table_name])
        raw = f"_delta_{table_name}"
        con.register(raw, source)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident(table_name)} AS SELECT * FROM {raw}")

    return create


VIEWS: list[ViewSpec] = [
    ViewSpec(
        "predictions",
        "One row per predicted record (a batch query gives one row per item), as ingested.",
        _delta_view("predictions"),
    ),
    ViewSpec(
        "quarantine",
        "One row per input line that was not valid JSON or not a parsable query event.",
        _delta_view("quarantine"),
    ),
]
"""The registry. Other storage modules append their views here (outcomes, evaluation)."""


def register_view(spec: ViewSpec) -> None:
    """Add a view to the registry (done at import time by the modules that define views)."""
    VIEWS[:] = [v for v in VIEWS if v.name != spec.name] + [spec]


def refresh(
    con: duckdb.DuckDBPyConnection, root: Path | str, *, policies: Sequence[Policy] | None = None
) -> None:
    """(Re)create every registered view over the latest committed snapshot of each table.

    `policies` None means the `[[policies]]` declared in `<root>/hindsight.toml`.
    """
    chosen = load_policies(root) if policies is None else policies
    context = ViewContext(Path(root), tuple(chosen))
    for spec in VIEWS:
        spec.create(con, context)


def connect(root: Path | str, *, policies: Sequence[Policy] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every registered view over the tables under `root`.

    `policies` are the outcome join policies the evaluation views use; None reads them from
    `<root>/hindsight.toml` (so notebooks and `hindsight sql` see the declared policies).
    """
    chosen = load_policies(root) if policies is None else list(policies)
    try:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        refresh(con, root, policies=chosen)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open views over {root}: {exc}") from exc
    return con
