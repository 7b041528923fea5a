"""Parser throughput on generated DSS lines, against DuckDB's own read_json → COPY in the same run.

    .venv/bin/python bench/parse_lines.py [--lines 1000000] [--no-write]

Generates the lines with `service.loggen` (envelopes A and B, predict-multi batches, other audit
topics and unusable lines), then times `LineParser.parse` over ~64 MB batches (the size the file
tailer feeds) and, as the baseline, `read_json(...) → COPY ... (FORMAT parquet, PARTITION_BY (day))`
on the same file. Writes its section of docs/benchmarks.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.parser import LineParser
from service.loggen import iter_lines

BATCH_BYTES = 64 * 1024 * 1024
SECTION = "parse_lines"


def generate(path: Path, n: int) -> int:
    """Write `n` lines (1 % unusable, 3 % other audit topics) and return the file size."""
    size = 0
    with path.open("wb", buffering=8 * 1024 * 1024) as fh:
        for i, line in enumerate(iter_lines(days=7, per_day=math.ceil(n / 7), bad_rate=0.01)):
            if i == n:
                break
            fh.write(line.text + b"\n")
            size += len(line.text) + 1
    return size


def batches(path: Path) -> list[pa.Table]:
    """The file as parser input tables of about BATCH_BYTES each; each line keeps its newline."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    ends = np.flatnonzero(data == 10) + 1  # one past each newline
    out: list[pa.Table] = []
    first_line = 0
    while first_line < len(ends):
        first = 0 if first_line == 0 else int(ends[first_line - 1])
        stop_line = int(np.searchsorted(ends, first + BATCH_BYTES, side="right"))
        stop_line = min(max(stop_line, first_line + 1), len(ends))
        bounds = np.concatenate(([first], ends[first_line:stop_line])).astype(np.int64)
        offsets = (bounds - first).astype(np.int32)
        n = len(bounds) - 1
        line_array = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data[first : int(bounds[-1])])]
        )
        out.append(
            pa.table(
                {
                    "line": line_array,
                    "source": pa.array(["bench.log"] * n, pa.string()),
                    "source_position": pa.array(bounds[:-1]),
                    "line_bytes": pa.array(np.diff(bounds)),
                }
            )
        )
        first_line = stop_line
    return out


def baseline(path: Path, out_dir: Path) -> tuple[float, float]:
    """DuckDB's own read_json → COPY PARTITION_BY (day) of the same file: (wall, CPU) seconds."""
    con = duckdb.connect()
    started, cpu_started = time.perf_counter(), time.process_time()
    con.execute(
        f"""COPY (SELECT *, substr(CAST("timestamp" AS VARCHAR), 1, 10) AS day
                  FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true))
            TO '{out_dir}' (FORMAT parquet, PARTITION_BY (day), OVERWRITE)"""
    )
    con.close()
    return time.perf_counter() - started, time.process_time() - cpu_started


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--lines", type=int, default=1_000_000)
    args.add_argument("--no-write", action="store_true")
    opts = args.parse_args()
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lines.log"
        size = generate(path, opts.lines)
        tables = batches(path)
        base_before = baseline(path, Path(tmp) / "baseline")
        rss_start = process.memory_info().rss
        parser = LineParser()
        lines = records = skipped = quarantined = 0
        rss_after: list[int] = []
        started = time.perf_counter()
        cpu_started = time.process_time()
        for table in tables:
            result = parser.parse(table)
            lines += result.lines
            records += result.records
            skipped += result.skipped
            quarantined += result.quarantined
            rss_after.append(process.memory_info().rss)
            del result
        parse_s = time.perf_counter() - started
        parse_cpu = time.process_time() - cpu_started
        base_after = baseline(path, Path(tmp) / "baseline")
    # the machine is shared: time the baseline before and after the parse and keep the faster run
    base_s, base_cpu = min(base_before, base_after)
    figures = {
        "lines": lines,
        "bytes": size,
        "records": records,
        "skipped": skipped,
        "quarantined": quarantined,
        "batches": len(tables),
        "parse_s": parse_s,
        "parse_cpu_s": parse_cpu,
        "lines_per_s": lines / parse_s,
        "baseline_s": base_s,
        "baseline_cpu_s": base_cpu,
        "ratio": parse_s / base_s,
        "cpu_ratio": parse_cpu / base_cpu,
        "rss_start_mb": rss_start / 2**20,
        "rss_first_mb": rss_after[0] / 2**20 if rss_after else 0.0,
        "rss_last_mb": rss_after[-1] / 2**20 if rss_after else 0.0,
        "rss_max_mb": max(rss_after) / 2**20 if rss_after else 0.0,
    }
    report = _markdown(figures)
    print(report)
    if not opts.no_write:
        _write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", report)
    return 0


def _markdown(f: dict[str, float]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("parse time, all lines", f"{f['parse_s']:.2f} s ({f['parse_cpu_s']:.2f} s CPU)"),
        ("throughput", f"{f['lines_per_s']:,.0f} lines/s"),
        (
            "records / skipped / quarantined",
            f"{int(f['records']):,} / {int(f['skipped']):,} / {int(f['quarantined']):,}",
        ),
        (
            "baseline: DuckDB `read_json` → `COPY ... PARTITION_BY (day)`, same file",
            f"{f['baseline_s']:.2f} s ({f['baseline_cpu_s']:.2f} s CPU)",
        ),
        ("parse / baseline, wall time", f"{f['ratio']:.2f}"),
        ("parse / baseline, CPU time (less sensitive to other load)", f"{f['cpu_ratio']:.2f}"),
        (
            "process RSS: before parsing / after batch 1 / after the last batch / max",
            f"{f['rss_start_mb']:.0f} / {f['rss_first_mb']:.0f} / {f['rss_last_mb']:.0f} / "
            f"{f['rss_max_mb']:.0f} MB",
        ),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"<!-- BEGIN {SECTION} -->\n## Parser (`bench/parse_lines.py`)\n\n"
        f"Measured {now} on this machine ({os.cpu_count()} cores, shared with other work; load average "
        f"at start {os.getloadavg()[0]:.1f}). {int(f['lines']):,} generated DSS lines "
        f"({f['bytes'] / 2**20:.0f} MB: envelopes A and B, predict-multi batches, 3 % other audit topics, "
        f"1 % unusable lines), parsed by `LineParser.parse` in {int(f['batches'])} batches of ~64 MB, "
        "in memory (no Delta write).\n\n"
        f"| | value |\n|---|---:|\n{table}\n<!-- END {SECTION} -->\n"
    )


def _write_section(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    begin, end = f"<!-- BEGIN {SECTION} -->", f"<!-- END {SECTION} -->\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
