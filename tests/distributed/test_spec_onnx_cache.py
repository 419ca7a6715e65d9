"""EncoderSpec: workers load an ONNX encoder from the parent's ``onnx_cache_dir``.

The spec used to leave it out: every pool worker and Ray actor re-exported the model into the
default cache (``~/.cache/m3kit/onnx``): minutes and a copy of the weights per export, and a
failure where the home directory is read-only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec


def test_a_worker_loads_onnx_from_the_parents_cache(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "default"
    monkeypatch.setenv("M3KIT_CACHE", str(default))  # where a worker would export otherwise
    given = tmp_path / "given"
    parent = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="onnx", onnx_cache_dir=given
    )
    spec = EncoderSpec.of(parent)
    worker = spec.load("cpu")
    assert not default.exists(), "the worker exported again into the default cache"
    assert worker.onnx_cache_dir == given.absolute() == Path(spec.onnx_cache_dir or "")


def test_a_relative_cache_dir_is_carried_as_the_parent_resolved_it(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a Ray actor runs in another working directory
    monkeypatch.chdir(tmp_path)
    parent = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="onnx", onnx_cache_dir="rel/onnx"
    )
    assert EncoderSpec.of(parent).onnx_cache_dir == str(tmp_path / "rel" / "onnx")


def test_no_cache_dir_reaches_a_torch_worker(tiny_m3_path: Path, tmp_path: Path) -> None:
    # backend="auto" resolved to torch: a worker given onnx_cache_dir with backend="torch"
    # would refuse to load
    parent = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="auto", onnx_cache_dir=tmp_path
    )
    spec = dataclasses.replace(EncoderSpec.of(parent), identity=None)
    assert spec.backend == "torch" and spec.onnx_cache_dir is None
    with mock.patch.object(M3Encoder, "from_pretrained") as load:
        spec.load("cpu")
    assert load.call_args.kwargs.get("onnx_cache_dir") is None


def test_a_worker_quantising_int8_another_way_refuses_to_load(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime int8 weights are 7-bit on a CPU without VNNI and 8-bit with it: a Ray node
    of the other CPU class encoded other vectors (cosine ~0.97) under the same identity, and
    the collection mixed them, without a word."""
    from m3kit.backends import onnx_backend
    from m3kit.backends.onnx_backend import Int8Scheme

    def scheme(reduce_range: bool) -> None:
        monkeypatch.setattr(
            onnx_backend, "_this_cpu_int8_scheme", lambda: Int8Scheme(reduce_range, "test")
        )

    scheme(False)
    parent = M3Encoder.from_pretrained(tiny_m3_path, dtype="int8", onnx_cache_dir=tmp_path)
    spec = EncoderSpec.of(parent)
    assert spec.int8_reduce_range is False
    spec.load("cpu")  # the same CPU class
    scheme(True)
    with pytest.raises(ValueError, match="reduce_range=True, the parent with reduce_range=False"):
        spec.load("cpu")
    assert EncoderSpec.of(M3Encoder.from_pretrained(tiny_m3_path)).int8_reduce_range is None
