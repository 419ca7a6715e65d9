"""The write half of :class:`~langchain_m3.M3Retriever`: documents and texts into the index.

Split from :mod:`langchain_m3.retriever`: :class:`RetrieverWrites` is a base class (a plain
mixin, no pydantic fields) of ``M3Retriever`` holding
:meth:`~langchain_m3.M3Retriever.add_documents`, :meth:`~langchain_m3.M3Retriever.add_texts`
and :meth:`~langchain_m3.M3Retriever.delete`; ``index`` is the retriever's field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from langchain_m3._documents import documents_of
from langchain_m3._writes import write_documents
from m3kit.store.cancelling import in_worker

if TYPE_CHECKING:
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker
    from m3kit.store import M3Index

__all__ = ["RetrieverWrites"]


class RetrieverWrites:
    """The write methods of :class:`~langchain_m3.M3Retriever` (its base; ``index`` is its field).

    Declares no annotations at run time, so pydantic sees no field here.
    """

    if TYPE_CHECKING:
        index: M3Index

    def add_documents(
        self,
        documents: Sequence[Document],
        *,
        ids: Sequence[str] | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Encode and store documents; unchanged ones are skipped, changed ones replaced.

        Args:
            documents: The documents (``page_content`` and JSON-serialisable ``metadata``).
            ids: Document ids; default: each document's ``id``, else a hash of its content.
            chunking: ``True`` cuts each document into chunks of whole sentences (256 tokens,
                or the model's window if smaller), each encoded alone, so no text past the
                model's ``max_length`` is lost (:class:`~m3kit.chunking.NaiveChunker`; pass one
                to choose the size or splitter). Default (no chunking): one vector per
                document, a longer one cut with a warning naming it and the tokens dropped.
            late_chunking: ``True`` splits each document into chunks embedded in the context of
                the whole document (:class:`~m3kit.late_chunking.LateChunker` with its
                defaults); pass a ``LateChunker`` to choose the chunk size or splitter. With
                ``chunking=`` too, the chunks ``chunking=`` cuts are pooled late
                (:func:`m3kit.chunking.as_chunker`).
                Chunk documents from :class:`~langchain_m3.M3LateChunkingSplitter` are
                stored with the vectors they carry (one that lost them raises ``ValueError``).
            show_progress: tqdm bars (default: for large batches).

        A document this retriever returned, added back, is the stored document: the
        ``score``, ``doc_id`` and ``chunk_index`` it shows are not stored as its metadata,
        and the stored document's own keys of those names (which it shows over) are kept.

        Returns:
            The document ids, in order.
        """
        return write_documents(
            self.index,
            documents,
            ids=ids,
            chunker=self._chunker(chunking, late_chunking),
            show_progress=show_progress,
            generate_missing_ids=False,
            retriever_results=True,
        )

    async def aadd_documents(
        self,
        documents: Sequence[Document],
        *,
        ids: Sequence[str] | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Async :meth:`add_documents` (in a worker thread); cancelled, it writes nothing more
        once it has raised (see :meth:`M3Index.aadd_texts <m3kit.store.M3Index.aadd_texts>`)."""
        return await in_worker(
            self.add_documents,
            documents,
            ids=ids,
            chunking=chunking,
            late_chunking=late_chunking,
            show_progress=show_progress,
        )

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: Sequence[str] | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """:meth:`add_documents` for plain texts (and optional metadata dicts; ``None``: none)."""
        return self.add_documents(
            documents_of(texts, metadatas),
            ids=ids,
            chunking=chunking,
            late_chunking=late_chunking,
            show_progress=show_progress,
        )

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: Sequence[str] | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Async :meth:`add_texts` (in a worker thread, stopped when cancelled, as
        :meth:`aadd_documents`)."""
        return await self.aadd_documents(
            documents_of(texts, metadatas),
            ids=ids,
            chunking=chunking,
            late_chunking=late_chunking,
            show_progress=show_progress,
        )

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents (every chunk of each) by document id.

        Raises:
            TypeError: ``doc_ids`` is one string (give ``[doc_id]``).
        """
        self.index.delete(doc_ids)

    async def adelete(self, doc_ids: Sequence[str]) -> None:
        """Async :meth:`delete` (in a worker thread; cancelled, it raises only once the delete
        under way is done, so none lands after)."""
        await in_worker(self.delete, doc_ids)

    def _chunker(
        self, chunking: bool | Chunker, late_chunking: bool | LateChunker
    ) -> Chunker | None:
        """The chunker ``chunking`` / ``late_chunking`` ask for (``None``: one chunk a document)."""
        from m3kit.chunking import as_chunker

        return as_chunker(self.index.encoder, chunking=chunking, late_chunking=late_chunking)
