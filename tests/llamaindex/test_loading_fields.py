"""Loading fields (token budget, backend, ONNX cache) reach the encoder of every LlamaIndex class.

``M3Embedding``, ``M3SparseEmbedding``, ``M3Reranker`` and ``M3LateChunkingNodeParser`` share
one definition of them (``M3CheckpointFields``); each is built here from the tiny checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Reranker, M3SparseEmbedding
from llamaindex_m3._encoder_fields import IN_MEMORY, M3CheckpointFields
from m3kit import M3Encoder
from m3kit.backends import EncoderBackend

TEXTS = ["Berlin is the capital of Germany.", "Oxygen has atomic number 8.", "short"]


def _encoder_of(obj: BaseModel) -> M3Encoder:
    if isinstance(obj, M3Reranker):
        return obj.reranker.encoder
    if isinstance(obj, M3LateChunkingNodeParser):
        return obj.chunker.encoder
    assert isinstance(obj, M3Embedding | M3SparseEmbedding)
    return obj.encoder


# (class, its from_encoder): the node parser's from_encoder takes chunker options
CLASSES: list[tuple[type[M3CheckpointFields], Callable[[M3Encoder], Any]]] = [
    (M3Embedding, M3Embedding.from_encoder),
    (M3SparseEmbedding, M3SparseEmbedding.from_encoder),
    (M3Reranker, M3Reranker.from_encoder),
    (M3LateChunkingNodeParser, M3LateChunkingNodeParser.from_encoder),
]
IDS = [c.__name__ for c, _ in CLASSES]


def _load(cls: type[M3CheckpointFields], path: Path, **fields: Any) -> Any:
    return cls(model_name=str(path), dtype="fp32", device="cpu", **fields)


@pytest.mark.parametrize(("cls", "wrap"), CLASSES, ids=IDS)
def test_max_batch_tokens_and_backend_reach_the_encoder(
    cls: type[M3CheckpointFields], wrap: Callable[[M3Encoder], Any], tiny_m3_path: Path
) -> None:
    obj = _load(cls, tiny_m3_path, max_batch_tokens=24, backend="torch")
    assert obj.max_batch_tokens == 24 and obj.backend is EncoderBackend.TORCH
    enc = _encoder_of(obj)
    assert enc.max_batch_tokens == 24 and enc.backend is EncoderBackend.TORCH


@pytest.mark.parametrize(("cls", "wrap"), CLASSES, ids=IDS)
def test_from_encoder_reads_budget_and_backend(
    cls: type[M3CheckpointFields], wrap: Callable[[M3Encoder], Any], tiny_encoder: M3Encoder
) -> None:
    obj = wrap(tiny_encoder)
    assert _encoder_of(obj) is tiny_encoder
    assert obj.model_name == str(tiny_encoder.info.path)  # type: ignore[union-attr]
    assert obj.max_batch_tokens == tiny_encoder.max_batch_tokens
    assert obj.backend is tiny_encoder.backend is EncoderBackend.TORCH
    assert obj.onnx_cache_dir is None


def test_reranker_from_encoder_refuses_loading_fields(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match=r"\['backend', 'max_batch_tokens'\] come from"):
        M3Reranker.from_encoder(tiny_encoder, max_batch_tokens=16, backend="onnx")


def test_onnx_backend_equals_torch_fp32(
    tiny_m3_path: Path, tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")
    emb = _load(M3Embedding, tiny_m3_path, backend="onnx", onnx_cache_dir=str(tmp_path))
    assert emb.encoder.backend is EncoderBackend.ONNX
    assert list(tmp_path.glob("*/model.onnx")), "the export lands in onnx_cache_dir"
    np.testing.assert_allclose(
        emb.get_text_embedding_batch(TEXTS), tiny_encoder.encode(TEXTS).dense, atol=1e-4
    )
    np.testing.assert_allclose(
        emb.get_query_embedding(TEXTS[1]),
        tiny_encoder.encode_queries([TEXTS[1]]).dense[0],
        atol=1e-4,
    )
    # serialised fields name the ONNX backend and its cache: from_dict loads it again (reused)
    data = M3Embedding.from_encoder(emb.encoder).to_dict()
    assert data["backend"] == "onnx" and data["onnx_cache_dir"] == str(tmp_path)
    again = M3Embedding.from_dict(data)
    assert again.encoder.backend is EncoderBackend.ONNX
    assert again.encoder._onnx is not None and emb.encoder._onnx is not None
    assert again.encoder._onnx.path == emb.encoder._onnx.path


@pytest.mark.parametrize(("cls", "wrap"), CLASSES, ids=IDS)
def test_bad_loading_fields_are_clear_errors(
    cls: type[M3CheckpointFields], wrap: Callable[[M3Encoder], Any], tiny_m3_path: Path
) -> None:
    with pytest.raises(ValidationError, match=r"backend[\s\S]*'auto', 'torch' or 'onnx'"):
        _load(cls, tiny_m3_path, backend="onnxx")
    with pytest.raises(ValidationError, match="max_batch_tokens"):
        _load(cls, tiny_m3_path, max_batch_tokens=0)
    with pytest.raises(ValidationError, match=r"backnd[\s\S]*Extra inputs are not permitted"):
        _load(cls, tiny_m3_path, backnd="onnx")
    with pytest.raises(ValidationError, match="onnx_cache_dir is for backend='onnx'"):
        _load(cls, tiny_m3_path, backend="torch", onnx_cache_dir="/tmp/x")
    with pytest.raises(ValidationError, match=f"this {cls.__name__} wrapped an in-memory"):
        cls(model_name=IN_MEMORY)
