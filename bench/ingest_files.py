"""Benchmark `hindsight ingest files` against DuckDB's own read_json → partitioned Parquet, same input.

Usage: bench/ingest_files.py [--lines N] [--rss-lines M] [--workdir DIR] [--keep]

Generates N DSS query lines (service/loggen.py: envelopes A and B, three services, batches), then
times in the same run (a) `python -m service ingest files FILE` as a whole subprocess and (b) a
subprocess running DuckDB `COPY (SELECT ... FROM read_json(FILE, format='newline_delimited')) TO
DIR (FORMAT parquet, PARTITION_BY (day))`. Peak RSS is the kernel's high-water mark of each child
(`os.wait4` rusage). With M > 0 it also ingests an M-line input to show memory does not grow with
input size. Figures go to docs/benchmarks.md between the ingest_files markers. Exit 1 when a target
is missed: time ratio <= 1.5, peak RSS < 1 GiB on the large input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.loggen import DEFAULT_START, write_lines  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN ingest_files -->", "<!-- END ingest_files -->"
RATIO_TARGET = 1.5
RSS_TARGET = 1024**3

DUCKDB_SCRIPT = """
import sys, duckdb
con = duckdb.connect()
con.execute(f'''
COPY (
  SELECT *, CAST(left(replace("timestamp", '/', '-'), 10) AS DATE) AS day
  FROM read_json('{sys.argv[1]}', format='newline_delimited')
) TO '{sys.argv[2]}' (FORMAT parquet, PARTITION_BY (day), OVERWRITE_OR_IGNORE)
''')
"""


@dataclass
class Run:
    """One timed subprocess."""

    seconds: float
    peak_rss: int
    output: str


def _run(command: list[str], env: dict[str, str] | None = None) -> Run:
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss of this child alone, in KiB on Linux
    seconds = time.perf_counter() - started
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({proc.returncode}): {err.strip()}")
    return Run(seconds, usage.ru_maxrss * 1024, out)


def _hindsight(path: Path, root: Path, parse_threads: int = 1) -> tuple[Run, dict[str, object]]:
    shutil.rmtree(root, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HINDSIGHT_")}
    env["HINDSIGHT_INGEST__PARSE_THREADS"] = str(parse_threads)
    run = _run(
        [
            sys.executable,
            "-m",
            "service",
            "--root",
            str(root),
            "ingest",
            "files",
            str(path),
            "--format",
            "json",
        ],
        env,
    )
    return run, json.loads(run.output)


def _duckdb(path: Path, out: Path) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    return _run([sys.executable, "-c", DUCKDB_SCRIPT, str(path), str(out)])


def _chunk(args: tuple[str, int, int]) -> str:
    path, lines, index = args
    write_lines(Path(path), lines, seed=index + 1, start=DEFAULT_START + timedelta(days=7 * index))
    return path


def _generate(workdir: Path, lines: int, big_lines: int) -> tuple[Path, Path | None, float]:
    """The N-line input, and the M-line one made of distinct N-line chunks (generated in parallel)."""
    started = time.perf_counter()
    small = workdir / "queries-small.log"
    marker = workdir / f"inputs-{lines}-{big_lines}.done"
    if marker.exists():  # --workdir reused: the inputs of these sizes are already there
        return small, (workdir / "queries-big.log") if big_lines else None, 0.0
    chunks = max(1, -(-big_lines // lines)) if big_lines else 1
    jobs = [(str(small), lines, 0)] + [(str(workdir / f"chunk-{i}.log"), lines, i) for i in range(1, chunks)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_chunk, jobs))
    big = None
    if big_lines:
        big = workdir / "queries-big.log"
        with big.open("wb") as out:
            for path, count, _ in jobs:
                with open(path, "rb") as src:
                    if count * len(jobs) > big_lines and path == jobs[-1][0]:
                        remaining = big_lines - lines * (len(jobs) - 1)
                        for _ in range(remaining):
                            out.write(src.readline())
                    else:
                        shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        for path, _, _ in jobs[1:]:
            os.unlink(path)
    marker.touch()
    return small, big, time.perf_counter() - started


def _stage_profile(path: Path, root: Path) -> dict[str, float]:
    """Seconds spent in each stage when run one after the other in one process (no overlap)."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from ingest.parser import LineParser
    from ingest.reader import LineReader, open_log
    from storage.commit import SourceBatch, commit_sources
    from storage.layout import Layout
    from storage.schemas import PREDICTIONS

    shutil.rmtree(root, ignore_errors=True)
    layout = Layout(root)
    name = str(path)
    parser = LineParser()
    spent = {"read_split": 0.0, "parse": 0.0, "commit": 0.0}
    pending: list[pa.Table] = []
    size = 0
    with open_log(path, gzipped=False) as stream:
        blocks = LineReader(stream, 0, final=False, max_line_bytes=8 * 1024 * 1024).blocks()
        while True:
            started = time.perf_counter()
            piece = []
            for block in blocks:
                piece.append(block)
                if sum(b.consumed for b in piece) >= 16 * 1024 * 1024:
                    break
            spent["read_split"] += time.perf_counter() - started
            if not piece:
                break
            lines = pa.table(
                {
                    "line": pa.chunked_array([b.lines for b in piece], pa.binary()),
                    "source": pa.chunked_array([pa.repeat(pa.scalar(name), len(b.lines)) for b in piece]),
                    "source_position": pa.chunked_array([pa.array(b.positions) for b in piece]),
                    "line_bytes": pa.chunked_array([pa.array(b.line_bytes) for b in piece]),
                }
            )
            started = time.perf_counter()
            pending.append(parser.parse(lines, ingested_at=datetime.now(UTC)).predictions)
            spent["parse"] += time.perf_counter() - started
            size += sum(b.consumed for b in piece)
            if size >= 64 * 1024 * 1024 or len(piece) == 0:
                started = time.perf_counter()
                rows = pa.concat_tables(pending)
                batch = SourceBatch("file:bench", rows, piece[-1].end)
                commit_sources(layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [batch])
                spent["commit"] += time.perf_counter() - started
                pending, size = [], 0
        if pending:
            started = time.perf_counter()
            rows = pa.concat_tables(pending)
            batch = SourceBatch("file:bench", rows, 10**15)
            commit_sources(layout.predictions, layout.lock_file("predictions"), PREDICTIONS, [batch])
            spent["commit"] += time.perf_counter() - started
    return spent


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.0f} MiB"


