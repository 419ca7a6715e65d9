"""LlamaIndex's ``M3FinetuneEngine`` end to end on the tiny checkpoint (its validation report and
calibration), and the training options it shares with ``m3kit finetune``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from m3kit import M3Encoder
from m3kit.finetune import TrainingExample, write_jsonl
from m3kit.outputs import ALL_HEADS
from m3kit.store import FusionCalibration, M3Index
from tests.finetune.cli_runs import run_cli


def test_llamaindex_engine(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine

    passages = sorted({t for ex in toy_examples for t in ex.pos})
    ids = {t: f"node-{i}" for i, t in enumerate(passages)}
    dataset = SimpleNamespace(  # EmbeddingQAFinetuneDataset's fields, no llama-index-finetuning
        queries={f"q{i}": ex.query for i, ex in enumerate(toy_examples)},
        corpus={v: k for k, v in ids.items()},
        relevant_docs={f"q{i}": [ids[ex.pos[0]]] for i, ex in enumerate(toy_examples)},
        mode="text",
    )
    engine = M3FinetuneEngine(
        dataset,
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "ft"),
        val_dataset=dataset,
        epochs=1,
        batch_size=6,
        mine_negatives=2,
        passage_max_length=32,
        show_progress_bar=False,
    )
    with pytest.raises(RuntimeError, match="call finetune"):
        engine.get_finetuned_model()
    result = engine.finetune()
    assert result.steps == 2
    assert engine.val_report is not None and "fused" in engine.val_report.metrics
    # the validation set also calibrated the checkpoint's fusion (saved beside the weights)
    assert engine.calibration is not None
    assert FusionCalibration.load(result.path) == engine.calibration
    assert engine.calibration.encoder_identity is not None
    # measured on the checkpoint as it loads, so a default load searches with it
    with M3Index.open(M3Encoder.from_pretrained(result.path), ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", engine.calibration)
    embed = engine.get_finetuned_model(dtype="fp32")
    assert type(embed).__name__ == "M3Embedding"
    assert len(embed.get_query_embedding("Where does the Rhine flow?")) == 32
    assert "llama_index.finetuning" not in sys.modules


def test_training_settings_reach_cli_and_engine(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import FinetuneConfig, M3Finetuner, QADataset, SparseStart

    seen: list[FinetuneConfig] = []

    def record(self: M3Finetuner, examples: object) -> object:
        seen.append(self.config)
        raise SystemExit(0)  # the config is what this test checks; training is tested apart

    monkeypatch.setattr(M3Finetuner, "fit", record)
    train = write_jsonl(toy_examples, tmp_path / "t.jsonl")
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(train)]
    argv += ["--output", str(tmp_path / "m"), "--quiet"]
    told = [
        *("--attention-dropout", "0", "--frozen-layers", "1", "--no-keep-freed-memory"),
        *("--sparse-start", "uniform"),
    ]
    for extra in ([], told):
        with pytest.raises(SystemExit):
            run_cli([*argv, *extra])
    assert [
        (c.attention_dropout, c.frozen_layers, c.keep_freed_memory, c.sparse_start) for c in seen
    ] == [
        (None, 0, True, SparseStart.IDF),
        (0.0, 1, False, SparseStart.UNIFORM),
    ]
    engine = M3FinetuneEngine(
        QADataset.from_examples(toy_examples),
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "e"),
        attention_dropout=0.0,
        frozen_layers=1,
        keep_freed_memory=False,
        sparse_start="uniform",
    )
    assert (
        engine.config.attention_dropout,
        engine.config.frozen_layers,
        engine.config.keep_freed_memory,
        engine.config.sparse_start,
    ) == (0.0, 1, False, SparseStart.UNIFORM)


def test_llamaindex_engine_validates_on_its_queries_only(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """relevant_docs of a query the validation set does not hold (queries trimmed to a
    sample) are not judged: LlamaIndex's evaluators ignore them; they scored 0 here, so
    val_report understated every metric."""
    import m3kit.finetune.evaluate as evaluate
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import M3Finetuner, QADataset
    from m3kit.finetune.trainer import FinetuneResult

    full = QADataset.from_examples(toy_examples)
    kept = dict(list(full.queries.items())[:2])
    val = QADataset(queries=kept, corpus=full.corpus, relevant_docs=full.relevant_docs)
    done = FinetuneResult(tiny_m3_path, frozenset(ALL_HEADS), 0, 0, 0.0, ())
    monkeypatch.setattr(M3Finetuner, "fit", lambda self, examples, **kw: done)
    judged: list[set[str]] = []
    real = evaluate.evaluate_heads

    def spy(encoder: object, corpus: object, queries: object, qrels: dict, **kw: object) -> object:
        judged.append(set(qrels))
        return real(encoder, corpus, queries, qrels, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate, "evaluate_heads", spy)
    engine = M3FinetuneEngine(
        full, model_id=str(tiny_m3_path), val_dataset=val, calibrate_fusion=False
    )
    engine.finetune()
    assert judged == [set(kept)]
    assert engine.val_report is not None
    assert engine.val_report.metrics["dense"]["queries"] == len(kept)


def test_llamaindex_engine_names_a_bad_dataset_argument(
    toy_examples: list[TrainingExample],
) -> None:
    """``SentenceTransformersFinetuneEngine``'s fourth argument is ``batch_size``, this one's
    ``val_dataset``: LlamaIndex's positional call said only "got int", not which argument."""
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import QADataset

    train = QADataset.from_examples(toy_examples)
    with pytest.raises(TypeError, match=r"^val_dataset: .*got int.*batch_size=") as bad_val:
        M3FinetuneEngine(train, "BAAI/bge-m3", "exp_finetune", 16)
    assert "relevant_docs" in str(bad_val.value)
    with pytest.raises(TypeError, match=r"^train_dataset: .*got list"):
        M3FinetuneEngine([1, 2])


