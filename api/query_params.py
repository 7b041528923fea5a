"""Query parameters of the read routes: an unknown or repeated one is a 422, never silently ignored."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from service.errors import InputError


def check_query(request: Request, known: Callable[[str], bool], use: str) -> None:
    """Refuse parameters `known` does not accept (`use` says which are) and parameters given twice.

    FastAPI ignores undeclared parameters and keeps the last of repeated ones: `as-of=...` (the CLI's
    spelling) answered as of now, and `by=day&by=week` or `record_id=a&record_id=b` answered for the
    last value alone. A typo or a doubled parameter must not change the answer without a word
    (docs/design.md, Reads)."""
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = list(dict.fromkeys(name for name in names if not known(name)))
    if unknown:
        raise InputError(f"unknown query parameter(s) {unknown}; use {use}", details={"unknown": unknown})
    repeated = list(dict.fromkeys(name for name in names if names.count(name) > 1))
    if repeated:
        raise InputError(
            f"query parameter(s) {repeated} given more than once; give each once",
            details={"repeated": repeated},
        )
