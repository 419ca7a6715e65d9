"""A checkpoint's path means one folder wherever it is read: after the working directory
changed, and with ``~`` when saving as when loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.finetune import FinetuneConfig
from m3kit.store import M3Index


def test_a_relative_folder_keeps_naming_it_after_a_change_of_directory(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loaded as "tiny", then a notebook's %cd: every fingerprint check read "tiny" under the
    # new directory and said the files changed ("Load the encoder again")
    shutil.copytree(tiny_m3_path, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    encoder = M3Encoder.from_pretrained("tiny", dtype="fp32")
    assert encoder.info is not None and encoder.info.path == tmp_path / "tiny"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with M3Index.open(encoder, ":memory:") as index:
        index.add_texts(["Berlin is the capital of Germany."], doc_ids=["d"])
        assert index.search("capital", k=1)[0].doc_id == "d"


def test_tilde_saves_where_it_loads(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "~/models/ft" was saved into a folder named "~" under the working directory, while
    # loading it read $HOME's: the older model there, silently
    from m3kit.model import M3Model

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert FinetuneConfig(tiny_m3_path, "~/models/ft").output_path == str(home / "models/ft")
    from transformers import AutoTokenizer

    model = M3Model.from_pretrained(tiny_m3_path)
    model.save("~/models/saved", AutoTokenizer.from_pretrained(tiny_m3_path))
    assert (home / "models" / "saved" / "config.json").is_file()
    assert not (work / "~").exists()
    loaded = M3Encoder.from_pretrained("~/models/saved", dtype="fp32")
    original = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    text = ["Paris is in France."]
    assert np.allclose(loaded.encode(text).dense, original.encode(text).dense, atol=1e-6)


@pytest.mark.parametrize("name", ["config.json", "colbert_linear.pt", "tokenizer.json"])
def test_a_broken_link_in_a_checkpoint_is_named(
    tiny_m3_path: Path, tmp_path: Path, name: str
) -> None:
    # a cache snapshot copied with `cp -r` keeps links to ../../blobs that point nowhere: read
    # as missing files ("no config.json"; both heads dangling loaded dense-only, silently)
    from m3kit.errors import CheckpointError

    copy = tmp_path / "snapshot"
    shutil.copytree(tiny_m3_path, copy)
    (copy / name).unlink()
    (copy / name).symlink_to("../../blobs/0123abcd")
    with pytest.raises(CheckpointError, match=f"{name} is a broken link"):
        M3Encoder.from_pretrained(copy, dtype="fp32")


def test_a_tokenizer_left_as_a_git_lfs_pointer_is_named(tiny_m3_path: Path, tmp_path: Path) -> None:
    # it failed as "could not load the tokenizer ...: Expecting value: line 1 column 1"
    from m3kit.errors import CheckpointError

    copy = tmp_path / "clone"
    shutil.copytree(tiny_m3_path, copy)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize 17082987\n"
    (copy / "tokenizer.json").write_text(pointer)
    with pytest.raises(CheckpointError, match="tokenizer.json is a Git LFS pointer"):
        M3Encoder.from_pretrained(copy, dtype="fp32")


@pytest.mark.parametrize("layout", ["sharded-safetensors", "sharded-bin", "bin"])
def test_no_pooler_is_built_for_a_checkpoint_without_one_in_any_layout(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    # only a single model.safetensors was read for pooler weights: sharded and .bin
    # checkpoints without one printed transformers' "newly initialized" report on every load
    import json

    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    from m3kit.model import M3Model

    copy = tmp_path / layout
    shutil.copytree(tiny_m3_path, copy)
    weights = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    keys = sorted(weights)
    if layout == "bin":
        torch.save(weights, copy / "pytorch_model.bin")
    else:
        kind, suffix = (
            ("model", "safetensors")
            if layout.endswith("safetensors")
            else (
                "pytorch_model",
                "bin",
            )
        )
        weight_map = {}
        for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
            name = f"{kind}-0000{i + 1}-of-00002.{suffix}"
            shard = {k: weights[k].contiguous() for k in part}
            if suffix == "bin":
                torch.save(shard, copy / name)
            else:
                save_file(shard, str(copy / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, name))
        index = {"metadata": {}, "weight_map": weight_map}
        (copy / f"{kind}.{suffix}.index.json").write_text(json.dumps(index))
    given: list[dict[str, object]] = []
    real = transformers.AutoModel.from_pretrained

    def spy(*args: object, **kwargs: object) -> object:
        given.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    M3Model.from_pretrained(copy)
    assert given and given[0].get("add_pooling_layer") is False


def test_a_config_value_of_the_wrong_type_is_a_checkpoint_error(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    # a hand-edited "layer_norm_eps": "1e-12" raised huggingface_hub's own validation error,
    # naming no file, from the tokenizer's load
    import json

    from m3kit.errors import CheckpointError

    copy = tmp_path / "edited"
    shutil.copytree(tiny_m3_path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = "1e-12"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json"):
        M3Encoder.from_pretrained(copy, dtype="fp32")
