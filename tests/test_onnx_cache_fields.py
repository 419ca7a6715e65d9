"""``from_encoder`` of an ONNX encoder records the export cache folder as it was asked for.

An encoder loaded without ``onnx_cache_dir`` runs from this machine's default folder
(``$M3KIT_CACHE/onnx``, ``~/.cache/m3kit/onnx``...); the adapters' ``from_encoder`` recorded
that resolved folder, so a pickle or ``to_dict`` loaded elsewhere used this machine's folder
instead of its own default. Both adapters now record ``None`` (each machine's default), and a
folder that was given, as given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from langchain_m3 import M3Embeddings
from llamaindex_m3 import M3Embedding
from m3kit import M3Encoder


def test_the_default_cache_folder_is_not_pinned(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M3KIT_CACHE", str(tmp_path / "here"))
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", backend="onnx")
    assert encoder.onnx_cache_dir == tmp_path / "here" / "onnx"  # where it runs from
    assert encoder.requested_onnx_cache_dir is None
    assert M3Embeddings.from_encoder(encoder).onnx_cache_dir is None
    assert M3Embedding.from_encoder(encoder).to_dict()["onnx_cache_dir"] is None

    monkeypatch.setenv("M3KIT_CACHE", str(tmp_path / "elsewhere"))
    again = M3Embedding.from_dict(M3Embedding.from_encoder(encoder).to_dict())
    assert again.encoder.onnx_cache_dir == tmp_path / "elsewhere" / "onnx"


def test_a_given_cache_folder_is_kept(tiny_m3_path: Path, tmp_path: Path) -> None:
    encoder = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="onnx", onnx_cache_dir=tmp_path
    )
    assert M3Embeddings.from_encoder(encoder).onnx_cache_dir == str(tmp_path)
    assert M3Embedding.from_encoder(encoder).to_dict()["onnx_cache_dir"] == str(tmp_path)
