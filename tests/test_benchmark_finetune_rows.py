"""The fine-tuning benchmarks (``finetune.py``, ``finetune_sweep.py``, ``finetune_timing.py``)
train on the same rows and refuse checkpoints trained on their evaluation articles.

Benchmarks are scripts, not a package: each is loaded from its file. The benchmarks folder is
not in the sdist, so these tests skip there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench_scripts import BENCH
from tests.bench_scripts import load_script as _script
from tests.bench_scripts import single_passage_data as _single_passage_data

pytestmark = pytest.mark.skipif(not BENCH.is_file(), reason="benchmarks/ not shipped here")


# -- the fine-tuning benchmarks train on the same rows --------------------------------------------
def _fake_training(monkeypatch: pytest.MonkeyPatch, checkpoint: Path) -> list[list[Any]]:
    """``M3Finetuner.fit`` saves ``checkpoint`` as the trained model; returns the rows given."""
    import shutil

    from m3kit.finetune import M3Finetuner
    from m3kit.finetune.trainer import FinetuneResult

    trained: list[list[Any]] = []

    def fit(self: M3Finetuner, examples: list[Any]) -> FinetuneResult:
        trained.append(list(examples))
        out = Path(self.config.output_path)
        shutil.copytree(checkpoint, out, dirs_exist_ok=True)
        return FinetuneResult(out, frozenset(), 1, len(examples), 0.5, (), "fp32")

    monkeypatch.setattr(M3Finetuner, "fit", fit)
    return trained


def test_finetune_sweep_trains_on_the_rows_finetune_py_trains_on(
    tmp_path: Path, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finetune, sweep, bench = _script("finetune"), _script("finetune_sweep"), _script("_bench")
    data = _single_passage_data(tmp_path / "cmrc_like")
    trained = _fake_training(monkeypatch, tiny_m3_path)
    log = tmp_path / "sweep.jsonl"
    argv = ["--name", "run", "--data", str(data), "--out", str(tmp_path / "sweep")]
    sweep.main([*argv, "--results", str(log)])
    expected = finetune.training_split(str(data), seed=0, rows=1000)
    # CMRC-like rows keep their in-split negatives (finetune.py's drop_foreign_negatives)
    assert expected.train and trained == [list(expected.train)]
    md = log.with_suffix(".md").read_text(encoding="utf-8")
    assert "| run | cmrc_like seed 0 |" in md and "squad_en" not in md
    assert json.loads(log.read_text(encoding="utf-8"))["data"] == "cmrc_like"
    record = bench.training_record(tmp_path / "sweep" / "run" / "model")
    assert record is not None and record["by"] == "finetune_sweep.py"
    assert record["train_articles"] == list(expected.train_articles) and record["seed"] == 0


def test_finetune_timing_trains_on_finetune_py_rows_at_its_validation_fraction(
    tmp_path: Path, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    finetune, timing = _script("finetune"), _script("finetune_timing")
    data = _single_passage_data(tmp_path / "cmrc_like")
    trained = _fake_training(monkeypatch, tiny_m3_path)

    def llamaindex(python: str, train: list[Any], model: str, out: Path, *_: Any) -> dict[str, Any]:
        (out / "model").mkdir(parents=True)
        return {"train_seconds": 1.0, "finetune_seconds": 1.5, "build_seconds": 0.5,
                "max_length": 256.0, "timer": None, "versions": {}, "torch_threads": 1}  # fmt: skip

    monkeypatch.setattr(timing, "_run_llamaindex", llamaindex)
    parser = argparse.ArgumentParser()
    finetune.add_training_arguments(parser)  # finetune.py's training options, defaults
    default = parser.parse_args([]).validation_fraction
    for n, fraction in enumerate((default, 0.5)):
        given = [] if fraction == default else ["--validation-fraction", str(fraction)]
        argv = ["--data", str(data), "--repeats", "1", "--out", str(tmp_path / f"t{n}")]
        # (LlamaIndex's engine is faked above: any executable Python passes the venv check)
        argv += ["--bench-python", sys.executable]
        timing.main([*argv, "--results", str(tmp_path / f"timing{n}"), *given])
        split = finetune.training_split(str(data), seed=0, rows=1000, validation_fraction=fraction)
        assert trained[n] == list(split.train)
        record = _script("_bench").training_record(tmp_path / f"t{n}" / "m3kit-0")
        assert record is not None and record["train_articles"] == list(split.train_articles)
    assert trained[0] != trained[1]
    md = (tmp_path / "timing0.md").read_text(encoding="utf-8")
    assert "training rows of cmrc_like" in md and "squad_en" not in md


def test_finetune_records_its_split_and_refuses_checkpoints_trained_on_its_evaluation_articles(
    tmp_path: Path, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finetune, bench = _script("finetune"), _script("_bench")
    data = _single_passage_data(tmp_path / "cmrc_like")
    trained = _fake_training(monkeypatch, tiny_m3_path)
    out = tmp_path / "run"
    finetune.main(["--data", str(data), "--out", str(out), "--skip-llamaindex"])
    split = finetune.training_split(str(data), seed=0, rows=1000)
    assert trained == [list(split.train)]
    record = bench.training_record(out / "m3kit")
    assert record is not None and record["by"] == "finetune.py" and record["seed"] == 0
    assert record["train_articles"] == list(split.train_articles)
    # --checkpoints with another --seed would score it on some of its training articles
    other = finetune.training_split(str(data), seed=1, rows=1000)
    leaked = sorted(set(other.eval_articles) & set(split.train_articles))
    assert leaked
    argv = ["--data", str(data), "--checkpoints", f"ft={out / 'm3kit'}"]
    with pytest.raises(SystemExit, match=rf"\({', '.join(leaked)}\): finetune.py .*--seed 0"):
        finetune.main([*argv, "--seed", "1", "--out", str(tmp_path / "seed1")])
    assert not (tmp_path / "seed1").exists()
    assert finetune.main([*argv, "--out", str(tmp_path / "seed0")]) == 0
    # trained on every training article (--validation-fraction 0), it holds the validation
    # articles a default run calibrates its fusion on: refused too (it was scored)
    every = tmp_path / "every"
    flags = ["--skip-llamaindex", "--validation-fraction", "0"]
    finetune.main(["--data", str(data), "--out", str(every), *flags])
    argv = ["--data", str(data), "--checkpoints", f"ft={every / 'm3kit'}"]
    with pytest.raises(SystemExit, match="validation articles .*calibrated on its own training"):
        finetune.main([*argv, "--out", str(tmp_path / "calibrated")])


def test_finetune_sweep_runs_llamaindex_at_the_batch_size_given_and_refuses_other_overrides(
    tmp_path: Path, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--llamaindex batch_size=32`` trains LlamaIndex's engine at 32 (it was always 16, so a
    batch-size sweep compared m3kit at 32 with the engine at 16); an override the engine has
    no setting for is an error, not silently ignored."""
    import shutil
    import types

    sweep = _script("finetune_sweep")
    data = _single_passage_data(tmp_path / "cmrc_like")
    batches: list[int] = []

    def run(python: str, train: list[Any], model: str, out: Path, epochs: int, batch: int) -> Any:
        batches.append(batch)
        shutil.copytree(tiny_m3_path, out / "model")
        return {"train_seconds": 1.0}

    monkeypatch.setitem(sys.modules, "finetune", types.SimpleNamespace(_run_llamaindex=run))
    argv = ["--data", str(data), "--llamaindex", "--results", str(tmp_path / "log")]
    for n, given in enumerate(([], ["batch_size=32"])):
        sweep.main([*argv, "--name", f"li{n}", "--out", str(tmp_path / f"o{n}"), *given])
    assert batches == [16, 32]
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text("utf-8").splitlines()]
    assert [r["config"]["batch_size"] for r in rows] == [16, 32]
    refused = r"batch_size only of the overrides, not \['temperature'\]"
    with pytest.raises(SystemExit, match=refused):
        sweep.main([*argv, "--name", "bad", "--out", str(tmp_path / "bad"), "temperature=0.05"])
    assert batches == [16, 32]
