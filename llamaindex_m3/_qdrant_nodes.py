"""Node reads and deletes of :class:`~llamaindex_m3.M3QdrantVectorStore`.

``QdrantVectorStore.get_nodes`` / ``delete_nodes`` given ``node_ids`` and an ``OR`` group of
``filters`` took every node the group matched (a delete deleted them), ``delete_nodes`` naming
no node deleted every node, its translation of ``MetadataFilters`` differed silently from
LlamaIndex's own filtering, and every method swallowed a misspelt keyword argument. Here the
nodes matching both are taken, a delete of everything is refused (use ``clear``), filters mean
what :func:`~llamaindex_m3.filters.to_flat_payload_filter` says, and unknown keywords raise.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilters

from llamaindex_m3._qdrant_query import with_node_ids
from llamaindex_m3._qdrant_record import QdrantModelRecord
from llamaindex_m3.filters import refuse_deleting_all, to_flat_payload_filter

__all__ = ["QdrantNodeAccess", "no_kwargs"]


def no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse what ``QdrantVectorStore`` takes as ``**kwargs`` and ignores (a misspelt
    argument, swallowed)."""
    unknown = sorted(kwargs)
    if unknown:
        raise TypeError(f"M3QdrantVectorStore.{method} got unsupported arguments: {unknown}")


class QdrantNodeAccess(QdrantModelRecord):
    """``QdrantVectorStore``'s node reads and deletes, taking what they are asked."""

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        limit: int | None = None,
        shard_identifier: Any | None = None,
    ) -> list[BaseNode]:
        """``QdrantVectorStore.get_nodes``; with ``node_ids`` and ``filters``, the nodes matching
        both, whatever the filters' condition (see
        :func:`~llamaindex_m3._qdrant_query.with_node_ids`)."""
        filters = with_node_ids(node_ids, filters)
        return super().get_nodes(  # type: ignore[no-any-return]
            node_ids, filters, limit=limit, shard_identifier=shard_identifier
        )

    async def aget_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        limit: int | None = None,
        shard_identifier: Any | None = None,
    ) -> list[BaseNode]:
        """:meth:`get_nodes` through the async client."""
        await self._acheck_models()
        filters = with_node_ids(node_ids, filters)
        return await super().aget_nodes(  # type: ignore[no-any-return]
            node_ids, filters, limit=limit, shard_identifier=shard_identifier
        )

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        shard_identifier: Any | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """``QdrantVectorStore.delete_nodes``; with ``node_ids`` and ``filters``, only the nodes
        matching both, whatever the filters' condition (LlamaIndex's deleted every node an
        ``OR`` group matched; see :func:`~llamaindex_m3._qdrant_query.with_node_ids`).

        Raises:
            ValueError: Neither ``node_ids`` nor a filter is given (``QdrantVectorStore``
                deleted every node: use :meth:`clear`).
            TypeError: An argument ``QdrantVectorStore`` would have ignored.
        """
        no_kwargs("delete_nodes", delete_kwargs)
        refuse_deleting_all("M3QdrantVectorStore", node_ids, filters)
        filters = with_node_ids(node_ids, filters)
        super().delete_nodes(node_ids, filters, shard_identifier)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        shard_identifier: Any | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """:meth:`delete_nodes` through the async client."""
        no_kwargs("adelete_nodes", delete_kwargs)
        refuse_deleting_all("M3QdrantVectorStore", node_ids, filters)
        filters = with_node_ids(node_ids, filters)
        await super().adelete_nodes(node_ids, filters, shard_identifier)

    def _build_subfilter(self, filters: MetadataFilters) -> Any:
        """The filter of a group, as :func:`~llamaindex_m3.filters.to_flat_payload_filter`
        translates it: what :class:`~llamaindex_m3.M3VectorStore`'s filters mean, on this
        store's payload. ``QdrantVectorStore``'s own translation differed silently (whole
        tokens for ``TEXT_MATCH``, ``NE`` on lists, a group without a condition matching
        every node; see that function)."""
        return to_flat_payload_filter(filters)

    def delete(
        self, ref_doc_id: str, shard_identifier: Any | None = None, **delete_kwargs: Any
    ) -> None:
        """``QdrantVectorStore.delete``; an argument it would ignore is refused."""
        no_kwargs("delete", delete_kwargs)
        super().delete(ref_doc_id, shard_identifier)

    async def adelete(
        self, ref_doc_id: str, shard_identifier: Any | None = None, **delete_kwargs: Any
    ) -> None:
        """:meth:`delete` through the async client."""
        no_kwargs("adelete", delete_kwargs)
        await super().adelete(ref_doc_id, shard_identifier)
