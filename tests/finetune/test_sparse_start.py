"""A new sparse head starts fitted to the training passages' inverse document frequencies."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import M3Encoder
from m3kit.checkpoint import resolve_checkpoint
from m3kit.finetune import FinetuneConfig, M3Finetuner, SpanExample, SparseStart, TrainingExample
from m3kit.finetune.sparse_start import fit_sparse_head, token_idf
from m3kit.finetune.trainer import NEW_SPARSE_WEIGHT, save_start_checkpoint
from m3kit.finetune.training_loop import prepare_training
from m3kit.heads import load_state_dict_safely
from m3kit.outputs import ALL_HEADS, Head
from tests.finetune.conftest import tiny_finetune_config


def _passages(squad_sample_dir: Path, n: int = 120) -> list[str]:
    rows = (squad_sample_dir / "corpus.jsonl").read_text().splitlines()[:n]
    return [json.loads(r)["text"] for r in rows]


def test_the_fitted_head_weighs_tokens_by_their_idf(
    minilm_path: Path, squad_sample_dir: Path, tmp_path: Path
) -> None:
    passages = _passages(squad_sample_dir)
    cfg = tiny_finetune_config(minilm_path, tmp_path / "ft", passage_max_length=128)
    assert cfg.sparse_start is SparseStart.IDF  # the default
    setup = prepare_training(cfg, passages)
    tok, model = setup.tokenizer, setup.model
    ids = tok(passages, truncation=True, max_length=128)["input_ids"]
    idf = token_idf(ids, setup.ignore_ids)
    weights: dict[int, list[float]] = {}
    with torch.no_grad():
        for start in range(0, len(passages), 16):
            batch = tok(
                passages[start : start + 16],
                truncation=True,
                max_length=128,
                padding=True,
                return_tensors="pt",
            )
            out = model(batch["input_ids"], batch["attention_mask"], colbert=False)
            assert out.sparse is not None
            for row, w in zip(batch["input_ids"].tolist(), out.sparse.tolist(), strict=True):
                for t, v in zip(row, w, strict=True):
                    if t in idf:
                        weights.setdefault(t, []).append(v)
    tokens = sorted(weights)
    every = np.concatenate([weights[t] for t in tokens])
    target = np.concatenate([[math.sqrt(idf[t])] * len(weights[t]) for t in tokens])
    # rare tokens weigh more than common ones, as in BM25 (the uniform start: all equal)
    assert np.corrcoef(every, target)[0, 1] > 0.8
    the, rare = tok.convert_tokens_to_ids("the"), max(tokens, key=lambda t: idf[t])
    assert np.mean(weights[the]) < np.mean(weights[rare])
    # the weights average the uniform start's size (moderate first sparse logits)
    assert 0.5 * NEW_SPARSE_WEIGHT < every.mean() < 2 * NEW_SPARSE_WEIGHT


def test_the_fit_reports_how_much_the_states_explain(
    minilm_path: Path, squad_sample_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_finetune_config(
        minilm_path, tmp_path / "ft", passage_max_length=128, sparse_start="uniform"
    )
    setup = prepare_training(cfg, [])  # uniform: nothing fitted, no passage needed
    state = setup.model.require_heads().sparse_linear.state_dict()
    assert not state["weight"].any() and float(state["bias"]) == pytest.approx(NEW_SPARSE_WEIGHT)
    with caplog.at_level("INFO", logger="m3kit.finetune.sparse_start"):
        r2 = fit_sparse_head(
            setup.model,
            setup.tokenizer,
            _passages(squad_sample_dir, 60),
            max_length=128,
            ignore_ids=setup.ignore_ids,
            scale=NEW_SPARSE_WEIGHT,
        )
    assert 0.5 < r2 <= 1.0
    assert f"R² {r2:.3f}" in caplog.text and "60 passage(s)" in caplog.text
    with pytest.raises(
        ValueError, match="no token to fit the new sparse head to .*sparse_start=.uniform."
    ):
        fit_sparse_head(
            setup.model,
            setup.tokenizer,
            [""],
            max_length=128,
            ignore_ids=setup.ignore_ids,
            scale=NEW_SPARSE_WEIGHT,
        )


def test_an_m3_checkpoints_own_sparse_head_is_kept(tiny_m3_path: Path, tmp_path: Path) -> None:
    setup = prepare_training(
        tiny_finetune_config(tiny_m3_path, tmp_path / "ft"), ["The Rhine flows north."]
    )
    own = load_state_dict_safely(tiny_m3_path / "sparse_linear.pt")
    for name, value in setup.model.require_heads().sparse_linear.state_dict().items():
        torch.testing.assert_close(value, own[name])


def test_a_dense_only_start_trains_from_the_fitted_head(
    tiny_dense_path: Path, tmp_path: Path
) -> None:
    passages = ["The Rhine flows north.", "Warsaw is in Poland.", "The Alps are high."]
    fitted = prepare_training(tiny_finetune_config(tiny_dense_path, tmp_path / "a"), passages)
    state = fitted.model.require_heads().sparse_linear.state_dict()
    assert state["weight"].any()  # (the uniform start's weight is 0)
    # the start folder is left dense-only: the fitted head is the run's own
    assert M3Encoder.from_pretrained(tiny_dense_path).available_heads == {Head.DENSE}


def test_sparse_start_is_checked() -> None:
    cfg = FinetuneConfig(model="m", output_path="o", sparse_start="uniform")
    assert cfg.sparse_start is SparseStart.UNIFORM
    with pytest.raises(
        ValueError, match="sparse_start must be one of 'idf', 'uniform', not 'bm25'"
    ):
        FinetuneConfig(model="m", output_path="o", sparse_start="bm25")


def test_fit_and_fit_spans_fit_the_head_to_what_they_train_on(
    tiny_dense_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pairs: every positive and hard negative; spans: the paragraphs (positive and negative
    spans), not whole documents, whose first window alone the fit would read."""
    import m3kit.finetune.training_loop as training_loop

    seen: list[list[str]] = []
    fit = training_loop.fit_sparse_head

    def record(model: Any, tokenizer: Any, passages: Sequence[str], **kw: Any) -> float:
        seen.append(list(passages))
        return fit(model, tokenizer, passages, **kw)

    monkeypatch.setattr(training_loop, "fit_sparse_head", record)
    result = M3Finetuner(tiny_finetune_config(tiny_dense_path, tmp_path / "p")).fit(toy_examples)
    assert set(seen[0]) == {p for ex in toy_examples for p in (*ex.pos, *ex.neg)}
    assert M3Encoder.from_pretrained(result.path).available_heads == ALL_HEADS
    assert result.sparse_fit_seconds > 0  # (training work outside train_seconds: reported)
    doc = "The Rhine flows north.\n\nWarsaw is in Poland.\n\nThe Alps are high."
    spans = [(0, 22), (24, 44), (46, len(doc))]
    rows = [
        SpanExample(f"question {i}?", doc, s, tuple(o for o in spans if o != s))
        for i, s in enumerate(spans)
    ] * 2
    cfg = tiny_finetune_config(
        tiny_dense_path, tmp_path / "s", passage_max_length=96, num_negatives=0
    )
    M3Finetuner(cfg).fit_spans(rows)
    assert sorted(set(seen[1])) == sorted(doc[a:b] for a, b in spans)
    # uniform: nothing fitted
    uniform = M3Finetuner(
        tiny_finetune_config(tiny_dense_path, tmp_path / "u", sparse_start="uniform")
    ).fit(toy_examples)
    assert len(seen) == 2 and uniform.sparse_fit_seconds == 0.0


