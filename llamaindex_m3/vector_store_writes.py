"""The write half of :class:`~llamaindex_m3.M3VectorStore`: add and delete nodes, clear.

Split from :mod:`llamaindex_m3.vector_store`: :class:`VectorStoreWrites` is a mixin (before
the LlamaIndex store base) holding ``add`` / ``delete`` / ``delete_nodes`` / ``clear`` and
their async forms; ``M3VectorStore`` sets the attributes they read. How nodes map to stored
chunks: :mod:`llamaindex_m3.node_writes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilters

from llamaindex_m3.filters import refuse_deleting_all, to_store_filter
from llamaindex_m3.node_writes import write_nodes
from llamaindex_m3.sourceless import ref_docs_filter
from m3kit.store.cancelling import holding, in_worker
from m3kit.store.filters import and_filters, chunk_ids_filter, distinct_ids, to_filter

if TYPE_CHECKING:
    from m3kit.store import M3Index

__all__ = ["VectorStoreWrites"]


class VectorStoreWrites:
    """The write methods of :class:`~llamaindex_m3.M3VectorStore` (a mixin; it sets these)."""

    if TYPE_CHECKING:  # not annotations at runtime: pydantic would read them as fields
        _index: M3Index
        text_instruction: str | None
        show_progress: bool

    # -- writing ----------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes as chunks of their source documents (see :mod:`~llamaindex_m3.node_writes`).

        Every node is checked before anything is written; they are then encoded and written in
        groups of whole documents (as ``M3Index.add_texts``: ``write_group`` documents, fewer
        when they hold more than 131,072 characters), so a large ingestion holds one group's
        vectors at a time. A node refused as it is encoded (an embedding another model made)
        leaves the groups written before it stored.

        Returns:
            The id of each node (``node.node_id``), in input order.
        """
        _no_kwargs("add", add_kwargs)
        with holding(self._index.store.write_lock):  # cancelled while it waited: not done
            return write_nodes(
                self._index,
                nodes,
                text_instruction=self.text_instruction,
                show_progress=self.show_progress,
            )

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """:meth:`add` in a worker thread.

        Cancelled (``task.cancel()``, an ``asyncio.wait_for`` timeout), it raises only once
        its thread is done, so nothing of it is written after: an add still waiting for
        another write, or still encoding its first group of documents, writes nothing (the
        encoding under way finishes first); one writing finishes that group, and the groups
        written before stay, as ``M3Index.aadd_texts`` (:mod:`m3kit.store.cancelling`).
        Likewise the other async writes.
        """
        return await in_worker(self.add, nodes, **add_kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``.

        A node without a source document (no ``SOURCE`` relationship) belongs to none: its
        ``ref_doc_id`` is ``"None"``, as in LlamaIndex's stores, so it stays when
        ``ref_doc_id`` is its own id; delete it with :meth:`delete_nodes` (see
        :mod:`~llamaindex_m3.sourceless`). A ``Document`` stored whole is its own document.
        """
        _no_kwargs("delete", delete_kwargs)
        (doc_id,) = distinct_ids([ref_doc_id], "ref_doc_id")
        with holding(self._index.store.write_lock):  # cancelled while it waited: not done
            self._index.store.delete_points(filter=ref_docs_filter([doc_id]))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """:meth:`delete` in a worker thread."""
        await in_worker(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching the filters (both: AND).

        An id is a node's own id (``node.node_id`` when it was added) or a chunk's point id.
        The other chunks of a node's document keep their ``chunk_count``: the document lacks
        one chunk (a reader such as ``complete_documents`` sees it incomplete, so a writer
        that skips stored documents writes it again), and a node added to it takes the
        deleted one's place (:mod:`~llamaindex_m3.node_writes`).

        Raises:
            ValueError: Neither is given, or ``filters`` holds no filter and no ``node_ids``
                are given (it would select every node: use :meth:`clear`).
        """
        _no_kwargs("delete_nodes", delete_kwargs)
        refuse_deleting_all("M3VectorStore", node_ids, filters)
        by_id = None if node_ids is None else chunk_ids_filter(node_ids)
        where = to_filter(to_store_filter(filters))
        with holding(self._index.store.write_lock):  # cancelled while it waited: not done
            self._index.store.delete_points(filter=and_filters(by_id, where))

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """:meth:`delete_nodes` in a worker thread."""
        await in_worker(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        """Delete every node (the collection stays)."""
        with holding(self._index.store.write_lock):  # cancelled while it waited: not done
            self._index.store.clear()

    async def aclear(self) -> None:
        """:meth:`clear` in a worker thread."""
        await in_worker(self.clear)


def _no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"M3VectorStore.{method} got unsupported arguments: {sorted(kwargs)}")
