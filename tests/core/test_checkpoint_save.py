"""Saving over an earlier checkpoint: a save that fails keeps the earlier one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from m3kit import CheckpointError, M3Encoder, Pooling
from m3kit.checkpoint import SAVING_FILE, SEARCH_FILE, resolve_checkpoint

TEXTS = ["where is the river?", "北京"]


def test_a_save_that_fails_over_a_good_checkpoint_leaves_that_checkpoint(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fine-tune saving over its own output folder wrote the new files in place: a save
    that failed partway (disk full) left the folder refused, the earlier checkpoint lost."""
    from m3kit.heads import M3Heads

    old = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    out = old.model.save(tmp_path / "out", old.tokenizer, query_instruction="q: ")
    (out / "notes.txt").write_text("mine")
    (out / SEARCH_FILE).write_text("{}")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    old_vectors = M3Encoder.from_pretrained(out, dtype="fp32").encode(TEXTS)

    new = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", pooling="mean")
    write_heads = M3Heads.save

    def disk_full(self: M3Heads, folder: Path) -> None:
        write_heads(self, folder)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(M3Heads, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        new.model.save(out, new.tokenizer)

    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    info = resolve_checkpoint(out)
    assert info.pooling is Pooling.CLS and info.query_instruction == "q: "
    again = M3Encoder.from_pretrained(out, dtype="fp32").encode(TEXTS)
    np.testing.assert_allclose(again.dense, old_vectors.dense, atol=1e-6)
    assert again.sparse == old_vectors.sparse
    assert {p.name for p in out.iterdir() if p.name.startswith(".m3kit")} == set()


def test_a_save_over_a_checkpoint_keeps_the_users_files_not_the_stale_calibration(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """The new checkpoint is swapped in whole: files of the folder that are no checkpoint's
    (notes, a log folder) stay; the search calibration of the old weights and other
    libraries' exports of them (``onnx/``, ``openvino/``) do not."""
    model, tok = tiny_encoder.model, tiny_encoder.tokenizer
    out = model.save(tmp_path / "out", tok, query_instruction="q: ")
    os.chmod(out, 0o750)
    (out / "notes.txt").write_text("mine")
    (out / "logs").mkdir()
    (out / "logs" / "train.log").write_text("step 1")
    (out / SEARCH_FILE).write_text("{}")
    # sentence-transformers' exports of the old weights (SentenceTransformer(path,
    # backend="onnx") loads onnx/model.onnx as it is: beside new weights, the old model)
    for export in ("onnx", "openvino"):
        (out / export).mkdir()
        (out / export / "model.bin").write_bytes(b"old weights")
    # transformers' TensorFlow / Flax and rust-bert weights (all-MiniLM-L6-v2 ships them)
    others = {"tf_model.h5", "flax_model.msgpack", "rust_model.ot"}
    for name in others:
        (out / name).write_bytes(b"old weights")

    assert model.save(out, tok, max_length=64) == out
    names = {p.name for p in out.iterdir()}
    assert {"notes.txt", "logs"} <= names and not names & {SEARCH_FILE, SAVING_FILE}
    assert not names & {"onnx", "openvino", *others}
    assert (out / "logs" / "train.log").read_text() == "step 1"
    assert json.loads((out / "m3kit.json").read_text())["query_instruction"] is None
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert not [p for p in out.iterdir() if p.name.startswith(".m3kit")]
    assert M3Encoder.from_pretrained(out).max_length == 64


def test_a_save_killed_while_writing_leaves_a_refused_folder_not_the_checkpoint(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save killed while writing (no clean-up runs) leaves its folder with the marker:
    m3kit refuses to load it, and the checkpoint beside it still loads as it was."""
    import m3kit.checkpoint_save as checkpoint_save
    from m3kit.heads import M3Heads

    out = tiny_encoder.model.save(tmp_path / "out", tiny_encoder.tokenizer, max_length=64)
    write_heads = M3Heads.save

    def killed(self: M3Heads, folder: Path) -> None:
        write_heads(self, folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(M3Heads, "save", killed)
    monkeypatch.setattr(checkpoint_save, "_remove", lambda path: None)  # as if killed
    with pytest.raises(KeyboardInterrupt):
        tiny_encoder.model.save(out, tiny_encoder.tokenizer)
    (left,) = (p for p in out.iterdir() if p.name.startswith(".m3kit"))
    assert left.name.startswith(".m3kit-saving-")
    with pytest.raises(CheckpointError, match="did not finish"):
        resolve_checkpoint(left)
    assert resolve_checkpoint(out).max_length == 64


@pytest.mark.parametrize("killed", [False, True])
def test_a_swap_that_fails_is_undone_and_one_killed_is_refused(
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    killed: bool,
) -> None:
    """The new files are moved in one by one: a move that fails puts the old checkpoint
    back; a save killed there leaves the folder refused, the old checkpoint whole aside."""
    import m3kit.checkpoint_save as checkpoint_save

    model, tok = tiny_encoder.model, tiny_encoder.tokenizer
    out = model.save(tmp_path / "out", tok, max_length=64)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rename = os.rename

    def failing(src: Path, dst: Path) -> None:
        if Path(src).parent.name.startswith(".m3kit-saving-") and Path(src).name == "m3kit.json":
            raise OSError(5, "Input/output error")
        rename(src, dst)

    monkeypatch.setattr(checkpoint_save.os, "rename", failing)
    if killed:
        monkeypatch.setattr(checkpoint_save, "_undo", lambda *args, **kwargs: None)
    with pytest.raises(OSError, match="Input/output"):
        model.save(out, tok, max_length=32)
    if not killed:
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
        assert resolve_checkpoint(out).max_length == 64
        return
    with pytest.raises(CheckpointError, match="did not finish.*m3kit-old"):
        resolve_checkpoint(out)
    (aside,) = out.glob(".m3kit-old-*")
    assert resolve_checkpoint(aside).max_length == 64


def test_a_model_held_in_bf16_is_saved_as_float32_with_a_warning(
    tiny_m3_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``dtype="auto"`` holds bf16 weights on a CPU with native bf16 (fp32 elsewhere): saving
    such a model wrote a bf16 checkpoint (config dtype bfloat16, which transformers then loads
    in bf16, emulated and slow on CPUs without it), so the file depended on the CPU."""
    from safetensors import safe_open

    held = M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16")
    with caplog.at_level("WARNING", logger="m3kit.model"):
        out = held.model.save(tmp_path / "out", held.tokenizer)
    assert "holds torch.bfloat16 weights" in caplog.text and "dtype='fp32'" in caplog.text
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert {p.dtype for p in held.model.backbone.parameters()} == {torch.bfloat16}  # untouched
    exact = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    caplog.clear()
    with caplog.at_level("WARNING", logger="m3kit.model"):
        exact.model.save(tmp_path / "exact", exact.tokenizer)
    assert "holds" not in caplog.text


def test_a_save_over_a_folder_holding_a_peft_adapter_moves_the_adapter_out(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """A PEFT adapter an earlier experiment saved in the folder stayed beside the new
    checkpoint: transformers (peft installed) then loaded the base model its
    ``adapter_config.json`` names plus that adapter, not the saved weights, and a model
    trained from the folder saved as an adapter only (no config.json, no weights)."""
    from m3kit.checkpoint import PEFT_ADAPTER_FILES

    out = tmp_path / "out"
    out.mkdir()
    adapter_config = {"peft_type": "LORA", "base_model_name_or_path": "other", "r": 2}
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    (out / "adapter_model.safetensors").write_bytes(b"old adapter")
    (out / "adapter_model.bin").write_bytes(b"old adapter")
    (out / "README.md").write_text("my notes")  # peft's model card: the user's to keep

    tiny_encoder.model.save(out, tiny_encoder.tokenizer)
    names = {p.name for p in out.iterdir()}
    assert not names & set(PEFT_ADAPTER_FILES)
    assert (out / "README.md").read_text() == "my notes"
    assert resolve_checkpoint(out).path == out  # no longer refused as an adapter folder
