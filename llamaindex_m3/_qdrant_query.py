"""What :class:`~llamaindex_m3.M3QdrantVectorStore` adds to ``QdrantVectorStore``'s queries.

Its query checks (:func:`check_query`, :func:`with_node_ids`) and two per-task handoffs into
``QdrantVectorStore.aquery``, which calls the store's fusion and sparse query functions
itself: the query's own ``alpha`` (:class:`QueryAlphaFusion`), and the sparse vectors of the
query (or of the nodes ``async_add`` adds) encoded in a worker thread beforehand
(:class:`VectorHandoff`), so the M3 forward pass does not run on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from qdrant_client.models import Filter

from llamaindex_m3.vector_store_query import check_mode, query_budget, query_text_state
from m3kit.store.filters import distinct_ids

#: One text's sparse vector as the store's sparse functions give it: ``(indices, values)``.
SparseRow = tuple[list[int], list[float]]

__all__ = [
    "DOC_VECTORS",
    "QUERY_ALPHA",
    "QUERY_KWARGS",
    "QUERY_VECTORS",
    "QueryAlphaFusion",
    "VectorHandoff",
    "check_query",
    "encoded_in_thread",
    "query_kwargs",
    "with_node_ids",
]

#: What ``QdrantVectorStore.query`` reads from its ``**kwargs`` (a retriever's
#: ``vector_store_kwargs``); it ignored anything else, a misspelt ``qdrant_filter`` too.
QUERY_KWARGS = frozenset({"qdrant_filters", "search_params", "shard_identifier"})

#: The ``alpha`` of the hybrid query :meth:`M3QdrantVectorStore.aquery` is answering (per task).
QUERY_ALPHA: ContextVar[float | None] = ContextVar("m3kit_query_alpha", default=None)


class QueryAlphaFusion:
    """A hybrid fusion function fusing with the alpha of the query being answered.

    ``QdrantVectorStore.aquery`` (llama-index-vector-stores-qdrant 0.10) passes the fusion
    ``alpha=query.alpha or 0.5``, which makes ``alpha=0`` (sparse only) 0.5; ``query`` passes
    the query's own. :meth:`M3QdrantVectorStore.aquery` records the query's alpha, which this
    passes on instead (elsewhere, the alpha it is given).
    """

    def __init__(self, fuse: Any) -> None:
        self.fuse = fuse

    def __call__(
        self,
        dense_result: VectorStoreQueryResult,
        sparse_result: VectorStoreQueryResult,
        **kwargs: Any,
    ) -> VectorStoreQueryResult:
        own = QUERY_ALPHA.get()
        if own is not None:
            kwargs["alpha"] = own
        return self.fuse(dense_result, sparse_result, **kwargs)  # type: ignore[no-any-return]


#: Per task: ``{text: (indices, values)}`` of the query :meth:`M3QdrantVectorStore.aquery` is
#: answering, encoded in a worker thread beforehand.
QUERY_VECTORS: ContextVar[dict[str, SparseRow] | None] = ContextVar(
    "m3kit_query_vectors", default=None
)
#: Per task: the same for the nodes :meth:`M3QdrantVectorStore.async_add` is adding.
DOC_VECTORS: ContextVar[dict[str, SparseRow] | None] = ContextVar("m3kit_doc_vectors", default=None)


class VectorHandoff:
    """A sparse function answering from vectors encoded for the call being answered.

    ``QdrantVectorStore.aquery`` and ``async_add`` call the sparse query / document function
    on the event loop: an M3 forward pass that blocked every other task for its length (8
    concurrent sparse queries ran one after another). :meth:`M3QdrantVectorStore.aquery` /
    ``async_add`` encode in a worker thread first (:func:`encoded_in_thread`) and set
    ``handed``; this returns those vectors (texts it was not handed, or no handoff: ``fn``
    is called).
    """

    def __init__(self, fn: Any, handed: ContextVar[dict[str, SparseRow] | None]) -> None:
        self.fn = fn
        self.handed = handed

    def __call__(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        handed = self.handed.get()
        if handed is not None and all(t in handed for t in texts):
            rows = [handed[t] for t in texts]
            return [r[0] for r in rows], [r[1] for r in rows]
        return self.fn(texts)  # type: ignore[no-any-return]


async def encoded_in_thread(fn: Any, texts: list[str]) -> dict[str, SparseRow]:
    """``{text: (indices, values)}`` of ``fn(texts)``, run in a worker thread."""
    indices, values = await asyncio.to_thread(fn, texts)
    return {t: (i, v) for t, i, v in zip(texts, indices, values, strict=True)}


def check_query(query: VectorStoreQuery) -> None:
    """Refuse a mode ``QdrantVectorStore`` does not run (it ran a dense search instead,
    silently: MMR without diversity), a default or hybrid query without ``query_embedding``
    (the dense vectors are the nodes' own embeddings; ``QdrantVectorStore`` passed ``None`` to
    Qdrant, which returns points unranked), and a sparse or hybrid query without a query text:
    its sparse vector is encoded from ``query_str`` (a dense ``query_embedding`` cannot supply
    it), and a blank one gives an empty sparse vector, which matches nothing.

    ``alpha`` outside [0, 1], a ``sparse_top_k`` / ``hybrid_top_k`` below 1 and an id list
    given as one string are refused as :class:`~llamaindex_m3.M3VectorStore` refuses them
    (``QdrantVectorStore`` fused with ``alpha=-1``, read a budget of 0 as unset, and failed
    on ``doc_ids="d1"`` with a pydantic error about ``MatchAny``).

    Raises:
        NotImplementedError: Names a mode other than default, sparse and hybrid.
        ValueError: Names the mode and the missing ``query_embedding``, or the missing, empty
            or whitespace-only ``query_str``; or names ``alpha`` or the budget out of range.
        TypeError: ``doc_ids`` / ``node_ids`` is a single string or holds a non-string.
    """
    mode = check_mode(query, "M3QdrantVectorStore")
    if query.alpha is not None and not 0.0 <= query.alpha <= 1.0:
        raise ValueError(f"VectorStoreQuery.alpha must be in [0, 1], got {query.alpha}")
    for budget in ("sparse_top_k", "hybrid_top_k"):
        query_budget(query, budget)
    for ids in ("doc_ids", "node_ids"):
        if getattr(query, ids) is not None:
            distinct_ids(getattr(query, ids), f"VectorStoreQuery.{ids}")
    if mode is not VectorStoreQueryMode.SPARSE and query.query_embedding is None:
        raise ValueError(
            f"{mode.value} mode searches by VectorStoreQuery.query_embedding, which is missing "
            "(QdrantVectorStore searched without it: the first stored nodes, unranked); embed "
            "the query with the nodes' embed model, or query in sparse mode"
        )
    state = query_text_state(query.query_str)
    if mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID) and state is not None:
        raise ValueError(
            f"{mode.value} mode encodes the query text with M3's sparse head: "
            f"VectorStoreQuery.query_str {state} (a query_embedding gives the dense vector "
            "only; query in default mode to search by it alone)"
        )


def with_node_ids(
    node_ids: list[str] | None, filters: MetadataFilters | None
) -> MetadataFilters | None:
    """``filters`` as one ``AND`` group when ``node_ids`` come with them.

    ``QdrantVectorStore`` adds the id condition to the top-level group's ``should``: with an
    ``OR`` group it became one more alternative, so ``delete_nodes`` deleted every node the
    group matched, listed or not. Nested in an ``AND`` group, the ids and the filters are both
    required, as with an ``AND`` or ``NOT`` group.
    """
    if node_ids is None or filters is None or filters.condition is FilterCondition.AND:
        return filters
    return MetadataFilters(filters=[filters], condition=FilterCondition.AND)


def query_kwargs(kwargs: dict[str, Any], own_filter: Callable[[], Any]) -> dict[str, Any]:
    """A query's ``**kwargs`` checked, its ``qdrant_filters`` joined with the query's own filter.

    ``QdrantVectorStore.query`` ignored every other key (a misspelt ``qdrant_filter`` ran
    unfiltered), and a ``qdrant_filters`` replaced the query's ``filters``, ``doc_ids`` and
    ``node_ids`` silently; both apply here (``AND``).

    Args:
        kwargs: The query's keyword arguments.
        own_filter: Builds the query's own filter (``QdrantVectorStore._build_query_filter``;
            ``None``: none), called only with ``qdrant_filters`` (``QdrantVectorStore.query``
            builds it itself otherwise).

    Raises:
        TypeError: Names the keys ``QdrantVectorStore`` does not read.
    """
    unknown = sorted(set(kwargs) - QUERY_KWARGS)
    if unknown:
        raise TypeError(
            f"M3QdrantVectorStore.query got unsupported arguments {unknown}; it takes "
            f"{sorted(QUERY_KWARGS)}"
        )
    given = kwargs.get("qdrant_filters")
    if given is None:
        return kwargs
    own = own_filter()
    return kwargs if own is None else {**kwargs, "qdrant_filters": Filter(must=[given, own])}
