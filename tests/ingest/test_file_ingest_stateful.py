"""A Hypothesis state machine over a live log folder: appends, partial lines, rotations, gzip,
copytruncate and restarts; the predictions table always holds each complete line exactly once."""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ingest.file_ingest import FileIngestor
from tests.ingest.file_logs import expected, ids_in, qline

_ROTATED = re.compile(r"^queries\.log\.(\d+)(\.gz)?$")


class LogFolder(RuleBasedStateMachine):
    """The model: ids of complete lines written so far, and the line being written (if any)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="hindsight-sm-"))
        self.logs = self.base / "logs"
        self.logs.mkdir()
        self.root = self.base / "root"
        self.live = self.logs / "queries.log"
        self.live.touch()
        self.next_id = 0
        self.complete: list[int] = []
        self.partial: bytes | None = None
        self.ingested: list[int] | None = None
        self.ingestor = FileIngestor(self.root, batch_bytes=2000)

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @rule(count=st.integers(1, 6))
    @precondition(lambda self: self.partial is None)
    def append(self, count: int) -> None:
        with self.live.open("ab") as fh:
            for _ in range(count):
                fh.write(qline(self.next_id))
                self.complete.append(self.next_id)
                self.next_id += 1

    @rule(cut=st.integers(1, 200))
    @precondition(lambda self: self.partial is None)
    def write_partial_line(self, cut: int) -> None:
        text = qline(self.next_id)
        self.partial = text[cut:]
        with self.live.open("ab") as fh:
            fh.write(text[:cut])

    @rule()
    @precondition(lambda self: self.partial is not None)
    def complete_partial_line(self) -> None:
        assert self.partial is not None
        with self.live.open("ab") as fh:
            fh.write(self.partial)
        self.partial = None
        self.complete.append(self.next_id)
        self.next_id += 1

    @rule()
    @precondition(lambda self: self.partial is None)
    def rotate(self) -> None:
        """log4j's rename chain: X.N → X.N+1 (gzipped ones keep .gz), X → X.1, new empty X."""
        self._shift()
        self.live.rename(self.logs / "queries.log.1")
        self.live.touch()

    @rule(data=st.data())
    @precondition(lambda self: any(not name.endswith(".gz") for _, name in self._rotated()))
    def gzip_a_rotated_file(self, data: st.DataObject) -> None:
        plain = sorted(name for _, name in self._rotated() if not name.endswith(".gz"))
        name = data.draw(st.sampled_from(plain))
        source = self.logs / name
        (self.logs / f"{name}.gz").write_bytes(gzip.compress(source.read_bytes()))
        source.unlink()

    @rule()
    @precondition(lambda self: self.partial is None)
    def copytruncate(self) -> None:
        """logrotate's copytruncate: shift the backups, copy X to X.1, truncate X in place."""
        self._shift()
        shutil.copyfile(self.live, self.logs / "queries.log.1")
        with self.live.open("r+b") as fh:
            fh.truncate(0)

    @rule()
    def restart_and_ingest(self) -> None:
        summary = self.ingestor.run([self.logs])
        assert summary.lost_bytes == 0, summary.warnings
        self.ingested = ids_in(self.root)
        self.expected = expected(self.complete)

    @invariant()
    def every_complete_line_exactly_once(self) -> None:
        if self.ingested is not None:
            assert self.ingested == self.expected
            self.ingested = None

    def _shift(self) -> None:
        for index, name in sorted(self._rotated(), reverse=True):
            suffix = ".gz" if name.endswith(".gz") else ""
            (self.logs / name).rename(self.logs / f"queries.log.{index + 1}{suffix}")

    def _rotated(self) -> list[tuple[int, str]]:
        found = []
        for path in self.logs.iterdir():
            match = _ROTATED.match(path.name)
            if match:
                found.append((int(match[1]), path.name))
        return found


LogFolder.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogFolder = LogFolder.TestCase
