"""Fields read once, when the model (or chunker, or reranker) loads, refuse later changes.

Assigning ``emb.query_instruction = ...`` used to be accepted and change nothing: the encoder
kept the value it was loaded with. Such fields are frozen now, with an error saying to build
a new object; the fields read on every call stay assignable and take effect.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Settings

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Reranker, M3SparseEmbedding
from m3kit import M3Encoder

CHECKPOINT = ["model_name", "device", "dtype", "max_batch_tokens", "backend", "onnx_cache_dir"]
LOADED: dict[type[Any], list[str]] = {
    M3Embedding: [*CHECKPOINT, "query_instruction", "max_length", "embed_batch_size"],
    M3SparseEmbedding: [*CHECKPOINT, "query_instruction", "max_length", "embed_batch_size"],
    M3Reranker: [
        *CHECKPOINT,
        "batch_size",
        "mode",
        "weights",
        "max_query_length",
        "max_passage_length",
        "use_query_instruction",
    ],
    M3LateChunkingNodeParser: [
        *CHECKPOINT,
        "chunk_size",
        "window",
        "overlap",
        "placement",
        "late_heads",
        "dense_pooling",
        "splitter",
    ],
}
# read on every call: assigning them keeps working
PER_CALL: dict[type[Any], tuple[str, Any]] = {
    M3Embedding: ("text_instruction", "passage: "),
    M3SparseEmbedding: ("sparse_top_k", 3),
    M3Reranker: ("top_n", 1),
    M3LateChunkingNodeParser: ("include_metadata", False),
}
CASES = [(cls, name) for cls, names in LOADED.items() for name in names]


def _build(cls: type[Any], encoder: M3Encoder) -> Any:
    return cls.from_encoder(encoder)


@pytest.mark.parametrize(("cls", "name"), CASES, ids=[f"{c.__name__}.{n}" for c, n in CASES])
def test_assigning_a_load_time_field_is_refused(
    cls: type[Any], name: str, tiny_encoder: M3Encoder
) -> None:
    obj = _build(cls, tiny_encoder)
    before = getattr(obj, name)
    with pytest.raises(AttributeError, match=rf"{cls.__name__}\.{name} .*build a new"):
        setattr(obj, name, before)
    assert getattr(obj, name) == before


@pytest.mark.parametrize("cls", list(LOADED), ids=lambda c: c.__name__)
def test_model_copy_refuses_load_time_updates(cls: type[Any], tiny_encoder: M3Encoder) -> None:
    obj = _build(cls, tiny_encoder)
    with pytest.raises(ValueError, match=r"\['device', 'model_name'\].*build a new"):
        obj.model_copy(update={"model_name": "other", "device": "cuda"})
    name, value = PER_CALL[cls]
    copy = obj.model_copy(update={name: value})
    assert getattr(copy, name) == value and getattr(obj, name) != value


@pytest.mark.parametrize("cls", list(LOADED), ids=lambda c: c.__name__)
def test_per_call_fields_stay_assignable(cls: type[Any], tiny_encoder: M3Encoder) -> None:
    obj = _build(cls, tiny_encoder)
    name, value = PER_CALL[cls]
    setattr(obj, name, value)
    assert getattr(obj, name) == value


def test_text_instruction_assigned_later_takes_effect(tiny_encoder: M3Encoder) -> None:
    emb = M3Embedding.from_encoder(tiny_encoder)
    emb.text_instruction = "passage: "
    expected = tiny_encoder.encode(["passage: Iron is Fe."]).dense[0]
    assert emb.get_text_embedding("Iron is Fe.") == pytest.approx(expected.tolist(), abs=1e-5)


def test_settings_chunk_size_on_the_late_parser_is_refused(tiny_encoder: M3Encoder) -> None:
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=32)
    previous = Settings._node_parser
    Settings.node_parser = parser
    try:
        with pytest.raises(AttributeError, match=r"chunk_size .*build a new"):
            Settings.chunk_size = 64
    finally:
        Settings._node_parser = previous
    assert parser.chunk_size == 32 and parser.chunker.chunk_size == 32
