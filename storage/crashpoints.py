"""Test hook for crash tests: kill the process at a named durable step when HINDSIGHT_CRASH_AT names it.

Steps are named `<protocol>.<step>` (for example `commit.before`, `commit.after`). The environment
variable is read on every call so a test can set it per subprocess; in production it is unset and
the check is one dictionary lookup.
"""

from __future__ import annotations

import os

ENV_VAR = "HINDSIGHT_CRASH_AT"


def crash_point(step: str) -> None:
    """Die at once, as kill -9 would, when HINDSIGHT_CRASH_AT equals `step`.

    `HINDSIGHT_CRASH_AT=step@N` dies on the N-th time the step is reached (1-based), so a test can
    crash in the middle of a run rather than at its first commit.
    """
    wanted = os.environ.get(ENV_VAR)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != step:
        return
    if nth:
        _counts[step] = _counts.get(step, 0) + 1
        if _counts[step] < int(nth):
            return
    os._exit(137)  # no cleanup, no flush: what SIGKILL leaves behind


_counts: dict[str, int] = {}
