"""The collection fingerprint names the checkpoint an encoder loaded, not what the folder
holds when the fingerprint is first computed.

The fingerprint digests the checkpoint's files lazily (at ``M3Index.open``, ``EncoderPool``,
...). Files rewritten after the encoder loaded them (a fine-tune saved into the same folder)
used to be digested as the encoder's own: the collection then recorded the new files' identity
over vectors of the old weights, and a worker that loaded the new files passed the identity
check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec
from m3kit.errors import CheckpointChangedError
from m3kit.fingerprint import encoder_fingerprint
from m3kit.testing import build_tiny_m3_checkpoint, replace_weight_files
from m3kit.weights import weight_files


def test_weights_rewritten_after_loading_are_not_the_encoders(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    replace_weight_files(a, b)  # after loading, before the first fingerprint
    with pytest.raises(CheckpointChangedError, match=r"changed since .* loaded") as err:
        encoder_fingerprint(enc)
    assert str(a) in str(err.value) and "model.safetensors" in str(err.value)


def test_a_pool_spec_refuses_an_encoder_whose_files_changed(
    two_checkpoints: tuple[Path, Path],
) -> None:
    # the reviewer's case: the parent's spec named b's files, so a worker loading b passed
    # the identity check and its vectors were stored as the parent's
    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    replace_weight_files(a, b)
    with pytest.raises(CheckpointChangedError, match="M3Encoder.from_pretrained"):
        EncoderSpec.of(enc)


def test_a_fingerprint_taken_before_the_change_stays_and_workers_are_refused(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    before = encoder_fingerprint(enc)
    spec = EncoderSpec.of(enc)
    replace_weight_files(a, b)
    assert encoder_fingerprint(enc) == before  # computed from what it loaded: kept
    with pytest.raises(ValueError, match="not the one the parent loaded"):
        spec.load("cpu")


def test_a_config_edited_after_loading_is_not_the_encoders(tmp_path: Path) -> None:
    # the architecture is read from config.json: an edit after loading would be recorded as
    # the architecture of a model that never ran with it
    folder = build_tiny_m3_checkpoint(tmp_path / "m")
    enc = M3Encoder.from_pretrained(folder, dtype="fp32")
    config = folder / "config.json"
    data = json.loads(config.read_text())
    data["layer_norm_eps"] = 1e-3
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointChangedError, match="config.json"):
        encoder_fingerprint(enc)


def test_a_plain_load_reads_no_weights_and_the_fingerprint_reads_them_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit import weights

    folder = build_tiny_m3_checkpoint(tmp_path / "m")
    read: list[str] = []
    digest = weights._file_sha256
    monkeypatch.setattr(weights, "_file_sha256", lambda f: read.append(f.name) or digest(f))
    enc = M3Encoder.from_pretrained(folder, dtype="fp32")
    assert read == []  # loading digests nothing: only the first fingerprint does
    fp = encoder_fingerprint(enc)
    assert sorted(read) == sorted(f.name for f in weight_files(folder))
    again = M3Encoder.from_pretrained(folder, dtype="fp32")
    assert encoder_fingerprint(again) == fp and len(read) == len(weight_files(folder))


def test_onnx_refuses_files_changed_while_it_exported(
    two_checkpoints: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an ONNX encoder takes its fingerprint at construction (its torch weights are released
    # after): files rewritten between the load and then are refused the same way
    pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")
    from m3kit import encoder as encoder_module

    a, b = two_checkpoints
    open_runner = encoder_module.open_onnx_runner

    def rewritten_meanwhile(*args: object) -> object:
        replace_weight_files(a, b)
        return open_runner(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder_module, "open_onnx_runner", rewritten_meanwhile)
    with pytest.raises(CheckpointChangedError, match="model.safetensors"):
        M3Encoder.from_pretrained(a, backend="onnx", onnx_cache_dir=tmp_path / "onnx")
