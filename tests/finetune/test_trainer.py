"""M3Finetuner: the saved checkpoint loads in m3kit and FlagEmbedding alike; options work.
(What each query trains against, positives masked and negatives: test_trainer_negatives.py.)"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from m3kit import M3Encoder
from m3kit.finetune import FinetuneConfig, LossConfig, M3Finetuner, TrainingExample
from m3kit.finetune.trainer import NEW_SPARSE_WEIGHT, save_start_checkpoint
from m3kit.heads import load_state_dict_safely
from m3kit.outputs import ALL_HEADS, Head
from tests.finetune.conftest import assert_flagembedding_matches, tiny_finetune_config

TEXTS = [
    "Where does the Rhine flow?",
    "The Rhine flows from the Swiss Alps through Germany to the North Sea.",
    "Warsaw is the capital and largest city of Poland.",
]


_config = tiny_finetune_config


def _backbone(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_trained_checkpoint_round_trips_through_flagembedding(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    result = M3Finetuner(_config(tiny_m3_path, tmp_path / "ft")).fit(toy_examples)
    assert result.steps == 2 and result.heads == ALL_HEADS and result.examples == 12
    assert result.log and {"dense", "sparse", "colbert", "ensemble", "total"} <= set(result.log[0])

    # it really trained: backbone and both heads moved away from the start checkpoint
    start, after = _backbone(tiny_m3_path), _backbone(result.path)
    assert any(not torch.equal(start[k], after[k]) for k in start)
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        a = load_state_dict_safely(tiny_m3_path / name)["weight"]
        b = load_state_dict_safely(result.path / name)["weight"]
        assert not torch.equal(a, b)

    assert_flagembedding_matches(result.path, TEXTS)


def test_dense_only_start_gets_new_heads(
    tiny_dense_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    assert M3Encoder.from_pretrained(tiny_dense_path).available_heads == {Head.DENSE}
    start = save_start_checkpoint(tiny_dense_path, tmp_path / "start", seed=3)
    result = M3Finetuner(_config(tiny_dense_path, tmp_path / "ft", seed=3)).fit(toy_examples)
    encoder = M3Encoder.from_pretrained(result.path, dtype="fp32")
    assert encoder.available_heads == ALL_HEADS
    out = encoder.encode(TEXTS)
    assert out.dense.shape == (3, 32) and out.colbert[0].shape[1] == 32
    # the "before" checkpoint holds exactly the heads training started from (same seed);
    # a new sparse head starts at a uniform token weight (token overlap), never a dead ReLU
    start_enc = M3Encoder.from_pretrained(start, dtype="fp32")
    assert start_enc.available_heads == ALL_HEADS
    sparse = start_enc.encode(["Rhine Rhine Alps"], heads=["sparse"]).sparse[0]
    np.testing.assert_allclose(sparse.values, NEW_SPARSE_WEIGHT, rtol=1e-6)
    state = load_state_dict_safely(start / "sparse_linear.pt")
    assert not state["weight"].any() and float(state["bias"]) == pytest.approx(NEW_SPARSE_WEIGHT)
    # a new ColBERT head starts as the identity: MaxSim over the backbone's own token states
    colbert = load_state_dict_safely(start / "colbert_linear.pt")
    torch.testing.assert_close(colbert["weight"], torch.eye(32))
    assert not colbert["bias"].any()
    again = save_start_checkpoint(tiny_dense_path, tmp_path / "start2", seed=3)
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        torch.testing.assert_close(
            load_state_dict_safely(start / name)["weight"],
            load_state_dict_safely(again / name)["weight"],
        )


def test_freeze_encoder_trains_heads_only(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    cfg = _config(
        tiny_m3_path,
        tmp_path / "ft",
        freeze_encoder=True,
        heads=frozenset({Head.SPARSE}),
        precision="bf16",
        gradient_accumulation_steps=2,
    )
    result = M3Finetuner(cfg).fit(toy_examples)
    assert result.precision == "bf16"
    assert set(result.log[0]) == {"sparse", "total"}
    start, after = _backbone(tiny_m3_path), _backbone(result.path)
    assert all(torch.equal(start[k], after[k]) for k in start)
    a = load_state_dict_safely(tiny_m3_path / "sparse_linear.pt")["weight"]
    b = load_state_dict_safely(result.path / "sparse_linear.pt")["weight"]
    assert not torch.equal(a, b)


def test_frozen_layers_stay_fixed(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    result = M3Finetuner(_config(tiny_m3_path, tmp_path / "ft", frozen_layers=1)).fit(toy_examples)
    start, after = _backbone(tiny_m3_path), _backbone(result.path)
    frozen = [k for k in start if "embeddings." in k or ".layer.0." in k]
    trained = [k for k in start if ".layer.1." in k]
    assert frozen and trained
    assert all(torch.equal(start[k], after[k]) for k in frozen)
    assert any(not torch.equal(start[k], after[k]) for k in trained)
    with pytest.raises(ValueError, match=r"frozen_layers must be in \[0, 1\]"):
        M3Finetuner(_config(tiny_m3_path, tmp_path / "x", frozen_layers=2)).fit(toy_examples)
    with pytest.raises(ValueError, match="frozen_layers must be >= 0"):
        _config(tiny_m3_path, tmp_path, frozen_layers=-1)


def test_auto_precision_trains_in_what_the_cpu_runs_natively(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import m3kit.precision
    from m3kit.precision import Bf16Support

    for native, want in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(m3kit.precision, "probe_bf16", lambda d, n=native: Bf16Support(n, ""))
        cfg = _config(tiny_m3_path, tmp_path / want, precision="auto", max_steps=1)
        assert M3Finetuner(cfg).fit(toy_examples).precision == want


def test_a_gpu_index_the_trainer_would_not_train_on_is_refused(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' Trainer trains on cuda:0 whatever index is given: ``device="cuda:1"``
    on a T4 (0) + A100 (1) machine had "auto" probe the A100 (bf16) and train in bf16 on the
    T4, which only emulates it. The index is refused, naming CUDA_VISIBLE_DEVICES."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("cuda:1", torch.device("cuda", 2)):
        with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=.* and device='cuda'"):
            _config(tiny_m3_path, tmp_path / "ft", device=device)
    for device in ("cuda", "cuda:0", "cpu"):  # what the Trainer trains on
        assert _config(tiny_m3_path, tmp_path / "ft", device=device).device == device


def test_flagembedding_preset_reproduces_the_original_recipe(tmp_path: Path) -> None:
    cfg = FinetuneConfig.flagembedding("model", tmp_path, epochs=2)
    # the settings m3kit used before the MiniLM sweep changed its defaults
    assert (cfg.learning_rate, cfg.temperature, cfg.num_negatives) == (2e-5, 0.02, 3)
    assert (cfg.query_max_length, cfg.passage_max_length) == (64, 256)
    assert cfg.ensemble_weights == (1.0, 0.3, 1.0) and cfg.self_distill
    assert (cfg.warmup_ratio, cfg.weight_decay) == (0.1, 0.01)
    assert not cfg.symmetric and cfg.false_negative_margin is None
    assert cfg.sparse_temperature is None and cfg.colbert_temperature is None
    assert cfg.epochs == 2  # overrides apply on top of the preset
    assert cfg.loss_config() == LossConfig.flagembedding()
    with pytest.raises(ValueError, match="colbert_temperature"):
        FinetuneConfig.flagembedding("model", tmp_path, colbert_temperature=-1.0)
    # m3kit's own defaults differ from the preset by the symmetric term, the learning rate
    # (by the start model's size) and the hard negatives per query (1) only
    default = FinetuneConfig("model", tmp_path)
    assert default.symmetric and default.loss_config().symmetric
    assert default.learning_rate is None and default.num_negatives == 1
    assert dataclasses.replace(default, symmetric=False, learning_rate=2e-5, num_negatives=3) == (
        dataclasses.replace(cfg, epochs=default.epochs)
    )


def test_head_learning_rate_moves_the_heads_not_the_encoder(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    cfg = _config(
        tiny_m3_path,
        tmp_path / "ft",
        learning_rate=1e-12,
        head_learning_rate=1e-2,
        weight_decay=0.0,
        symmetric=True,
        # small: at 0.1 the tiny random model's candidates all fell within the margin for
        # some dropout draws, leaving no loss to train on (8 seeds checked at 0.01)
        false_negative_margin=0.01,
        temperature=0.05,
    )
    result = M3Finetuner(cfg).fit(toy_examples)
    assert "false_negatives" in result.log[0] and result.log[0]["total"] > 0
    start, after = _backbone(tiny_m3_path), _backbone(result.path)
    # AdamW steps are at most about lr in size: the encoder moved by <= ~1e-12, the heads
    # far more (the tiny sparse head's gradients are small, so its steps are too)
    assert max(float((start[k] - after[k]).abs().max()) for k in start) < 1e-9
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        a = load_state_dict_safely(tiny_m3_path / name)["weight"]
        b = load_state_dict_safely(result.path / name)["weight"]
        assert float((a - b).abs().max()) > 1e-5
    with pytest.raises(ValueError, match="head_learning_rate"):
        _config(tiny_m3_path, tmp_path, head_learning_rate=0.0)


def test_default_learning_rate_follows_the_start_models_size(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m3kit.finetune import training_loop

    # a small model's default reaches the optimiser: at a vanishing rate nothing moves
    monkeypatch.setattr(training_loop, "SMALL_MODEL_LEARNING_RATE", 1e-12)
    cfg = _config(tiny_m3_path, tmp_path / "small", learning_rate=None, weight_decay=0.0)
    small = M3Finetuner(cfg).fit(toy_examples)
    assert small.learning_rate == 1e-12
    start, after = _backbone(tiny_m3_path), _backbone(small.path)
    assert max(float((start[k] - after[k]).abs().max()) for k in start) < 1e-9
    # the same model counted as large trains at the large models' rate
    monkeypatch.setattr(training_loop, "SMALL_MODEL_PARAMETERS", 1)
    large = M3Finetuner(_config(tiny_m3_path, tmp_path / "large", learning_rate=None)).fit(
        toy_examples
    )
    assert large.learning_rate == training_loop.LEARNING_RATE == 2e-5
    # an explicit rate wins
    explicit = M3Finetuner(_config(tiny_m3_path, tmp_path / "explicit")).fit(toy_examples)
    assert explicit.learning_rate == 1e-3


def test_set_attention_dropout_changes_attention_layers_only(tiny_m3_path: Path) -> None:
    from torch import nn

    from m3kit.finetune.training_loop import set_attention_dropout
    from m3kit.model import M3Model

    backbone = M3Model.from_pretrained(tiny_m3_path).backbone
    config = backbone.config
    before = {n: m.p for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)}
    assert set_attention_dropout(backbone, 0.0) == config.num_hidden_layers
    after = {n: m.p for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)}
    changed = {n for n in before if before[n] != after[n]}
    assert len(changed) == config.num_hidden_layers
    assert all(n.endswith("attention.self.dropout") and after[n] == 0.0 for n in changed)
    assert all(p == config.hidden_dropout_prob for n, p in after.items() if n not in changed)
    assert config.attention_probs_dropout_prob == 0.1  # the config (what is saved) stays
    with pytest.raises(ValueError, match="Sequential has no attention layer"):
        set_attention_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)), 0.0)


@pytest.mark.parametrize(("precision", "plain_kernel"), [("bf16", True), ("fp32", False)])
def test_attention_dropout_reaches_training(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    plain_kernel: bool,
) -> None:
    import json

    from m3kit.finetune import training_loop

    calls: list[tuple[float, int]] = []
    kernels: list[bool] = []
    real_set = training_loop.set_attention_dropout
    real_forward = training_loop.TrainingModule.forward_heads

    def spy_set(backbone: torch.nn.Module, p: float) -> int:
        calls.append((p, real_set(backbone, p)))
        return calls[-1][1]

    def spy_forward(self: training_loop.TrainingModule, ids: torch.Tensor, mask: torch.Tensor):  # type: ignore[no-untyped-def]
        kernels.append(self.math_attention)
        return real_forward(self, ids, mask)

    monkeypatch.setattr(training_loop, "set_attention_dropout", spy_set)
    monkeypatch.setattr(training_loop.TrainingModule, "forward_heads", spy_forward)
    cfg = _config(tiny_m3_path, tmp_path / "ft", attention_dropout=0.0, precision=precision)
    result = M3Finetuner(cfg).fit(toy_examples)
    layers = json.loads((tiny_m3_path / "config.json").read_text())["num_hidden_layers"]
    assert calls == [(0.0, layers)]
    # bf16 on CPU runs attention through the plain SDPA kernel (its fused one was slower)
    assert kernels and set(kernels) == {plain_kernel}
    saved = json.loads((result.path / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.1  # the checkpoint keeps its own
    calls.clear()
    M3Finetuner(_config(tiny_m3_path, tmp_path / "default", max_steps=1)).fit(toy_examples)
    assert calls == []  # the default keeps the model's own dropout
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\), got 1.0"):
        _config(tiny_m3_path, tmp_path, attention_dropout=1.0)


def test_the_log_holds_one_entry_per_logged_step_with_gradient_accumulation(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    # 12 rows in batches of 4 are 3 batches an epoch: with 2 accumulated per step the epoch's
    # last step has 1. The log took every 2nd batch, so 2 epochs (4 steps) logged 3 entries,
    # the third from the middle of step 3 and none from step 4
    cfg = _config(
        tiny_m3_path,
        tmp_path / "ft",
        max_steps=None,
        epochs=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
    )
    result = M3Finetuner(cfg).fit(toy_examples)
    assert result.steps == 4
    assert len(result.log) == 4
    every_other = M3Finetuner(dataclasses.replace(cfg, logging_steps=2)).fit(toy_examples)
    assert len(every_other.log) == 2
    assert every_other.log[1] == result.log[2]  # the first batch of step 3, both runs


def test_training_warns_of_the_texts_it_cuts(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Passages and queries longer than the training lengths were cut without a word (a
    positive whose answer sat past the cut taught its query nothing of it)."""
    long = TrainingExample("a question", (" ".join(["filler"] * 200) + " The answer.",))
    cfg = tiny_finetune_config(
        tiny_m3_path, tmp_path / "out", max_steps=1, query_max_length=64, passage_max_length=256
    )
    with caplog.at_level(logging.WARNING, logger="m3kit.finetune.pair_batches"):
        M3Finetuner(cfg).fit([*toy_examples, long])
    told = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith(
        "1 of 7 training passages are longer than passage_max_length=256 tokens"
    ), told
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m3kit.finetune.pair_batches"):
        M3Finetuner(cfg).fit(toy_examples)
    assert "longer than" not in caplog.text


def test_a_dense_only_start_warns_of_the_new_head_it_does_not_train(
    tiny_dense_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``heads={"dense", "sparse"}`` from a dense-only start saves a ColBERT head at its
    start (an M3 checkpoint holds both), which an index then searches with by default; the
    only word was "training new sparse and ColBERT heads"."""
    cfg = tiny_finetune_config(
        tiny_dense_path, tmp_path / "ft", max_steps=1, heads=frozenset({Head.DENSE, Head.SPARSE})
    )
    with caplog.at_level(logging.INFO, logger="m3kit.finetune.start_model"):
        result = M3Finetuner(cfg).fit(toy_examples)
    assert "training new sparse heads" in caplog.text
    warned = [r.getMessage() for r in caplog.records if "leaves out" in r.getMessage()]
    assert len(warned) == 1 and "is dense-only and heads leaves out colbert" in warned[0]
    colbert = load_state_dict_safely(result.path / "colbert_linear.pt")
    torch.testing.assert_close(colbert["weight"], torch.eye(32))  # as the warning says
