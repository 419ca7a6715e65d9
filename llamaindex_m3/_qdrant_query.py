"""What :class:`~llamaindex_m3.M3QdrantVectorStore` adds to ``QdrantVectorStore``'s queries.

Its query checks (:func:`check_query`, :func:`with_node_ids`) and two per-task handoffs into
``QdrantVectorStore.aquery``, which calls the store's fusion and sparse query functions
itself: the query's own ``alpha`` (:class:`QueryAlphaFusion`), and the query's sparse vector
encoded in a worker thread beforehand (:class:`QueryVectorHandoff`), so the M3 forward pass
does not run on the event loop.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from llamaindex_m3.vector_store_query import check_mode, query_text_state

__all__ = [
    "QUERY_ALPHA",
    "QUERY_VECTORS",
    "QueryAlphaFusion",
    "QueryVectorHandoff",
    "check_query",
    "with_node_ids",
]

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


#: The sparse vectors of the query :meth:`M3QdrantVectorStore.aquery` is answering (per task):
#: ``(query texts, what the sparse query function returned for them)``.
QUERY_VECTORS: ContextVar[tuple[list[str], Any] | None] = ContextVar(
    "m3kit_query_vectors", default=None
)


class QueryVectorHandoff:
    """A sparse query function answering the query being answered from :data:`QUERY_VECTORS`.

    ``QdrantVectorStore.aquery`` calls the sparse query function on the event loop: an M3
    forward pass that blocked every other task for its length (8 concurrent queries ran one
    after another). :meth:`M3QdrantVectorStore.aquery` encodes the query in a worker thread
    first; this hands that result over (other texts, or no handoff: ``fn`` is called).
    """

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, texts: list[str]) -> Any:
        handed = QUERY_VECTORS.get()
        if handed is not None and handed[0] == list(texts):
            return handed[1]
        return self.fn(texts)


def check_query(query: VectorStoreQuery) -> None:
    """Refuse a mode ``QdrantVectorStore`` does not run (it ran a dense search instead,
    silently: MMR without diversity), a default or hybrid query without ``query_embedding``
    (the dense vectors are the nodes' own embeddings; ``QdrantVectorStore`` passed ``None`` to
    Qdrant, which returns points unranked), and a sparse or hybrid query without a query text:
    its sparse vector is encoded from ``query_str`` (a dense ``query_embedding`` cannot supply
    it), and a blank one gives an empty sparse vector, which matches nothing.

    Raises:
        NotImplementedError: Names a mode other than default, sparse and hybrid.
        ValueError: Names the mode and the missing ``query_embedding``, or the missing, empty
            or whitespace-only ``query_str``.
    """
    mode = check_mode(query, "M3QdrantVectorStore")
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
