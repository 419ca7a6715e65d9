"""The read half of :class:`~llamaindex_m3.M3VectorStore`: get nodes, query, search settings.

Split from :mod:`llamaindex_m3.vector_store` (the class-size guide): :class:`VectorStoreReads`
is a mixin (before the LlamaIndex store base, as
:class:`~llamaindex_m3.vector_store_writes.VectorStoreWrites`) holding ``get_nodes``,
``query``, their async forms and ``search_settings``; ``M3VectorStore`` sets the attributes
they read. The query modes: :mod:`llamaindex_m3.vector_store`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from qdrant_client import models

from llamaindex_m3.filters import to_store_filter
from llamaindex_m3.retriever import check_settings, hit_to_node
from llamaindex_m3.vector_store_query import query_hits, query_settings
from m3kit.store import SearchSettings

if TYPE_CHECKING:
    from llamaindex_m3.vector_store import M3VectorStore
    from m3kit.store import M3Index

__all__ = ["QUERY_SETTINGS", "VectorStoreReads"]

#: What ``query(..., **kwargs)`` (a retriever's ``vector_store_kwargs``) may set for one query.
QUERY_SETTINGS = ("fusion", "weights", "rerank", "candidates")


class VectorStoreReads:
    """The read methods of :class:`~llamaindex_m3.M3VectorStore` (a mixin; it sets these)."""

    if TYPE_CHECKING:  # not annotations at runtime: pydantic would read them as fields
        _index: M3Index

    def _store(self) -> M3VectorStore:
        return cast("M3VectorStore", self)  # (the mixin's only class)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes with these ids (in that order) and/or matching the filters.

        An id is a node's own id (``node.node_id`` when it was added) or a chunk's point id;
        the nodes returned carry their own ids (see the class doc). Neither given: every
        stored node, as LlamaIndex's Qdrant store returns.

        Unlike LlamaIndex's Qdrant store, the nodes come back without ``embedding`` (``None``),
        as from a query: a node read back, edited and added again is then encoded afresh
        instead of keeping its old dense vector (see :mod:`~llamaindex_m3.node_writes`).
        """
        store, where = self._index.store, to_store_filter(filters)
        if node_ids is None:
            hits = store.get(None, filter=models.Filter() if where is None else where)
        else:
            hits = store.find(node_ids, filter=where)
        return [hit_to_node(h).node for h in hits]

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """:meth:`get_nodes` in a worker thread."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Search in ``query.mode`` (default, sparse or hybrid; see the module doc).

        ``similarity_top_k`` is the number of results (``sparse_top_k`` in sparse mode and
        ``hybrid_top_k`` in hybrid mode when set). Each hybrid retriever gathers ``candidates`` (in
        hybrid mode ``sparse_top_k``, as LlamaIndex's Qdrant store fetches that many sparse
        candidates; else the store's, else the index's: ``max(4 * k, 50)`` uncalibrated), and no
        fewer than ``similarity_top_k`` when ``hybrid_top_k`` is below it (that store fetches
        ``similarity_top_k`` dense candidates then). In hybrid mode ``alpha`` weighs dense (with
        ColBERT) against sparse in M3's weighted sum (``fusion="m3"``), keeping the dense/ColBERT
        share of the weights in force; other modes do not use it (as LlamaIndex's Qdrant store).
        M3's weighted sum is divided by the weights of the heads that score, so default mode scores
        the dense similarity and sparse mode the sparse score, as with any other fusion.
        ``filters``, ``doc_ids`` and ``node_ids`` restrict the search (an empty id list does
        not: ``VectorStoreIndex.as_retriever`` passes ``node_ids=[]``).

        Args:
            query: The LlamaIndex query.
            **kwargs: This query's ``fusion``, ``weights``, ``rerank`` or ``candidates``
                (a retriever's ``vector_store_kwargs``); they win over the store's.

        Raises:
            NotImplementedError: Another mode (MMR, SVM...).
            ValueError: A mode the collection cannot serve (sparse or hybrid on a dense-only
                collection), no (or a blank) ``query_str`` where one is needed, ``alpha`` outside
                ``[0, 1]``, in hybrid mode without ``fusion="m3"``, a bad ranking setting,
                ``m3`` weights that give every head this mode scores with weight 0, a
                ``query_embedding`` searched by that is of another size than the collection's
                dense vectors, all zeros or not finite.
            FingerprintMismatchError: The ``query_embedding`` was made by an
                :class:`M3Embedding` of another encoder than the collection's
                (:mod:`llamaindex_m3.embedding_origins`).
            TypeError: Another keyword argument; ``doc_ids`` or ``node_ids`` a single string
                (not a list of ids).
        """
        unknown = sorted(set(kwargs) - set(QUERY_SETTINGS))
        if unknown:
            raise TypeError(
                f"M3VectorStore.query got unsupported arguments: {unknown}; it takes "
                f"{list(QUERY_SETTINGS)}"
            )
        hits = query_hits(self._store(), query, check_settings(**kwargs))
        nodes = [hit_to_node(h).node for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes,
            similarities=[h.score for h in hits],
            ids=[n.node_id for n in nodes],
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(self.query, query, **kwargs)

    def search_settings(
        self, query: VectorStoreQuery | None = None, **given: Any
    ) -> SearchSettings:
        """The ranking of ``query`` (default: a hybrid query) with these ``vector_store_kwargs``.

        ``rerank`` is resolved: ``True`` when ColBERT re-scores the candidates.
        """
        query = query or VectorStoreQuery(mode=VectorStoreQueryMode.HYBRID)
        mode = VectorStoreQueryMode(query.mode)
        return query_settings(self._store(), query, mode, check_settings(**given))
