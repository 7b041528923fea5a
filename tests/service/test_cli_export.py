"""Tests of `hindsight export`: a file and its manifest, a replay after new data, and one-line refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.ingest.file_logs import run_cli
from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions

POLICY = """[[policies]]
service_id = "fraud"
endpoint_id = "score"
join_on = "context.transaction_id"
window = "90d"
"""
TX = "context.transaction_id"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    base.mkdir()
    (base / "hindsight.toml").write_text(POLICY, encoding="utf-8")
    write_predictions(
        base,
        [
            prediction("r1", at(0), context={"transaction_id": "t1"}, features={"amount": 5.5}),
            prediction("r2", at(1), context={"transaction_id": "t2"}, features={"amount": 1.0}),
        ],
    )
    write_outcomes(base, [outcome("o1", "FRAUD", at(2), key={TX: "t1"})])
    return base


def test_export_writes_the_file_and_a_replay_gives_it_again(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.csv"
    done = run_cli(root, "export", str(out), "--endpoint", "fraud/score", "--as-of", "2026-02-01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"wrote 1 rows to {out} (fraud/score label, labels observed/implicit as of "
    )
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["record_id"], r["amount"], r["label"]) for r in rows] == [("r1", "5.5", "FRAUD")]
    manifest = json.loads((tmp_path / "train.csv.manifest.json").read_text())
    assert (manifest["format"], manifest["tables"]) == ("csv", {"predictions": 0, "outcomes": 0})
    write_outcomes(root, [outcome("o2", "OK", at(3), key={TX: "t2"})])  # r2 labelled from now on
    # no --root: the replay reads the root the manifest names
    again = run_cli(None, "export", str(tmp_path / "again.csv"), "--replay", str(out) + ".manifest.json")
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip().endswith(f"identical to {out}.manifest.json")
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()
    # a replay writes the manifest's format: a name for another format is refused, nothing written
    manifest = str(out) + ".manifest.json"
    for wrong in ("again.parquet", "again.data"):
        refused = run_cli(None, "export", str(tmp_path / wrong), "--replay", manifest)
        assert refused.returncode == 2 and not (tmp_path / wrong).exists()
        assert f"{wrong}: the manifest's export is csv; replay it to a file named with .csv" in refused.stderr
    fresh = run_cli(
        root, "export", str(tmp_path / "fresh.csv"), "--endpoint", "fraud/score", "--as-of", "2026-02-01"
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("wrote 2 rows")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "m.json", "--endpoint", "fraud/score"], "do not combine it with --endpoint"),
        ([], "--endpoint SERVICE/ENDPOINT is required"),
        (["--endpoint", "fraud"], "endpoint must be SERVICE/ENDPOINT"),
        (["--endpoint", "fraud/score", "--label-state", "observed,seen"], "--label-state takes a comma list"),
        (["--endpoint", "fraud/score", "--format", "xlsx"], "--format must be one of parquet, csv, jsonl"),
        (["--endpoint", "fraud/score", "--features", "flat"], "--features must be one of columns, json"),
        (["--endpoint", "fraud/score", "--as-of", "yesterday"], "--as-of 'yesterday' is not an ISO 8601"),
        (["--replay", "missing.manifest.json"], "no export manifest at missing.manifest.json"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    root: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    done = run_cli(root, "export", str(tmp_path / "t.parquet"), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_an_existing_file_needs_force(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    out.write_bytes(b"keep")
    done = run_cli(root, "export", str(out), "--endpoint", "fraud/score")
    assert (done.returncode, out.read_bytes()) == (2, b"keep")
    assert "exists; pass --force to replace it" in done.stderr
    forced = run_cli(root, "export", str(out), "--endpoint", "fraud/score", "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes()[:4] == b"PAR1"


@pytest.mark.parametrize("name", ["train.json", "train.csv.gz", "train"])
def test_a_suffix_that_names_no_format_needs_format(root: Path, tmp_path: Path, name: str) -> None:
    # these were written as Parquet under those names, silently
    done = run_cli(root, "export", str(tmp_path / name), "--endpoint", "fraud/score")
    assert done.returncode == 2 and "the suffix does not name a format" in done.stderr, done.stderr
    assert not (tmp_path / name).exists()
    forced = run_cli(root, "export", str(tmp_path / name), "--endpoint", "fraud/score", "--format", "jsonl")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / name).read_text().startswith('{"record_id":')


def test_a_disk_error_on_a_json_named_export_carries_no_features_hint(root: Path, tmp_path: Path) -> None:
    # the hint was added when "json" or "cast" appeared anywhere in the error, which quotes the path
    import resource
    import subprocess
    import sys

    from tests.ingest.file_logs import REPO

    def small_files() -> None:  # a full disk, as far as this process can tell
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    out = tmp_path / "forecast-train.jsonl"
    args = ["--root", str(root), "export", str(out), "--endpoint", "fraud/score", "--as-of", "2026-02-01"]
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=small_files,
    )
    assert done.returncode == 1 and "cannot write the export" in done.stderr, done.stderr
    assert "--features json" not in done.stderr
    assert not out.exists()
