"""Storage: the Delta tables under the root, their commit protocol, the outcome store and DuckDB views."""

import storage.evaluation_views  # registers labelled, unmatched_outcomes, label_coverage
import storage.outcome_views  # noqa: F401  (registers the outcomes views)
from storage.views import connect

__all__ = ["connect"]