def test_save_start_saves_the_model_fit_starts_from(
    tiny_dense_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The "before" of a report is the fitted sparse head fit() trains from, not the uniform
    one save_start_checkpoint saves (whose sparse gain would include the fit)."""
    import m3kit.finetune.training_loop as training_loop

    heads: list[dict[str, torch.Tensor]] = []
    run = training_loop.run_training

    def record(cfg: Any, setup: Any, *args: Any) -> Any:
        state = setup.model.require_heads().sparse_linear.state_dict()
        heads.append({k: v.detach().clone() for k, v in state.items()})
        return run(cfg, setup, *args)

    monkeypatch.setattr("m3kit.finetune.trainer.run_training", record)
    finetuner = M3Finetuner(tiny_finetune_config(tiny_dense_path, tmp_path / "ft"))
    saved = finetuner.save_start(toy_examples, tmp_path / "start")
    finetuner.fit(toy_examples)
    stored = load_state_dict_safely(saved / "sparse_linear.pt")
    assert stored["weight"].any()  # fitted (the uniform start's weight is 0)
    for name, value in heads[0].items():
        torch.testing.assert_close(stored[name], value)
    assert M3Encoder.from_pretrained(saved).available_heads == ALL_HEADS
    # with sparse_start="uniform" it is the new heads as created: save_start_checkpoint's
    uniform = M3Finetuner(
        tiny_finetune_config(tiny_dense_path, tmp_path / "u", sparse_start="uniform")
    ).save_start(toy_examples, tmp_path / "start-u")
    created = save_start_checkpoint(tiny_dense_path, tmp_path / "created", seed=42)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        ours, theirs = (
            load_state_dict_safely(uniform / name),
            load_state_dict_safely(created / name),
        )
        for key, value in ours.items():
            torch.testing.assert_close(value, theirs[key])
    with pytest.raises(ValueError, match="no training examples"):
        finetuner.save_start([], tmp_path / "none")
    # the query instruction fit() saves (the config's), and fit()'s refusals
    prefixed = M3Finetuner(
        tiny_finetune_config(tiny_dense_path, tmp_path / "q", query_instruction="query: ")
    )
    start = resolve_checkpoint(prefixed.save_start(toy_examples, tmp_path / "start-q"))
    trained = resolve_checkpoint(prefixed.fit(toy_examples).path)
    assert start.query_instruction == trained.query_instruction == "query: "
    with pytest.raises(ValueError, match="span"):
        M3Finetuner(
            tiny_finetune_config(tiny_dense_path, tmp_path / "s", span_negatives=1)
        ).save_start(toy_examples, tmp_path / "start-s")
