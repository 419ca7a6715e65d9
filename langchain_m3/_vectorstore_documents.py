"""The document half of :class:`~langchain_m3.M3VectorStore`: add, delete, clear, get by id.

Split from :mod:`langchain_m3.vectorstore`: :class:`VectorStoreDocuments` is a base class of
``M3VectorStore`` holding its write and by-id methods (``add_texts`` / ``add_documents``,
``delete``, ``clear``, ``get_by_ids``); ``M3VectorStore.__init__`` sets the attributes they
read. Ids and chunks: see :mod:`langchain_m3.vectorstore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore

from langchain_m3._documents import documents_of, hit_document
from langchain_m3._parents import (
    delete_other_children,
    documents_child_ids,
    parent_locks,
    parent_path,
    written_by_parent,
)
from langchain_m3._vectorstore_search import check_no_more
from langchain_m3._write_failures import Failed
from langchain_m3._writes import write_documents
from m3kit.store import M3Index
from m3kit.store.cancelling import in_worker
from m3kit.store.filters import distinct_doc_ids
from m3kit.store.foreign_points import foreign_or_documents
from m3kit.store.schema import METADATA

if TYPE_CHECKING:
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["VectorStoreDocuments"]


class VectorStoreDocuments(VectorStore):
    """The document methods of :class:`~langchain_m3.M3VectorStore` (a base; it sets these).

    Attributes:
        chunking: Default chunking of added documents.
        late_chunking: Default late chunking of added documents.
    """

    _index: M3Index
    parent_id_key: str | None
    chunking: bool | Chunker
    late_chunking: bool | LateChunker

    # -- writing ------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """:meth:`add_documents` for plain texts (and optional metadata dicts; ``None``: none)."""
        return self.add_documents(documents_of(texts, metadatas), ids=ids, **kwargs)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """:meth:`add_texts` in a worker thread, stopped when cancelled (see
        :meth:`aadd_documents`)."""
        return await in_worker(self.add_texts, texts, metadatas, ids=ids, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """:meth:`add_documents` in a worker thread.

        Cancelled (``task.cancel()``, an ``asyncio.wait_for`` timeout), it stops before the
        next group of documents it would write and raises only once stopped, so nothing more
        is written after: what was written stays, and the same call again writes the rest
        (:mod:`m3kit.store.cancelling`).
        """
        return await in_worker(self.add_documents, documents, **kwargs)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Store documents: unchanged ones are skipped, ones whose id is stored are replaced.

        A document :meth:`as_m3_retriever` returned, added back, is stored without the
        ``score`` / ``doc_id`` / ``chunk_index`` it shows (the stored document's own keys of
        those names are kept), as :meth:`M3Retriever.add_documents` stores it; a document
        whose id is not stored keeps every key it has.

        Keyword arguments:
            ids: One id per document (wins over ``Document.id``); a document without an id
                gets the index's content id.
            chunking: ``True`` (sentence-packed chunks, each encoded alone: nothing past the
                model's window is lost) / a chunker / ``False`` (default: the store's; without
                chunking a longer document is cut with a warning naming it).
            late_chunking: ``True`` / a ``LateChunker`` / ``False`` (default: the store's).
                With ``chunking`` too, its chunks are pooled late
                (:func:`m3kit.chunking.as_chunker`). Chunk documents from
                ``M3LateChunkingSplitter`` keep the vectors they carry, never split again.
            show_progress: tqdm bars.
            batch_size: Most documents encoded and written per step (LangChain's ``index()``
                passes it); default: all at once.
            parent_id_key: Metadata key of the parent id whose children this write replaces
                (default: :attr:`parent_id_key`).

        Returns:
            The document ids, in order.

        Raises:
            ValueError: A chunk document that lost its vectors (see
                :mod:`langchain_m3.splitter`), an id given twice with different content; with
                a parent id key, a parent id that is not a string or an integer.
        """
        key = kwargs.pop("parent_id_key", self.parent_id_key)
        ids = kwargs.pop("ids", None)
        chunking = kwargs.pop("chunking", None)
        late_chunking = kwargs.pop("late_chunking", None)
        show_progress = kwargs.pop("show_progress", None)
        batch_size = kwargs.pop("batch_size", None)
        check_no_more(kwargs, "add_documents")
        parents: list[str | int | None] = []
        if key is not None:
            parents, ids = documents_child_ids(key, documents, ids)
        replaces = key is not None and any(parent is not None for parent in parents)

        def drop_unwritten(failed: Failed) -> None:
            # a failed write: a parent it wrote children of keeps those of this version only
            touched = {p for p, w in zip(parents, failed.written, strict=True) if w is not None}
            kept = [
                d if p in touched else None for p, d in zip(parents, failed.stored, strict=True)
            ]
            delete_other_children(self._index, key, parents, kept)

        # then the write and its deletes are one step for its parents: another write of the
        # same parents between them would lose its children, or delete some of these. Writes
        # of other parents encode and write meanwhile (the store serialises its own writes).
        with parent_locks(self._index.store).hold(parents):
            if replaces:  # a replacement this process left interrupted (Ctrl-C): finished
                # before the write looks up which children are stored unchanged
                self._index.store.finish_groups()
            written = write_documents(
                self._index,
                documents,
                ids=ids,
                chunker=self._chunker(
                    self.chunking if chunking is None else chunking,
                    self.late_chunking if late_chunking is None else late_chunking,
                ),
                show_progress=show_progress,
                generate_missing_ids=True,
                batch_size=batch_size,
                # a document as_m3_retriever() returned, added back here, is the stored one
                retriever_results=True,
                on_failure=drop_unwritten if replaces else None,
            )
            if replaces and key is not None:
                # after the write: a failed encode never leaves a parent without children;
                # journalled: a process killed before the deletes finish has them finished
                # when the folder is opened again (it left old children beside new ones)
                kept = written_by_parent(parents, written)
                field = parent_path(METADATA, key)
                with self._index.store.replacing_groups(field, kept):
                    delete_other_children(self._index, key, parents, written)
        return written

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents (every chunk of each) by id; unknown ids are ignored.

        Raises:
            ValueError: No ids (use :meth:`clear` to delete everything).
            TypeError: An id is neither a str nor an int (as the ids ``add_documents`` takes).
        """
        check_no_more(kwargs, "delete")
        if ids is None:
            raise ValueError("delete() needs the document ids; clear() deletes every document")
        if isinstance(ids, str):
            raise TypeError("ids is a list of document ids, not a single string")
        self._index.delete(distinct_doc_ids(ids, "ids"))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """:meth:`delete` in a worker thread; cancelled, it raises only once the thread is
        done (a delete under way is not left to land after)."""
        return await in_worker(self.delete, ids, **kwargs)

    def clear(self) -> None:
        """Delete every document; the collection (and what model wrote it) stays.

        Waits for the writes of parents' children (:attr:`parent_id_key`) under way, and
        such writes starting meanwhile wait for it, so none is cut in two (a parent left with
        the children written after it only).
        """
        with parent_locks(self._index.store).hold_all():
            self._index.store.clear()

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Every stored chunk of these documents: by document in the order given, then chunk.

        Unknown ids are left out; a document stored whole gives one ``Document``. A point
        another program wrote (no m3kit ``doc_id`` / ``doc_hash``) is found by the id its
        search results carry, its point id (:mod:`m3kit.store.foreign_points`).
        """
        if isinstance(ids, str):
            raise TypeError("ids is a list of document ids, not a single string")
        wanted = distinct_doc_ids(ids, "ids")
        if not wanted:
            return []
        order = {doc_id: n for n, doc_id in enumerate(wanted)}
        hits = self._index.store.get(filter=foreign_or_documents(wanted))
        hits.sort(key=lambda h: (order.get(h.doc_id, len(order)), h.chunk_index))
        return [hit_document(h) for h in hits]

    def _chunker(
        self, chunking: bool | Chunker, late_chunking: bool | LateChunker
    ) -> Chunker | None:
        from m3kit.chunking import as_chunker

        return as_chunker(self._index.encoder, chunking=chunking, late_chunking=late_chunking)
