"""M3VectorStore / M3Retriever given ``M3SparseEmbeddings`` with a sparse cut.

Both take an m3kit LangChain class for its encoder only. ``M3SparseEmbeddings(sparse_top_k=2)``
(or a ``sparse_min_weight``) was accepted and its cut silently dropped: the stored and the
query sparse vectors kept every weight. They now refuse such an embedding, naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from langchain_m3 import M3Embeddings, M3Retriever, M3SparseEmbeddings, M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

OPENERS: dict[str, Callable[[Any], Any]] = {
    "M3VectorStore.open": lambda emb: M3VectorStore.open(emb),
    "M3VectorStore.from_texts": lambda emb: M3VectorStore.from_texts(SAMPLE_TEXTS, emb),
    "M3Retriever.from_texts": lambda emb: M3Retriever.from_texts(SAMPLE_TEXTS, emb).index,
}


def test_the_cut_changes_the_sparse_vector(tiny_encoder: M3Encoder) -> None:
    """The setting matters: cut, the query's sparse vector keeps 2 of its weights."""
    full = tiny_encoder.encode_queries([SAMPLE_TEXTS[0]]).sparse[0]
    cut = M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_top_k=2)
    assert len(full.indices) > 2
    assert len(cut.embed_query(SAMPLE_TEXTS[0]).indices) == 2


@pytest.mark.parametrize("opener", OPENERS, ids=list(OPENERS))
@pytest.mark.parametrize(("setting", "value"), [("sparse_top_k", 2), ("sparse_min_weight", 0.05)])
def test_a_cut_is_refused(tiny_encoder: M3Encoder, opener: str, setting: str, value: float) -> None:
    emb = M3SparseEmbeddings.from_encoder(tiny_encoder, **{setting: value})
    with pytest.raises(ValueError, match=rf"{setting}={value}.*every sparse weight"):
        OPENERS[opener](emb)


@pytest.mark.parametrize("opener", OPENERS, ids=list(OPENERS))
def test_uncut_sparse_embeddings_are_taken(tiny_encoder: M3Encoder, opener: str) -> None:
    for emb in (
        M3SparseEmbeddings.from_encoder(tiny_encoder),
        M3Embeddings.from_encoder(tiny_encoder),
    ):
        OPENERS[opener](emb).close()
