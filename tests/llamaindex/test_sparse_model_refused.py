"""LlamaIndex ``M3Retriever.open`` / ``M3VectorStore`` given an ``M3SparseEmbedding``.

They take an encoder or an ``M3Embedding`` (dense, whose encoder gives all three heads). Given
an ``M3SparseEmbedding`` (which may carry a sparse cut), ``M3Retriever.open`` failed with
``AttributeError: 'M3SparseEmbedding' object has no attribute 'available_heads'`` deep in
``M3Index.open``. Both now raise a ``TypeError`` that names the class and says how to give the
index a sparse cut: ``M3Index.open(..., sparse_top_k=...)``, wrapped by the retriever or store,
which then cuts stored chunks and queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core import Document

from llamaindex_m3 import M3Retriever, M3SparseEmbedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.sparse_cut import SparseCut

OPENERS: dict[str, Callable[[Any], Any]] = {
    "M3Retriever.open": lambda model: M3Retriever.open(model),
    "M3Retriever.from_documents": lambda model: M3Retriever.from_documents(
        [Document(text="Berlin is the capital of Germany.")], model
    ),
    "M3VectorStore": lambda model: M3VectorStore(model),
}


@pytest.mark.parametrize("opener", OPENERS, ids=list(OPENERS))
@pytest.mark.parametrize("cut", [{}, {"sparse_top_k": 2}])
def test_a_sparse_embedding_is_refused_with_the_way_to_cut(
    tiny_encoder: M3Encoder, opener: str, cut: dict[str, Any]
) -> None:
    sparse = M3SparseEmbedding.from_encoder(tiny_encoder)
    for name, value in cut.items():
        setattr(sparse, name, value)
    with pytest.raises(TypeError, match=r"M3SparseEmbedding.*M3Index\.open\(.*sparse_top_k"):
        OPENERS[opener](sparse)


def test_the_way_given_cuts_the_index(tiny_encoder: M3Encoder) -> None:
    index = M3Index.open(tiny_encoder, ":memory:", sparse_top_k=2)
    try:
        retriever = M3Retriever(index)
        store = M3VectorStore(index=index)
        assert retriever.index.sparse_cut == store.client.sparse_cut == SparseCut(2)
    finally:
        index.close()
