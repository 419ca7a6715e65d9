"""Loading fields (token budget, backend, ONNX cache) reach the encoder of every LangChain class.

Every class that loads a checkpoint derives from ``EncoderModel``; each is built here from the
tiny checkpoint and checked for the encoder it got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from langchain_m3 import M3Embeddings, M3LateChunkingSplitter, M3Reranker, M3SparseEmbeddings
from langchain_m3._encoder_model import EncoderModel
from m3kit import M3Encoder
from m3kit.backends import EncoderBackend

TEXTS = ["Berlin is the capital of Germany.", "Oxygen has atomic number 8.", "short"]

CLASSES: list[type[EncoderModel]] = [
    M3Embeddings,
    M3SparseEmbeddings,
    M3Reranker,
    M3LateChunkingSplitter,
]


def _load(cls: type[EncoderModel], path: Path, **fields: Any) -> EncoderModel:
    return cls(model_name_or_path=str(path), dtype="fp32", device="cpu", **fields)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_max_batch_tokens_and_backend_reach_the_encoder(
    cls: type[EncoderModel], tiny_m3_path: Path
) -> None:
    obj = _load(cls, tiny_m3_path, max_batch_tokens=24, backend="torch")
    assert obj.max_batch_tokens == 24 and obj.backend is EncoderBackend.TORCH
    assert obj.encoder.max_batch_tokens == 24
    assert obj.encoder.backend is EncoderBackend.TORCH
    if isinstance(obj, M3Reranker):
        assert obj.reranker.encoder is obj.encoder
    if isinstance(obj, M3LateChunkingSplitter):
        assert obj.chunker.encoder is obj.encoder


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_from_encoder_reads_budget_and_backend(
    cls: type[EncoderModel], tiny_encoder: M3Encoder
) -> None:
    obj = cls.from_encoder(tiny_encoder)
    assert obj.encoder is tiny_encoder
    assert obj.max_batch_tokens == tiny_encoder.max_batch_tokens
    assert obj.backend is tiny_encoder.backend is EncoderBackend.TORCH
    assert obj.onnx_cache_dir is None
    with pytest.raises(ValueError, match=r"\['backend', 'max_batch_tokens'\] come from"):
        cls.from_encoder(tiny_encoder, max_batch_tokens=16, backend="onnx")


def test_budget_changes_batching_not_vectors(tiny_m3_path: Path, tiny_encoder: M3Encoder) -> None:
    small = _load(M3Embeddings, tiny_m3_path, max_batch_tokens=8)  # one text per forward pass
    assert isinstance(small, M3Embeddings)
    assert len(small.encoder._plan_batches([6, 6, 6])) == 3
    np.testing.assert_allclose(
        small.embed_documents(TEXTS), tiny_encoder.encode(TEXTS).dense, atol=1e-5
    )


def test_onnx_backend_equals_torch_fp32(
    tiny_m3_path: Path, tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")
    emb = _load(M3Embeddings, tiny_m3_path, backend="onnx", onnx_cache_dir=str(tmp_path))
    assert isinstance(emb, M3Embeddings)
    assert emb.encoder.backend is EncoderBackend.ONNX
    assert list(tmp_path.glob("*/model.onnx")), "the export lands in onnx_cache_dir"
    np.testing.assert_allclose(
        emb.embed_documents(TEXTS), tiny_encoder.encode(TEXTS).dense, atol=1e-4
    )
    np.testing.assert_allclose(
        emb.embed_query(TEXTS[1]), tiny_encoder.encode_queries([TEXTS[1]]).dense[0], atol=1e-4
    )
    # from_encoder describes the ONNX encoder, and those fields load it again (export reused)
    shared = M3Embeddings.from_encoder(emb.encoder)
    assert shared.backend is EncoderBackend.ONNX and shared.onnx_cache_dir == str(tmp_path)
    again = M3Embeddings(**shared.model_dump())
    assert again.encoder.backend is EncoderBackend.ONNX
    assert again.encoder._onnx is not None and emb.encoder._onnx is not None
    assert again.encoder._onnx.path == emb.encoder._onnx.path


def test_bad_loading_fields_are_clear_errors(tiny_m3_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"backend[\s\S]*'auto', 'torch' or 'onnx'"):
        _load(M3Embeddings, tiny_m3_path, backend="onnxx")
    with pytest.raises(ValidationError, match="max_batch_tokens"):
        _load(M3Embeddings, tiny_m3_path, max_batch_tokens=0)
    with pytest.raises(ValidationError, match=r"backnd[\s\S]*Extra inputs are not permitted"):
        _load(M3Reranker, tiny_m3_path, backnd="onnx")
    with pytest.raises(ValidationError, match="onnx_cache_dir is for backend='onnx'"):
        _load(M3SparseEmbeddings, tiny_m3_path, backend="torch", onnx_cache_dir="/tmp/x")
    with pytest.raises(ValidationError, match="backend='onnx' runs dtype 'fp32'"):
        M3Embeddings(model_name_or_path=str(tiny_m3_path), dtype="bf16", backend="onnx")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_load_time_fields_refuse_changes(cls: type[EncoderModel], tiny_encoder: M3Encoder) -> None:
    """Every field is read when the model loads: assigning or copying with one is refused."""
    obj = cls.from_encoder(tiny_encoder)
    with pytest.raises(AttributeError, match=rf"{cls.__name__}\.query_instruction .*build a new"):
        obj.query_instruction = "query: "
    # model_copy(update=...) used to return a copy claiming the new value on the old model
    with pytest.raises(ValueError, match=r"\['max_length', 'query_instruction'\].*build a new"):
        obj.model_copy(update={"query_instruction": "query: ", "max_length": 16})
    copy = obj.model_copy()
    assert copy.encoder is obj.encoder and copy.query_instruction == obj.query_instruction
