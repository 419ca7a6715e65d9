"""LlamaIndex ``M3VectorStore`` sparse mode on an index with a sparse cut.

A sparse-mode query whose sparse vector is empty (no token has a weight) matches nothing and
returns no nodes. Whether it was empty was judged on the uncut vector: a query all of whose
weights fall at or below the index's ``sparse_min_weight`` was sent on, cut to nothing by the
store, and refused with "give a dense query vector or a non-empty sparse one", a message about
vectors the caller never gave.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3VectorStore
from m3kit.store import M3Index
from m3kit.testing import SAMPLE_TEXTS


def _sparse_hits(encoder: Any, min_weight: float) -> list[Any]:
    index = M3Index.open(encoder, ":memory:", sparse_min_weight=min_weight)
    with M3VectorStore(index=index) as store:
        store.add([TextNode(text=t) for t in SAMPLE_TEXTS[:3]])
        asked = VectorStoreQuery(
            query_str=SAMPLE_TEXTS[0], mode=VectorStoreQueryMode.SPARSE, similarity_top_k=2
        )
        return store.query(asked).nodes or []


def test_a_query_the_cut_empties_matches_nothing(tiny_encoder: Any) -> None:
    weights = tiny_encoder.encode([SAMPLE_TEXTS[0]], heads=["sparse"], query=True).sparse[0]
    assert len(weights) > 1
    assert _sparse_hits(tiny_encoder, float(weights.values.max())) == []
    # a cut that keeps some of the query's weights still finds nodes
    assert len(_sparse_hits(tiny_encoder, float(weights.values.min()))) > 0
