"""FinetuneConfig and M3Finetuner refuse settings that would train wrongly or not at all, before
training (moved from test_trainer.py, which holds the training itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.finetune import FinetuneConfig, M3Finetuner, TrainingExample
from m3kit.finetune.positives import refuse_lone_positives
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
    "rows",
    [
        # one query with 3 relevant passages (M3FinetuneEngine's use_all_docs rows): each
        # passage is a positive of the query, masked out of its candidates
        [TrainingExample("capital of France", (p,)) for p in ("Paris.", "Paris, France.", "Lyon?")],
        # 3 queries of one passage (one copy whitespace-different): a single candidate
        [
            TrainingExample("capital of France", ("Paris is the capital.",)),
            TrainingExample("French capital", ("Paris is  the capital.\n",)),
            TrainingExample("Paris", ("Paris is the capital.",)),
        ],
    ],
    ids=["one-query-3-passages", "3-queries-1-passage"],
)
def test_a_run_whose_rows_hold_one_query_or_one_passage_is_refused(
    tiny_m3_path: Path, tmp_path: Path, rows: list[TrainingExample]
) -> None:
    """Distinct texts count, not rows: these runs trained nothing (loss 0.0 at every step)
    and saved the start model as a fine-tuned one."""
    cfg = _config(tiny_m3_path, tmp_path / "ft", batch_size=8, num_negatives=0)
    with pytest.raises(ValueError, match=r"no query has anything to contrast.*nothing would"):
        M3Finetuner(cfg).fit(rows)
    assert not (tmp_path / "ft").exists()  # refused before loading and saving
    if len({ex.query for ex in rows}) == 1:  # unmasked, its other positives are negatives
        refuse_lone_positives(rows, batch_size=8, num_negatives=0, mask_shared_positives=False)
    # one query about a passage of another is enough
    extra = TrainingExample("where is Lyon", ("Lyon is in France.",))
    refuse_lone_positives([*rows, extra], batch_size=8, num_negatives=0)


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


def test_an_output_folder_of_other_files_or_an_empty_path_is_refused_before_training(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Saved into an application's folder, the checkpoint replaced the user's files named
    like a checkpoint's (their ``onnx/`` folder, ``vocab.txt``, ``config.json``) without a
    word; ``output_path=""`` saved into the current directory."""
    import m3kit.finetune.trainer as trainer
    from m3kit.finetune.training_loop import save_start_checkpoint

    app = tmp_path / "app"
    (app / "onnx").mkdir(parents=True)
    (app / "onnx" / "my_model.onnx").write_text("mine")
    (app / "config.json").write_text('{"my_setting": true}')
    (app / "vocab.txt").write_text("my words")
    before = {p: p.read_bytes() for p in app.rglob("*") if p.is_file()}

    def no_training(*args: object) -> None:
        raise AssertionError("the run trained before refusing its output path")

    monkeypatch.setattr(trainer, "run_training", no_training)
    monkeypatch.chdir(app)
    for out, message in (
        (app, r"output_path .*app.* holds no model checkpoint .* \(config\.json, onnx, vocab"),
        ("", "output_path is empty"),
    ):
        with pytest.raises(ValueError, match=message):
            M3Finetuner(_config(tiny_m3_path, out)).fit(toy_examples)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            save_start_checkpoint(tiny_m3_path, out)
    assert {p: p.read_bytes() for p in app.rglob("*") if p.is_file()} == before


def test_an_output_folder_holding_a_checkpoint_or_only_hidden_files_is_accepted(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A checkpoint's folder (the start model's own too), a PEFT adapter's, an empty one, one
    holding only hidden entries (what a killed save leaves) and one of files no save replaces
    (a README, logs) may be saved into."""
    from m3kit.finetune.run_checks import check_output_path

    check_output_path(tiny_m3_path)
    check_output_path(tmp_path / "new" / "folder")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter" / "README.md").write_text("card")
    check_output_path(tmp_path / "adapter")
    (tmp_path / "left" / ".m3kit-saving-0a1b2c3d").mkdir(parents=True)
    (tmp_path / "left" / ".DS_Store").write_text("")
    check_output_path(tmp_path / "left")
    # a folder of notes (a cloned model repo's card, logs) keeps them: a save writes beside
    (tmp_path / "notes" / "logs").mkdir(parents=True)
    (tmp_path / "notes" / "README.md").write_text("card")
    (tmp_path / "notes" / ".gitattributes").write_text("*.bin lfs")
    check_output_path(tmp_path / "notes")


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


def test_a_start_model_folder_holding_a_peft_adapter_is_refused_before_training(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    """transformers applied the folder's PEFT adapter to the base model it names: the run
    trained that model, and saved it as an adapter only (no config.json, no weights)."""
    import shutil

    from m3kit import CheckpointError

    start = tmp_path / "start"
    shutil.copytree(tiny_m3_path, start)
    (start / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(CheckpointError, match=r"adapter_config\.json.*merge_and_unload"):
        M3Finetuner(_config(start, tmp_path / "ft")).fit(toy_examples)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"seed": None}, r"seed must be a whole number \(an int\), got None"),
        ({"seed": 1.5}, r"seed must be a whole number \(an int\), got 1\.5"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32 - 1\].*got -1"),
        ({"seed": 2**32}, r"seed must be in \[0, 2\*\*32 - 1\]"),
        ({"query_instruction": 5}, "query_instruction must be a string .*got int 5"),
    ],
)
def test_a_seed_or_query_instruction_that_fails_inside_the_run_is_refused(
    tiny_m3_path: Path, tmp_path: Path, setting: dict[str, object], message: str
) -> None:
    """Each failed only inside the run, after the start model had loaded, with numpy's or
    Python's error naming no setting (``TypeError: unsupported operand type(s) for +``)."""
    with pytest.raises(ValueError, match=message):
        _config(tiny_m3_path, tmp_path, **setting)
    assert _config(tiny_m3_path, tmp_path, seed=2**32 - 1, query_instruction="").seed == 2**32 - 1


def test_a_gpu_that_is_not_here_is_refused_when_the_config_is_made(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device="cuda"`` with a CPU-only torch failed after the start model had loaded, with
    torch's bare ``AssertionError: Torch not compiled with CUDA enabled``."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match=r"device 'cuda': CUDA is not available here"):
            _config(tiny_m3_path, tmp_path, device=device)


@pytest.mark.parametrize("device", ["cpu", "cpu:0", None])
def test_fp16_on_the_cpu_is_refused_when_configured(tmp_path: Path, device: str | None) -> None:
    """``precision="fp16"`` on the CPU was refused only inside the run: after mining
    negatives and loading the start model (without a GPU ``device=None`` is the CPU)."""
    import torch

    if device is None and torch.cuda.is_available():
        pytest.skip("device=None trains on the GPU here")
    with pytest.raises(ValueError, match="fp16 training needs a GPU"):
        FinetuneConfig(model="m", output_path=tmp_path / "ft", precision="fp16", device=device)
    FinetuneConfig(model="m", output_path=tmp_path / "ft", precision="bf16", device=device)
