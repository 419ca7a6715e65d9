"""The identities ``M3QdrantVectorStore`` records for its embeddings
(:mod:`m3kit.store.stock_record`: another model's are refused)."""

from __future__ import annotations

from typing import Any

from langchain_m3.embeddings import M3Embeddings
from langchain_m3.sparse_embeddings import M3SparseEmbeddings
from m3kit.store.stock_record import (
    SPARSE_CUT,
    dense_identity,
    other_identity,
    sparse_cut_identity,
    sparse_identity,
)

__all__ = ["model_identities"]


def model_identities(dense: Any, sparse: Any) -> dict[str, str]:
    """``{"dense": ..., "sparse": ..., "sparse_cut": ...}``: the identity of each embeddings
    given (``None``: none) and the m3kit sparse embeddings' cut. Embeddings not m3kit's are
    named as another program's (:func:`~m3kit.store.stock_record.other_identity`): recorded,
    they make m3kit's embeddings refused on their vectors, and refused on m3kit's."""
    out: dict[str, str] = {}
    dense = unwrapped(dense)
    if isinstance(dense, M3Embeddings):
        out["dense"] = dense_identity(dense.encoder)
    elif dense is not None:
        out["dense"] = other_identity(dense)
    if isinstance(sparse, M3SparseEmbeddings):
        out["sparse"] = sparse_identity(sparse.encoder)
        out[SPARSE_CUT] = sparse_cut_identity(sparse.sparse_top_k, sparse.sparse_min_weight)
    elif sparse is not None:
        out["sparse"] = other_identity(sparse)
    return out


def unwrapped(embeddings: Any) -> Any:
    """The embeddings inside LangChain's ``CacheBackedEmbeddings`` (which the README suggests
    around ``M3Embeddings``): the store recorded and checked nothing for it, so another
    model's vectors were written into the collection without a word. Duck-typed, as the class
    lives in ``langchain_classic``, not a dependency."""
    inner = getattr(embeddings, "underlying_embeddings", None)
    return inner if isinstance(inner, M3Embeddings) else embeddings
