"""An encoder's fingerprint names the weights and settings it has now, not those it had.

The fingerprint is computed once per encoder and cached, and its weights digest was the
checkpoint files' digest whatever the model held: weights trained in place (an optimiser step,
``load_state_dict``, ``copy_``, a fused optimiser or an edit through ``.data``), parameters
replaced, or a setting reassigned (``max_length``) after loading kept the files' identity,
before or after the first fingerprint. An index then took vectors of other weights as the
collection's encoder's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec
from m3kit.fingerprint import encoder_fingerprint
from m3kit.weights import tensors_sha256, weights_digest


def _sgd_step(model: Any) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    torch.optim.SGD(model.parameters(), lr=0.1).step()


def _fused_adamw_step(model: Any) -> None:  # invisible to torch's version counter
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    torch.optim.AdamW(model.parameters(), lr=0.1, fused=True).step()


def _load_state_dict(model: Any) -> None:
    model.load_state_dict({k: v * 1.5 for k, v in model.state_dict().items()})


def _through_data(model: Any) -> None:
    for p in model.parameters():
        p.data.mul_(1.5)


def _replace_parameter(model: Any) -> None:
    layer = model.backbone.get_input_embeddings()
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 1.5)


def _cast(model: Any) -> None:
    model.to(torch.bfloat16)


CHANGES: dict[str, Callable[[Any], None]] = {
    "optimiser step": _sgd_step,
    "fused optimiser step": _fused_adamw_step,
    "load_state_dict": _load_state_dict,
    "edit through .data": _through_data,
    "parameter replaced": _replace_parameter,
    "cast": _cast,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_weights_changed_after_the_fingerprint_change_it(change: str, tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    before = encoder_fingerprint(enc)
    assert before.weights == weights_digest(None, tiny_m3_path)
    CHANGES[change](enc.model)
    after = encoder_fingerprint(enc)
    assert after.weights == f"tensors-sha256:{tensors_sha256(enc.model)}"
    assert [d[0] for d in before.differences(after)] == ["weights"]
    assert encoder_fingerprint(enc) is after  # taken again once, then cached


@pytest.mark.parametrize("change", ["optimiser step", "load_state_dict", "parameter replaced"])
def test_weights_changed_before_the_first_fingerprint_are_not_the_files(
    change: str, tiny_m3_path: Path
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    CHANGES[change](enc.model)
    assert encoder_fingerprint(enc).weights == f"tensors-sha256:{tensors_sha256(enc.model)}"


def test_a_model_given_with_a_checkpoint_it_was_not_loaded_from_is_named_by_its_tensors(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    enc_a = M3Encoder.from_pretrained(a, dtype="fp32")
    enc_b = M3Encoder.from_pretrained(b, dtype="fp32")
    # b's model labelled with a's folder: it used to be fingerprinted as a's files
    mixed = M3Encoder(enc_b.model, enc_b.tokenizer, info=enc_a.info, precision="fp32")
    assert encoder_fingerprint(mixed).weights == f"tensors-sha256:{tensors_sha256(enc_b.model)}"
    assert not encoder_fingerprint(mixed).same_encoder(encoder_fingerprint(enc_a))


def test_a_setting_reassigned_after_the_fingerprint_changes_it(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    before = encoder_fingerprint(enc)
    enc.max_length = 16
    enc.query_instruction = "Query: "
    after = encoder_fingerprint(enc)
    assert (after.max_length, after.query_instruction) == (16, "Query: ")
    assert after.weights == before.weights  # the weights did not change: not digested again


def test_a_model_built_in_memory_is_named_by_the_tensors_it_holds_now(
    tiny_encoder: M3Encoder,
) -> None:
    clone = copy.deepcopy(tiny_encoder.model)
    enc = M3Encoder(clone, tiny_encoder.tokenizer, precision="fp32")
    first = encoder_fingerprint(enc)
    assert first.weights == f"tensors-sha256:{tensors_sha256(clone)}"
    _sgd_step(clone)
    assert encoder_fingerprint(enc).weights == f"tensors-sha256:{tensors_sha256(clone)}"
    assert encoder_fingerprint(enc).weights != first.weights


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_the_precision_m3kit_casts_to_keeps_the_files_digest(
    dtype: str, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit import weights

    fp32 = encoder_fingerprint(M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32"))
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype=dtype, backend="torch")
    got = encoder_fingerprint(enc)
    assert got.weights == fp32.weights and got.same_encoder(fp32)
    EncoderSpec.of(enc)  # workers load the same files: accepted

    def never(*args: object) -> str:
        raise AssertionError("an unchanged encoder's weights were digested again")

    monkeypatch.setattr(weights, "tensors_sha256", never)
    monkeypatch.setattr(weights, "_file_sha256", never)
    for _ in range(3):  # the check re-reads no weight
        assert encoder_fingerprint(enc) is got


def test_a_pool_spec_refuses_an_encoder_changed_in_memory(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    EncoderSpec.of(enc)
    _sgd_step(enc.model)
    # workers would load the files and pass as this encoder's
    with pytest.raises(ValueError, match=r"changed\s+in memory since it was loaded"):
        EncoderSpec.of(enc)
