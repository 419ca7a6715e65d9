"""FinetuneConfig and M3Finetuner refuse settings that would train wrongly or not at all, before
training (moved from test_trainer.py, which holds the training itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.finetune import FinetuneConfig, M3Finetuner, TrainingExample
from m3kit.finetune.data import refuse_lone_positives
from m3kit.outputs import Head
from tests.finetune.conftest import tiny_finetune_config

_config = tiny_finetune_config


def test_bad_configs(tiny_m3_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trains nothing"):
        _config(tiny_m3_path, tmp_path, freeze_encoder=True, heads=frozenset({Head.DENSE}))
    with pytest.raises(ValueError, match="precision"):
        _config(tiny_m3_path, tmp_path, precision="int8")
    with pytest.raises(ValueError, match="unknown head"):
        _config(tiny_m3_path, tmp_path, heads=["dense", "bm25"])
    with pytest.raises(ValueError, match="no training examples"):
        M3Finetuner(_config(tiny_m3_path, tmp_path)).fit([])
    with pytest.raises(TypeError, match="not a TrainingExample"):
        M3Finetuner(_config(tiny_m3_path, tmp_path)).fit([{"query": "q", "pos": ["p"]}])  # type: ignore[list-item]
    for epochs in (float("nan"), float("inf")):  # NaN passed "<= 0" and failed after the load
        with pytest.raises(ValueError, match="epochs must be a finite number"):
            _config(tiny_m3_path, tmp_path, epochs=epochs)


def test_a_run_with_nothing_to_contrast_any_positive_with_is_refused(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """One row per batch and no hard negatives: every loss is 0, the run trained nothing and
    saved the start model (changed only by weight decay), without a word."""
    rows = [TrainingExample(f"query {i}", (f"passage {i}",)) for i in range(4)]
    for batch, data, negatives in ((1, rows, 1), (1, rows, 0), (16, rows[:1], 1)):
        cfg = _config(tiny_m3_path, tmp_path, batch_size=batch, num_negatives=negatives)
        with pytest.raises(ValueError, match="nothing would train"):
            M3Finetuner(cfg).fit(data)
    assert not (tmp_path / "model.safetensors").exists()  # refused before loading and saving
    with_negative = [TrainingExample("query", ("passage",), ("other passage",))]
    refuse_lone_positives(with_negative, batch_size=1, num_negatives=1)  # a negative: fine
    refuse_lone_positives(rows, batch_size=2, num_negatives=0)  # in-batch negatives: fine


@pytest.mark.parametrize(
    "setting",
    [
        {"num_negatives": 1.5},
        {"span_negatives": 2.0},
        {"batch_size": 2.5},
        {"gradient_accumulation_steps": 1.5},
        {"max_steps": 2.5},
        {"passage_max_length": 48.0},
        {"num_negatives": True},
    ],
)
def test_count_settings_that_are_not_whole_numbers_are_refused(
    tiny_m3_path: Path, tmp_path: Path, setting: dict[str, object]
) -> None:
    """``num_negatives=1.5`` trained rows with one negative as asked and crashed inside
    ``random.sample`` at the first row with two; ``batch_size=2.5`` failed in the DataLoader
    after the model had loaded. Each is now refused when the config is made, by name."""
    (name,) = setting
    with pytest.raises(ValueError, match=rf"{name} must be a whole number \(an int\)"):
        _config(tiny_m3_path, tmp_path, **setting)


@pytest.mark.parametrize("max_steps", [0, -3])
def test_max_steps_below_one_is_refused(tiny_m3_path: Path, tmp_path: Path, max_steps: int) -> None:
    # it was read as "not set": the run trained for its epochs instead
    with pytest.raises(ValueError, match="max_steps"):
        _config(tiny_m3_path, tmp_path, max_steps=max_steps)


@pytest.mark.parametrize(
    "lengths", [{"query_max_length": 2}, {"passage_max_length": 1}, {"passage_max_length": 0}]
)
def test_max_lengths_that_leave_no_text_are_refused(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    lengths: dict[str, int],
) -> None:
    """A length of 0 or 1 made the tokenizer skip truncation (passages trained whole); one
    that holds only the special tokens trained on queries without a word of text."""
    name = next(iter(lengths))
    with pytest.raises(ValueError, match=f"{name}={lengths[name]} leaves no room for text"):
        M3Finetuner(_config(tiny_m3_path, tmp_path / "ft", **lengths)).fit(toy_examples)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        # a warm-up longer than the run never reached the learning rate asked for
        ({"warmup_ratio": 3.0}, "warmup_ratio"),
        ({"warmup_ratio": -0.5}, "warmup_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"logging_steps": 0}, "logging_steps"),
        # a negative ensemble weight trains the ensemble against that head
        ({"ensemble_weights": (1.0, -1.0, 1.0)}, "ensemble_weights"),
        ({"ensemble_weights": (1.0, float("nan"), 1.0)}, "ensemble_weights"),
        ({"ensemble_weights": (0.0, 0.0, 0.0)}, "ensemble_weights"),
        (
            {"ensemble_weights": (0.0, 1.0, 0.0), "heads": frozenset({Head.DENSE, Head.COLBERT})},
            "ensemble_weights",
        ),
    ],
)
def test_schedule_and_ensemble_settings_that_train_wrongly_are_refused(
    tiny_m3_path: Path, tmp_path: Path, setting: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _config(tiny_m3_path, tmp_path, **setting)


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_path_that_is_a_file_is_refused_before_training(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A file as output_path (or a folder under one) failed only when the trained model was
    saved, a bare FileExistsError / NotADirectoryError after the whole run."""
    import m3kit.finetune.trainer as trainer

    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    out = existing if where == "file" else existing / "ft"

    def no_training(*args: object) -> None:
        raise AssertionError("the run trained before refusing its output path")

    monkeypatch.setattr(trainer, "run_training", no_training)
    with pytest.raises(ValueError, match=r"output_path .*notes\.txt.* is a file"):
        M3Finetuner(_config(tiny_m3_path, out)).fit(toy_examples)
    assert existing.read_text() == "mine"


