"""examples/finetune_squad.py runs as its docstring says, on the test sample and the tiny M3."""

from __future__ import annotations

import json
from pathlib import Path

from m3kit.finetune.training_loop import SMALL_MODEL_LEARNING_RATE
from tests.example_runs import REPO, load_example


def test_example_trains_at_the_library_learning_rate_and_reports(
    tiny_m3_path: Path, tmp_path: Path, capsys: object
) -> None:
    """The example trained at ``--lr`` 5e-5 unless told otherwise, the setting the README's
    held-out table reports as "earlier settings" (below the library's size-based default,
    1e-4 for a model the size of MiniLM): it now leaves the rate to the library."""
    out = tmp_path / "ft"
    argv = ["--data", str(REPO / "tests" / "data" / "squad_en"), "--model", str(tiny_m3_path)]
    argv += ["--out", str(out), "--rows", "8", "--eval-queries", "10", "--batch-size", "4"]
    result = load_example("finetune_squad").main([*argv, "--negatives", "1", "--max-length", "64"])
    meta = result["meta"]
    assert meta["learning_rate"] == SMALL_MODEL_LEARNING_RATE  # the tiny model is small
    assert meta["train_rows"] == 8 and meta["eval_queries"] == 10
    assert not set(meta["train_articles"]) & set(meta["eval_articles"])  # split by article
    assert set(result["reports"]) == {"before", "after"}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["meta"]["learning_rate"] == SMALL_MODEL_LEARNING_RATE
    assert (out / "report.md").is_file() and (out / "report.png").is_file()
    assert "| after | colbert |" in capsys.readouterr().out  # type: ignore[attr-defined]