def _section(
    lines: int,
    size: int,
    ours: Run,
    two: Run,
    summary: dict[str, object],
    duck: Run,
    big: dict[str, object] | None,
    stages: dict[str, float],
) -> str:
    ratio = ours.seconds / duck.seconds
    rows = [
        "## Ingesting log files (`bench/ingest_files.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end (the benchmark's own load included; both sides of each "
        "comparison ran back to back, one at a time).",
        "",
        f"Input: {lines:,} generated DSS query lines (`service/loggen.py`, envelopes A and B, three "
        f"services, predict-multi batches), {size / 1e6:,.0f} MB, {summary['records']:,} prediction "
        f"records over {summary['days']} days.",
        "",
        "| run | wall time | peak RSS |",
        "|---|---|---|",
        f"| `hindsight ingest files` (whole subprocess) | {ours.seconds:.1f} s | {_mib(ours.peak_rss)} |",
        f"| same, `ingest.parse_threads = 2` | {two.seconds:.1f} s | {_mib(two.peak_rss)} |",
        f"| DuckDB `read_json` → `COPY ... PARTITION_BY (day)` (subprocess) | {duck.seconds:.1f} s "
        f"| {_mib(duck.peak_rss)} |",
        "",
        f"Time ratio hindsight / DuckDB: **{ratio:.2f}** with the default settings, "
        f"**{two.seconds / duck.seconds:.2f}** with `parse_threads = 2` (target ≤ {RATIO_TARGET}).",
        "",
        "Where the time goes: the same input run stage by stage in one process, without the overlap of "
        "the real pipeline (read ahead / parse / commit on three threads): "
        + ", ".join(f"{name.replace('_', ' + ')} {secs:.1f} s" for name, secs in stages.items())
        + f" (parsing is {stages['parse'] / sum(stages.values()):.0%} of the sequential total).",
    ]
    if big is not None:
        big_run = big["run"]
        assert isinstance(big_run, Run)
        rows += [
            "",
            "Memory against input size (`hindsight ingest files`, same settings):",
            "",
            "| input | wall time | peak RSS |",
            "|---|---|---|",
            f"| {lines:,} lines | {ours.seconds:.1f} s | {_mib(ours.peak_rss)} |",
            f"| {big['lines']:,} lines | {big_run.seconds:.1f} s | {_mib(big_run.peak_rss)} |",
        ]
        duck_big = big.get("duck")
        if isinstance(duck_big, Run):
            rows.append(
                f"| DuckDB, {big['lines']:,} lines | {duck_big.seconds:.1f} s | {_mib(duck_big.peak_rss)} |"
            )
        rows += ["", "Target: peak RSS < 1 GiB on the large input, flat with input size."]
    return "\n".join(rows) + "\n"


def _write_docs(section: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOCS.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the timed input")
    parser.add_argument(
        "--rss-lines", type=int, default=5_000_000, help="lines of the memory input (0: skip)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where inputs and outputs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hindsight-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        small, big_path, gen_seconds = _generate(workdir, args.lines, args.rss_lines)
        print(f"generated inputs in {gen_seconds:.0f} s", flush=True)
        ours, summary = _hindsight(small, workdir / "root-small")
        print(
            f"hindsight: {ours.seconds:.2f} s, peak RSS {_mib(ours.peak_rss)}, {summary['records']} records",
            flush=True,
        )
        two, _ = _hindsight(small, workdir / "root-small-2", parse_threads=2)
        print(f"hindsight, parse_threads=2: {two.seconds:.2f} s, peak RSS {_mib(two.peak_rss)}", flush=True)
        duck = _duckdb(small, workdir / "duck-small")
        print(f"duckdb:    {duck.seconds:.2f} s, peak RSS {_mib(duck.peak_rss)}", flush=True)
        stages = _stage_profile(small, workdir / "root-stages")
        print("stages (sequential, in process): " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
        big = None
        if big_path is not None:
            big_run, big_summary = _hindsight(big_path, workdir / "root-big")
            print(
                f"hindsight {args.rss_lines} lines: {big_run.seconds:.2f} s, {_mib(big_run.peak_rss)}",
                flush=True,
            )
            duck_big = _duckdb(big_path, workdir / "duck-big")
            print(
                f"duckdb {args.rss_lines} lines: {duck_big.seconds:.2f} s, {_mib(duck_big.peak_rss)}",
                flush=True,
            )
            big = {"run": big_run, "lines": args.rss_lines, "summary": big_summary, "duck": duck_big}
        section = _section(args.lines, small.stat().st_size, ours, two, summary, duck, big, stages)
        print(section)
        if not args.no_docs:
            _write_docs(section)
        ratio = ours.seconds / duck.seconds
        missed = ratio > RATIO_TARGET
        if big is not None:
            big_run = big["run"]
            assert isinstance(big_run, Run)
            missed = missed or big_run.peak_rss >= RSS_TARGET
        if missed:
            print("target missed (see above)", file=sys.stderr)
        return 1 if missed else 0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
