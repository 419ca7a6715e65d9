"""ONNX export cache keys: an export is reused for the same graph and weights, and rebuilt
for anything that changes the graph (weights, pooling, config.json, own code, a tracing
upgrade) or for a damaged export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from m3kit import M3Encoder
from m3kit.backends import onnx_backend
from tests.core.onnx_outputs import TEXTS, _assert_outputs_close, _spy


def _builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folder of every export built from here on."""
    return _spy(monkeypatch, onnx_backend, "_build", lambda model, folder, *a: folder)


def test_export_is_cached_and_reused(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = _builds(monkeypatch)
    first = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    again = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert len(builds) == 1
    assert first._onnx is not None and again._onnx is not None
    assert first._onnx.path == again._onnx.path
    manifest = json.loads((first._onnx.path.parent / "manifest.json").read_text())
    assert manifest["variant"] == "fp32" and set(manifest["files"]) >= {"model.onnx"}


@pytest.mark.parametrize("package", ["torch", "transformers"])
def test_an_upgrade_of_the_tracing_code_exports_again(
    package: str, tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch or transformers upgrade (a modelling or masking fix) can change the traced
    graph: the old export is not reused."""
    import importlib

    builds = _builds(monkeypatch)
    first = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    monkeypatch.setattr(importlib.import_module(package), "__version__", "99.0.0")
    again = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert len(builds) == 2
    assert first._onnx is not None and again._onnx is not None
    assert first._onnx.path != again._onnx.path


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_manifest", "stale_key"])
def test_corrupt_or_stale_export_is_rebuilt(
    damage: str,
    tiny_m3_path: Path,
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds = _builds(monkeypatch)
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert enc._onnx is not None
    folder = enc._onnx.path.parent
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    biggest = max(manifest["files"], key=lambda n: (folder / n).stat().st_size)
    target = folder / biggest
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "drop_manifest":
        manifest_path.unlink()
    else:  # an export made for other weights left under this key
        manifest["key"] = "0" * 32
        manifest_path.write_text(json.dumps(manifest))
    rebuilt = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert len(builds) == 2, "the damaged export must be rebuilt, not used"
    _assert_outputs_close(tiny_encoder.encode(TEXTS), rebuilt.encode(TEXTS))


def test_the_same_checkpoint_in_another_folder_reuses_the_export(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    builds = _builds(monkeypatch)
    a = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path / "c")
    copy = shutil.copytree(tiny_m3_path, tmp_path / "copy")
    b = M3Encoder.from_pretrained(copy, backend="onnx", onnx_cache_dir=tmp_path / "c")
    assert a._onnx is not None and b._onnx is not None
    assert len(builds) == 1 and a._onnx.digest == b._onnx.digest


def test_other_weights_get_their_own_export(
    tiny_m3_path: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from m3kit.testing import build_tiny_m3_checkpoint

    other = build_tiny_m3_checkpoint(tmp_path_factory.mktemp("other_m3"), seed=1)
    a = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    b = M3Encoder.from_pretrained(other, backend="onnx", onnx_cache_dir=tmp_path)
    assert a._onnx is not None and b._onnx is not None
    assert a._onnx.digest != b._onnx.digest


@pytest.mark.parametrize("change", ["pooling", "config"])
def test_same_weights_other_graph_get_their_own_export(
    change: str, tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the weights alone do not decide the graph: a pooling chosen at load, or config.json
    # edited beside unchanged weight files, must not reuse the first export
    import shutil

    path = shutil.copytree(tiny_m3_path, tmp_path / "model")
    builds = _builds(monkeypatch)
    first = M3Encoder.from_pretrained(path, backend="onnx", onnx_cache_dir=tmp_path / "c")
    kwargs: dict[str, str] = {}
    if change == "pooling":
        kwargs["pooling"] = "mean"
    else:
        config = json.loads((path / "config.json").read_text())
        config["hidden_act"] = "relu"
        (path / "config.json").write_text(json.dumps(config))
    want = M3Encoder.from_pretrained(path, dtype="fp32", **kwargs).encode(TEXTS)  # type: ignore[arg-type]
    second = M3Encoder.from_pretrained(
        path,
        backend="onnx",
        onnx_cache_dir=tmp_path / "c",
        **kwargs,  # type: ignore[arg-type]
    )
    assert first._onnx is not None and second._onnx is not None
    assert first._onnx.weights == second._onnx.weights  # same weight files
    assert len(builds) == 2 and first._onnx.digest != second._onnx.digest
    assert np.abs(first.encode(TEXTS).dense - want.dense).max() > 1e-3  # the old graph differs
    _assert_outputs_close(want, second.encode(TEXTS))


#: A checkpoint's own modelling code (``trust_remote_code=True``): the stock backbone, shifted.
_SHIFTED_MODEL = """from transformers import XLMRobertaModel


class ShiftedModel(XLMRobertaModel):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state + {shift}
        return out
"""


def test_a_checkpoints_own_code_gets_its_own_export(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same weights and config.json run the stock class with trust_remote_code=False and
    # the checkpoint's own class with True: the second load reused the first's export and
    # served the stock graph's vectors; the code, edited, is another graph again
    import shutil

    path = shutil.copytree(tiny_m3_path, tmp_path / "model")
    (path / "modeling_shifted.py").write_text(_SHIFTED_MODEL.format(shift=1.0))
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_shifted.ShiftedModel"}
    (path / "config.json").write_text(json.dumps(config))
    builds = _builds(monkeypatch)
    for trust in (False, True):
        want = M3Encoder.from_pretrained(path, dtype="fp32", trust_remote_code=trust)
        got = M3Encoder.from_pretrained(
            path, backend="onnx", onnx_cache_dir=tmp_path / "c", trust_remote_code=trust
        )
        _assert_outputs_close(want.encode(TEXTS), got.encode(TEXTS))
    assert len(builds) == 2
    (path / "modeling_shifted.py").write_text(_SHIFTED_MODEL.format(shift=2.0))
    want = M3Encoder.from_pretrained(path, dtype="fp32", trust_remote_code=True)
    got = M3Encoder.from_pretrained(
        path, backend="onnx", onnx_cache_dir=tmp_path / "c", trust_remote_code=True
    )
    _assert_outputs_close(want.encode(TEXTS), got.encode(TEXTS))
    assert len(builds) == 3


@pytest.mark.parametrize("change", ["none", "in_place", "through_data", "replaced"])
def test_model_changed_after_loading_gets_its_own_export(
    change: str, tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    builds = _builds(monkeypatch)
    loaded = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")  # torch; same files
    layer = enc.model.backbone.get_input_embeddings()
    with torch.no_grad():
        if change == "in_place":  # what an optimiser step does
            layer.weight.mul_(1.5)
        elif change == "through_data":  # invisible to torch's version counter
            layer.weight.data.add_(0.5)
        elif change == "replaced":
            layer.weight = torch.nn.Parameter(layer.weight * 1.5)
    want = enc.encode(TEXTS)
    onnx = M3Encoder(
        enc.model, enc.tokenizer, info=enc.info, precision="fp32", backend="onnx",
        onnx_cache_dir=tmp_path,
    )  # fmt: skip
    assert loaded._onnx is not None and onnx._onnx is not None
    if change == "none":  # the loaded weights: keyed by the files, the export is reused
        assert len(builds) == 1 and onnx._onnx.digest == loaded._onnx.digest
        assert onnx._onnx.weights.startswith("files-sha256:")
    else:
        assert len(builds) == 2 and onnx._onnx.digest != loaded._onnx.digest
        assert onnx._onnx.weights.startswith("tensors-sha256:")
    _assert_outputs_close(want, onnx.encode(TEXTS))
