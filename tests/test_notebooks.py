"""The notebooks run: their code cells are executed in order against a small generated root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.storage.eval_factories import at, outcome, prediction, write_outcomes, write_predictions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _code_cells(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert (document["nbformat"], document["nbformat_minor"] >= 4) == (4, True)
    for cell in document["cells"]:
        assert cell["cell_type"] in {"markdown", "code"} and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # committed without outputs
    return ["".join(cell["source"]) for cell in document["cells"] if cell["cell_type"] == "code"]


def test_evaluate_notebook_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hindsight.toml").write_text(
        '[[policies]]\nservice_id = "fraud"\nendpoint_id = "score"\njoin_on = "context.transaction_id"\n'
        'positive = "FRAUD"\nmaturity = "30d"\nimplicit_value = "OK"\n[eval]\nimmature_threshold = 0.25\n',
        encoding="utf-8",
    )
    write_predictions(
        tmp_path,
        [
            prediction(
                f"r{i}",
                at(i),
                context={"transaction_id": f"t{i}"},
                probas={"FRAUD": i / 10, "OK": 1 - i / 10},
            )
            for i in range(10)
        ],
    )
    write_outcomes(
        tmp_path,
        [
            outcome(f"o{i}", "FRAUD" if i > 5 else "OK", at(i + 1), key={"context.transaction_id": f"t{i}"})
            for i in range(0, 10, 2)
        ]
        + [outcome("stray", "OK", at(3), key={"context.transaction_id": "nope"})],
    )
    monkeypatch.setenv("HINDSIGHT_ROOT", str(tmp_path))
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for source in _code_cells(NOTEBOOKS / "evaluate.ipynb"):
        exec(compile(source, "evaluate.ipynb", "exec"), namespace)  # our own notebook, run as Jupyter would
    assert int(namespace["coverage"]["predictions"].sum()) == 10
    assert int(namespace["coverage"]["observed"].sum()) == 5
    assert namespace["unmatched"].to_dict("records") == [
        {"reason": "no prediction with this key", "outcomes": 1}
    ]
    assert {row["task"] for row in namespace["rows"]} == {"binary"}
    assert namespace["query"].immature_threshold == 0.25  # the [eval] setting, as `hindsight eval` reads it
    out = capsys.readouterr().out
    assert "fraud/score week" in out
    assert "replayed byte for byte: True" in out
    train = namespace["train"]
    assert len(train) == 10  # 5 observed labels, 5 implicit ones (mature long ago)
    assert sorted(train["label_state"].value_counts().items()) == [("implicit", 5), ("observed", 5)]


def test_the_notebook_says_when_its_root_holds_no_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jupyter runs in notebooks/: HINDSIGHT_ROOT=./demo-data pointed at notebooks/demo-data, every view came
    # back empty and the export cell failed with an IndexError
    monkeypatch.setenv("HINDSIGHT_ROOT", str(tmp_path / "demo-data"))
    first = _code_cells(NOTEBOOKS / "evaluate.ipynb")[0]
    with pytest.raises(FileNotFoundError, match=r"no hindsight tables under .*absolute path"):
        exec(compile(first, "evaluate.ipynb", "exec"), {"__name__": "__notebook__"})
