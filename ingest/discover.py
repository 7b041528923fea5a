"""Which files to read: find DSS query logs under the given paths, rotated ones oldest first."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from service.errors import SourceError

_DASHED = r"\d{4}-\d{2}(?:-\d{2}(?:[-_]\d{2}){0,3})?(?:-[AaPp][Mm])?"  # log4j: 2026-11, 2026-11-25-13, -AM
_NAME = re.compile(
    r"^(?P<base>.+\.log)"
    r"(?:\.(?P<dot>" + _DASHED + r"|\d{8}(?:[-_]?\d{2}){0,2})"  # .2026-11-25, .20261125[HH[mm]]
    r"|-(?P<dash>" + _DASHED + r"|\d{8}(?:[-_]?\d{2}){0,3}(?:-\d{9,11})?)"  # dateext: -20261125[HHmmss][-%s]
    r"|\.(?P<index>\d+))?"
    r"(?P<gz>\.gz)?\Z",
    re.DOTALL,
)
"""`X.log`, `X.log.N` and dated names, each optionally gzipped: log4j's DailyRollingFileAppender
(`X.log.YYYY-MM-DD`, also monthly `.YYYY-MM`, weekly `.YYYY-ww`, half-daily `.YYYY-MM-DD-AM`, hourly
`.YYYY-MM-DD-HH` and by the minute) and logrotate's dateext (`X.log-YYYYMMDD`, with an hour, minute and
second, and `-%s` seconds since the epoch after the date). Names of a rotated file not found lose its
unread lines without a word: dateext names, then the monthly, weekly, half-daily and to-the-second ones
(review findings). After a dot, digits alone are a date only in the 8, 10 and 12-digit forms read
before: `X.log.10`, `X.log.202611` and `X.log.20261125123456` are numbered. DOTALL and an end-of-text
anchor: a name holding a newline is still a name."""

SETTLE_SECONDS = 5.0
"""A rotated plain file unmodified for this long is taken as complete (see LogFile.settled)."""


@dataclass(frozen=True)
class LogFile:
    """One log file found on disk and where it sits in its rotation chain."""

    path: Path
    base: Path
    """The live file this one was rotated from (`.../queries.log`)."""
    rotation: tuple[int, str, int]
    """Sort key inside the chain, oldest first: dated (by date), numbered (N down to 1), then live."""
    gzipped: bool

    @property
    def live(self) -> bool:
        """True for the file a logger may still be appending to (`X.log`, not rotated, not gzipped)."""
        return self.rotation[0] == 2 and not self.gzipped

    def settled(self, *, now: float | None = None) -> bool:
        """True when the file will not grow any more, so an unterminated last line is complete.

        A rotated plain file written to within the last SETTLE_SECONDS may still be growing: logrotate's
        copytruncate copies the live file into `X.log.1` while we scan, and reading the copy's cut
        line as complete would split one record into two fragments.
        """
        if self.live:
            return False
        if self.gzipped:
            return True
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return True  # gone: nothing more will be read from it anyway
        return (time.time() if now is None else now) - mtime >= SETTLE_SECONDS


def classify(path: Path) -> LogFile | None:
    """The LogFile for `path`, or None when its name is not a query-log name (`*.tmp` never is)."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    base = path.with_name(match["base"])
    date = match["dot"] or match["dash"]
    if date:
        # 2026-11-25 and 20261125 sort together; a morning before its afternoon
        half = {"am": "0", "pm": "1"}.get(date[-2:].lower(), "")
        rotation = (0, re.sub(r"\D", "", date) + half, 0)
    elif match["index"]:
        rotation = (1, "", -int(match["index"]))
    else:
        rotation = (2, "", 0)
    return LogFile(path=path, base=base, rotation=rotation, gzipped=bool(match["gz"]))


@dataclass(frozen=True)
class Listing:
    """The log files under the given paths, and the sub-folders that could not be read (with why)."""

    logs: list[LogFile]
    skipped: list[tuple[Path, str]]


def discover(paths: list[Path]) -> list[LogFile]:
    """Every log file under `paths` (files, or folders searched recursively), in reading order; see
    `list_logs`, which also says which sub-folders could not be read."""
    return list_logs(paths).logs