def test_a_max_length_past_the_start_models_positions_is_refused_before_training(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    """The tiny checkpoint has 8,192 positions: a longer passage length failed inside the
    model, mid-training, on the first text that long."""
    with pytest.raises(ValueError, match=r"passage_max_length=9000 .*\(8192 positions\)"):
        M3Finetuner(_config(tiny_m3_path, tmp_path / "ft", passage_max_length=9000)).fit(
            toy_examples
        )
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("setting", [{"span_negatives": 2}, {"span_overlap": 4}])
def test_span_settings_on_query_passage_training_are_refused(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    setting: dict[str, int],
) -> None:
    # fit() trains on query / passage rows: span_negatives and span_overlap shape the windows
    # of fit_spans only, and were accepted and ignored (same weights as without them)
    cfg = _config(tiny_m3_path, tmp_path / "ft", **setting)
    with pytest.raises(ValueError, match=f"{next(iter(setting))}.*fit_spans"):
        M3Finetuner(cfg).fit(toy_examples)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    ("setting", "heads"),
    [
        ({"sparse_temperature": 0.05}, {Head.DENSE, Head.COLBERT}),
        ({"colbert_temperature": 0.05}, {Head.DENSE, Head.SPARSE}),
        ({"head_learning_rate": 1e-2}, {Head.DENSE}),
    ],
)
def test_a_setting_of_a_head_that_is_not_trained_is_refused(
    tmp_path: Path, setting: dict[str, float], heads: set[Head]
) -> None:
    # the run trained exactly as without it (no loss term or head layer it could change)
    name = next(iter(setting))
    with pytest.raises(ValueError, match=rf"{name}.*not trained"):
        FinetuneConfig("model", tmp_path, heads=frozenset(heads), **setting)  # type: ignore[arg-type]
    FinetuneConfig("model", tmp_path, **setting)  # type: ignore[arg-type]  # with every head


def test_a_missing_accelerate_names_the_finetune_extra(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' ``Trainer`` refuses to start without accelerate, which the ``finetune``
    extra did not list (it came only through FlagEmbedding, in ``all``): a user of
    ``m3kit[finetune]`` met transformers' own ImportError after loading the model."""
    import importlib.util

    from m3kit.errors import MissingExtraError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "accelerate" else find_spec(name, *a),
    )
    rows = [TrainingExample(f"query {i}", (f"passage {i}",)) for i in range(4)]
    with pytest.raises(MissingExtraError, match=r"accelerate .*m3kit\[finetune\]"):
        M3Finetuner(_config(tiny_m3_path, tmp_path, batch_size=2)).fit(rows)
