"""Storage: the Delta tables under the root, their commit protocol, the outcome store and DuckDB views."""

from storage.views import connect

__all__ = ["connect"]
