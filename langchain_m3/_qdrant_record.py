"""The identities ``M3QdrantVectorStore`` records for its embeddings
(:mod:`m3kit.store.stock_record`: another model's are refused)."""

from __future__ import annotations

from types import ModuleType
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
    sparse = unwrapped(sparse, M3SparseEmbeddings)
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


def unwrapped(embeddings: Any, kind: type = M3Embeddings) -> Any:
    """The m3kit embeddings (``kind``) inside a wrapper, else ``embeddings`` itself.

    A wrapper keeps the embeddings it delegates to in an attribute: LangChain's
    ``CacheBackedEmbeddings`` (``underlying_embeddings``, which the README suggests),
    ``HypotheticalDocumentEmbedder`` (``base_embeddings``) or a user's own class. Read as
    another program's embeddings, it was refused on the collection its M3 model wrote, and the
    bare model on one it wrote; unrecognised, another model's vectors went in without a word.
    Found by looking through the wrapper's attributes (a few levels, duck-typed: those classes
    live in ``langchain_classic``, not a dependency); one m3kit embeddings, else none.
    """
    if isinstance(embeddings, kind):
        return embeddings
    found: dict[int, Any] = {}
    seen: set[int] = {id(embeddings)}
    level = [embeddings]
    for _ in range(_WRAPPER_DEPTH):
        inside = []
        for obj in level:
            for value in _attributes(obj):
                if id(value) in seen:
                    continue
                seen.add(id(value))
                if isinstance(value, kind):
                    found[id(value)] = value
                else:
                    inside.append(value)
        level = inside
    return next(iter(found.values())) if len(found) == 1 else embeddings


#: How deep :func:`unwrapped` looks (a wrapper of a wrapper of the embeddings).
_WRAPPER_DEPTH = 3


def _attributes(obj: Any) -> list[Any]:
    """The attribute values of an object (its ``__dict__``), not of builtins or modules."""
    if isinstance(obj, str | bytes | int | float | bool | type | ModuleType) or obj is None:
        return []
    try:
        return list(vars(obj).values())
    except TypeError:  # no __dict__
        return []
