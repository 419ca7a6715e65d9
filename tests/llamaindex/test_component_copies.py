"""Pickled and deep-copied LlamaIndex components: a working copy with equal outputs, or an error.

LlamaIndex's ``BaseComponent`` pickles by dropping what it cannot pickle (with a log warning)
and unpickles by calling ``__init__`` with the fields left, so an M3 component comes back by
loading ``model_name`` again. That must not give another model than the one pickled, nor
drop a setting; ``copy.deepcopy`` raised ``TypeError: cannot pickle '_thread.lock' object``.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from llama_index.core import Document
from llama_index.core.schema import NodeWithScore, TextNode
from qdrant_client import QdrantClient

from llamaindex_m3 import (
    M3Embedding,
    M3LateChunkingNodeParser,
    M3QdrantVectorStore,
    M3Reranker,
    M3SparseEmbedding,
    M3VectorStore,
)
from llamaindex_m3.embeddings import m3_sparse_fns
from m3kit import M3Encoder
from m3kit.late_chunking import LateChunker
from m3kit.testing import build_tiny_m3_checkpoint

TEXT = "Oxygen has the atomic number 8. Iron is Fe. Gold is Au and it does not rust."
NODES = [NodeWithScore(node=TextNode(text=t, id_=t)) for t in ["Bees dance.", "Iron is Fe."]]


def _outputs(obj: Any) -> Any:
    """What the component computes, comparable with ``==``."""
    if isinstance(obj, M3Embedding):
        return np.round(obj.get_text_embedding(TEXT), 5).tolist()
    if isinstance(obj, M3SparseEmbedding):
        return {k: round(v, 4) for k, v in obj.get_text_embedding(TEXT).items()}
    if isinstance(obj, M3LateChunkingNodeParser):
        nodes = obj.get_nodes_from_documents([Document(text=TEXT, id_="d")])
        return [(n.text, np.round(n.embedding, 4).tolist()) for n in nodes]  # ids: uuid4
    ranked = obj.postprocess_nodes(NODES, query_str="iron")
    return [(n.node.node_id, round(n.score, 4)) for n in ranked]


def _encoder(obj: Any) -> M3Encoder:
    if isinstance(obj, M3LateChunkingNodeParser):
        return obj.chunker.encoder
    if isinstance(obj, M3Reranker):
        return obj.reranker.encoder
    return obj.encoder  # type: ignore[no-any-return]


def _components(encoder: M3Encoder) -> list[Any]:
    """One of each, with a setting changed after construction where one is assignable."""
    embed = M3Embedding.from_encoder(encoder)
    embed.text_instruction = "passage: "
    reranker = M3Reranker.from_encoder(encoder, top_n=3)
    reranker.top_n = 1
    parser = M3LateChunkingNodeParser.from_encoder(
        encoder, chunk_size=6, include_prev_next_rel=False
    )
    return [embed, M3SparseEmbedding.from_encoder(encoder), parser, reranker]


def test_deepcopy_is_a_working_copy(tiny_encoder: M3Encoder) -> None:
    """Deep copies keep every setting and the outputs, sharing the loaded model."""
    for obj in _components(tiny_encoder):
        twin = copy.deepcopy(obj)
        assert type(twin) is type(obj) and twin.model_dump() == obj.model_dump()
        assert _encoder(twin) is _encoder(obj)
        assert _outputs(twin) == _outputs(obj), type(obj).__name__


def test_deepcopy_of_an_embedding_feeding_a_store(tiny_encoder: M3Encoder) -> None:
    """The sparse handoff (a lock inside) is the original's: the copy starts without one."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    m3_sparse_fns(embed)
    twin = copy.deepcopy(embed)
    assert _outputs(twin) == _outputs(embed)


def test_pickle_is_a_working_copy(tiny_encoder: M3Encoder) -> None:
    for obj in _components(tiny_encoder):
        twin = pickle.loads(pickle.dumps(obj))
        assert type(twin) is type(obj) and twin.model_dump() == obj.model_dump()
        assert _outputs(twin) == _outputs(obj), type(obj).__name__


def test_pickle_refuses_a_model_changed_in_memory(tiny_m3_path: Path) -> None:
    """Unpickling loads ``model_name``: weights trained in place would silently be lost."""
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", device="cpu")
    with torch.no_grad():
        next(encoder.model.parameters()).add_(0.05)
    for obj in _components(encoder):
        with pytest.raises(pickle.PicklingError, match="changed in memory"):
            pickle.dumps(obj)


def test_unpickle_refuses_a_checkpoint_changed_since(tmp_path: Path) -> None:
    """A checkpoint folder holding other weights than when pickled is refused on load."""
    path = build_tiny_m3_checkpoint(tmp_path / "ckpt")
    embed = M3Embedding(model_name=str(path), dtype="fp32", device="cpu")
    data = pickle.dumps(embed)
    build_tiny_m3_checkpoint(tmp_path / "ckpt", seed=1)
    with pytest.raises(ValueError, match="another model"):
        pickle.loads(data)


def test_pickle_refuses_a_setting_it_cannot_pickle(tiny_encoder: M3Encoder) -> None:
    """A lambda splitter was dropped (the copy chunked with the default sentence splitter)."""
    parser = M3LateChunkingNodeParser.from_encoder(
        tiny_encoder, splitter=lambda text: [(0, len(text))]
    )
    with pytest.raises(pickle.PicklingError, match="splitter"):
        pickle.dumps(parser)


def test_pickle_refuses_a_chunker_its_fields_do_not_describe(tiny_encoder: M3Encoder) -> None:
    """``from_chunker`` without ``splitter=``: the fields cannot rebuild the chunker's splitter."""
    chunker = LateChunker(tiny_encoder, chunk_size=6, splitter=_whole_text)
    parser = M3LateChunkingNodeParser.from_chunker(chunker)
    with pytest.raises(ValueError, match="chunked as"):
        pickle.loads(pickle.dumps(parser))


def _whole_text(text: str) -> list[tuple[int, int]]:
    return [(0, len(text))]


def test_stores_refuse_to_be_copied(tiny_encoder: M3Encoder) -> None:
    """An unpickled store had lost its index / sparse functions (``AttributeError`` at the first
    query); a deep copy raised ``TypeError: cannot pickle '_thread.lock' object``."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    qdrant = M3QdrantVectorStore("copies", client=QdrantClient(":memory:"), sparse_model=embed)
    with M3VectorStore(embed) as store:
        for obj in (store, qdrant):
            name = type(obj).__name__
            with pytest.raises(pickle.PicklingError, match=f"cannot pickle a {name}.*open"):
                pickle.dumps(obj)
            with pytest.raises(TypeError, match=f"cannot deep-copy a {name}.*open"):
                copy.deepcopy(obj)