def list_logs(paths: list[Path]) -> Listing:
    """Every log file under `paths` (files, or folders searched recursively), in reading order.

    Chains are ordered by the path of their live file; inside a chain rotated files come first,
    oldest first (`X.log.2026-11-24`, `X.log.10` ... `X.log.1`, then `X.log`). A file named explicitly
    is taken even when its name does not look like a log. Raises SourceError for a missing path or a
    given folder that cannot be read; a sub-folder that cannot be read is skipped and listed in
    `skipped` (one such folder used to fail every scan of the readable ones; review finding).
    """
    found: dict[Path, LogFile] = {}
    skipped: list[tuple[Path, str]] = []
    for given in paths:
        try:
            is_dir = given.is_dir()
            exists = is_dir or given.exists()
        except OSError as exc:
            raise SourceError(f"cannot access {given}: {exc.strerror}") from exc
        if not exists:
            raise SourceError(f"no such file or folder: {given}")
        if not is_dir and not given.is_file():
            # a FIFO or a device: opening it to look for gzip's magic bytes waited forever
            raise SourceError(f"{given} is not a regular file or a folder")
        if is_dir:
            for log in _walk(given, skipped):
                found.setdefault(log.path, log)
        else:
            log = classify(given) or LogFile(path=given, base=given, rotation=(2, "", 0), gzipped=False)
            found.setdefault(given, log)
            if log.live and log.base == given:
                # A live log named alone brings its rotated files: the lines written between a scan and a
                # rotation are only in `X.log.1` (or a dated or gzipped name) afterwards, and following
                # `X.log` alone lost them (review finding).
                for sibling in _rotated_siblings(given, skipped):
                    found.setdefault(sibling.path, sibling)
    logs = [
        replace(log, gzipped=True) if not log.gzipped and _gzip_magic(log.path) else log
        for log in found.values()
    ]
    ordered = sorted(logs, key=lambda f: (str(f.base), f.rotation, f.gzipped, str(f.path)))
    return Listing(ordered, skipped)


def in_scope(path: Path, given: list[Path]) -> bool:
    """Whether listing `given` would find a file at `path`: a given file, a file under a given folder, or
    a rotated file of a given live log (next to it, or to the file it links to)."""
    if any(path == g or g in path.parents for g in given):
        return True
    log = classify(path)
    if log is None or log.rotation[0] == 2:
        return False
    return any(log.base in (g, _real(g)) for g in given)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _rotated_siblings(live: Path, skipped: list[tuple[Path, str]]) -> list[LogFile]:
    """The rotated files of the live log `live` (`X.log.1`, `X.log-20261125.gz`, ...): in its folder and,
    when `live` is a symbolic link, next to the file it links to, where the logger rotates them (they
    were looked for beside the link only, and the lines written before each rotation were lost; review
    finding). Each is put in `live`'s chain, to be read before it. A folder that cannot be listed (mode
    0711: its files can be opened, not listed) goes to `skipped`, and `live` is still read."""
    siblings: dict[Path, LogFile] = {}
    real = _real(live)
    for target in dict.fromkeys([live, real]):
        try:
            names = os.listdir(target.parent)
        except OSError as exc:
            skipped.append((target.parent, exc.strerror or str(exc)))
            continue
        for name in names:
            log = classify(target.parent / name)
            if log is not None and log.base == target and log.path not in (live, real) and log.path.is_file():
                siblings.setdefault(log.path, replace(log, base=live))
    return list(siblings.values())


def _gzip_magic(path: Path) -> bool:
    """True when the file starts with gzip's magic bytes whatever its name (`queries.log-20261125.gz`
    named on the command line, a rotated `X.log.1` compressed without renaming). A plain log never
    starts so: 0x8b cannot follow 0x1f in UTF-8 text. Unreadable: False (reading it reports why)."""
    try:
        with path.open("rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _walk(folder: Path, skipped: list[tuple[Path, str]]) -> list[LogFile]:
    logs: list[LogFile] = []

    def fail(exc: OSError) -> None:
        if exc.filename is None or Path(exc.filename) == folder:
            raise SourceError(f"cannot read folder {exc.filename or folder}: {exc.strerror}") from exc
        skipped.append((Path(exc.filename), exc.strerror or str(exc)))

    # Symlinked folders are followed (run/api-queries -> /bigdisk/api-queries was skipped without a
    # word), each real folder once, so a link back up the tree cannot loop.
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            log = classify(path)
            if log is not None and path.is_file():
                logs.append(log)
    return logs
