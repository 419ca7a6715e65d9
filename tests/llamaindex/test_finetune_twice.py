"""``M3FinetuneEngine.finetune()`` called twice trains two rounds, as LlamaIndex's
``SentenceTransformersFinetuneEngine`` does (it loads the model once and each ``finetune()``
trains it further).

The second call trained again from ``model_id`` and saved over the first checkpoint: the
first round was silently thrown away. It now continues from the checkpoint the first call
saved (``engine.result.path``), mines its hard negatives with that model, and drops the
first call's validation report and calibration once their checkpoint is replaced.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from llamaindex_m3.finetune import M3FinetuneEngine
from m3kit.encoder import M3Encoder
from m3kit.finetune import QADataset
from tests.finetune.test_span_training import _examples as span_examples

DATA = QADataset(
    queries={
        "q0": "Where does the Rhine flow?",
        "q1": "What is the atomic number of oxygen?",
        "q2": "What is the capital of Poland?",
        "q3": "What was Tesla known for?",
    },
    corpus={
        "rhine": "The Rhine flows from the Swiss Alps through Germany to the North Sea.",
        "oxygen": "Oxygen is a chemical element with symbol O and atomic number 8.",
        "warsaw": "Warsaw is the capital and largest city of Poland, on the Vistula river.",
        "tesla": "Nikola Tesla was an inventor known for alternating current systems.",
        "prime": "A prime number is a natural number greater than 1 with no other divisors.",
    },
    relevant_docs={"q0": ["rhine"], "q1": ["oxygen"], "q2": ["warsaw"], "q3": ["tesla"]},
)

#: Two steps of 2 rows on the CPU at a high learning rate: every weight moves each round.
TINY: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 2,
    "learning_rate": 1e-3,
    "passage_max_length": 48,
    "precision": "fp32",
    "device": "cpu",
    "show_progress_bar": False,
}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an M3 checkpoint: the backbone and both head files."""
    out = {f"backbone.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        out |= {f"{name}.{k}": v for k, v in state.items()}
    return out


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _miners(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders ``M3Encoder.from_pretrained`` loads from while the test runs."""
    seen: list[Path] = []
    real = M3Encoder.from_pretrained

    def spy(path: Any, **kwargs: Any) -> M3Encoder:
        seen.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(M3Encoder, "from_pretrained", spy)
    return seen


def test_a_second_finetune_call_continues_from_the_first_calls_checkpoint(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls == one call, then one call started from its checkpoint (negatives mined
    with that checkpoint); the second call used to start from ``model_id`` again and end
    with the first call's weights."""
    loaded = _miners(monkeypatch)
    out = tmp_path / "ft"
    engine = M3FinetuneEngine(
        DATA, model_id=str(tiny_m3_path), model_output_path=str(out), mine_negatives=1, **TINY
    )
    first = engine.finetune()
    assert loaded == [tiny_m3_path]  # the first call mines with the start model
    round_one = tmp_path / "round_one"
    shutil.copytree(first.path, round_one)
    second = engine.finetune()
    assert second.path == first.path == out
    assert loaded[1:] == [out]  # the second call mines with the model it continues
    twice = _weights(out)
    assert _differs(twice, _weights(round_one)), "the second call trained nothing further"
    # the same settings, started from the first round's checkpoint
    reference = M3FinetuneEngine(
        DATA,
        model_id=str(round_one),
        model_output_path=str(tmp_path / "ref"),
        mine_negatives=1,
        **TINY,
    )
    _assert_same(twice, _weights(reference.finetune().path))
    assert engine.config.model == str(tiny_m3_path)  # the engine's settings are unchanged


def test_a_second_late_chunking_call_continues_from_the_first_calls_checkpoint(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """The span path (``fit_spans``) continues the same way."""
    settings = TINY | {"passage_max_length": 96, "late_chunking": True, "batch_size": 4}
    out = tmp_path / "ft"
    engine = M3FinetuneEngine(
        span_examples(), model_id=str(tiny_m3_path), model_output_path=str(out), **settings
    )
    round_one = tmp_path / "round_one"
    shutil.copytree(engine.finetune().path, round_one)
    engine.finetune()
    twice = _weights(out)
    assert _differs(twice, _weights(round_one)), "the second call trained nothing further"
    reference = M3FinetuneEngine(
        span_examples(),
        model_id=str(round_one),
        model_output_path=str(tmp_path / "ref"),
        **settings,
    )
    _assert_same(twice, _weights(reference.finetune().path))


def test_a_replaced_checkpoint_keeps_no_report_of_the_one_before(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation report and calibration describe the checkpoint of the latest call: a
    second call whose evaluation fails after its save leaves neither of the first call's."""
    import m3kit.finetune.evaluate as evaluate

    engine = M3FinetuneEngine(
        DATA,
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "ft"),
        val_dataset=DATA,
        **TINY,
    )
    engine.finetune()
    assert engine.val_report is not None and engine.calibration is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(evaluate, "evaluate_heads", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        engine.finetune()
    assert engine.val_report is None and engine.calibration is None


def test_a_failed_calibration_leaves_the_report_of_the_new_checkpoint(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is measured before the calibration: a calibration that fails leaves it
    set (and no calibration), as before the two moved to module functions."""
    import m3kit.store.calibration as calibration

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("calibration failed")

    monkeypatch.setattr(calibration, "calibrate_fusion", broken)
    engine = M3FinetuneEngine(
        DATA,
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "ft"),
        val_dataset=DATA,
        **TINY,
    )
    with pytest.raises(RuntimeError, match="calibration failed"):
        engine.finetune()
    assert engine.val_report is not None and engine.calibration is None