def _toy_dataset(toy_examples: list[TrainingExample]) -> SimpleNamespace:
    passages = sorted({t for ex in toy_examples for t in ex.pos})
    ids = {t: f"node-{i}" for i, t in enumerate(passages)}
    return SimpleNamespace(
        queries={f"q{i}": ex.query for i, ex in enumerate(toy_examples)},
        corpus={v: k for k, v in ids.items()},
        relevant_docs={f"q{i}": [ids[ex.pos[0]]] for i, ex in enumerate(toy_examples)},
        mode="text",
    )


def test_a_dense_only_engine_validates_and_calibrates_without_a_sparse_cut(
    tiny_dense_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    # LlamaIndex's own setup (a dense start model, dense training, a val_dataset) trained,
    # saved, then failed: "no sparse cut was given, but the encoder has no sparse head"
    from llamaindex_m3.finetune import M3FinetuneEngine

    dataset = _toy_dataset(toy_examples)
    engine = M3FinetuneEngine(
        dataset,
        model_id=str(tiny_dense_path),
        model_output_path=str(tmp_path / "ft"),
        val_dataset=dataset,
        heads=["dense"],
        batch_size=6,
        passage_max_length=32,
        show_progress_bar=False,
    )
    result = engine.finetune()
    assert engine.val_report is not None and list(engine.val_report.metrics) == ["dense"]
    assert engine.calibration is not None
    assert FusionCalibration.load(result.path) == engine.calibration


def test_an_empty_val_dataset_is_refused_before_training(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine

    empty = SimpleNamespace(queries={}, corpus={}, relevant_docs={}, mode="text")
    with pytest.raises(ValueError, match="val_dataset has no queries"):
        M3FinetuneEngine(
            _toy_dataset(toy_examples),
            model_id=str(tiny_m3_path),
            model_output_path=str(tmp_path / "ft"),
            val_dataset=empty,
        )
    assert not (tmp_path / "ft").exists()


def test_a_val_dataset_of_training_queries_is_warned_of_before_training(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Validation queries that are training queries made the evaluation, and the fusion
    calibrated on it (saved with the checkpoint: its searches' default), measure what training
    saw, without a word."""
    from llamaindex_m3.finetune import M3FinetuneEngine

    train = _toy_dataset(toy_examples)
    with caplog.at_level(logging.WARNING, logger="m3kit.finetune.splits"):
        M3FinetuneEngine(
            train,
            model_id=str(tiny_m3_path),
            model_output_path=str(tmp_path / "ft"),
            val_dataset=train,
        )
    assert "12 of 12 validation queries are training queries" in caplog.text
    assert not (tmp_path / "ft").exists()  # told before anything ran
