"""``M3LateChunkingSplitter``: LangChain document transformer that late-chunks with BGE-M3.

Each document is encoded once and cut into chunks whose vectors carry the whole document's
context. Chunk ``Document``\\ s keep the source's metadata plus ``start_index`` (LangChain's
key for a chunk's offset), ``end_index`` and ``chunk_index``. As a ``BaseDocumentTransformer``
(``split_documents`` / ``transform_documents``) it returns the chunks only, without running the
model; :meth:`M3LateChunkingSplitter.split_documents_with_vectors` runs it and pairs every chunk
``Document`` with its :class:`m3kit.Chunk` (``.dense``, ``.sparse``, ``.colbert``): no vectors
are hidden in metadata. To store late-chunked documents in Qdrant, use
``M3Retriever.add_documents(docs, late_chunking=splitter.chunker)``.

Example::

    from langchain_core.documents import Document
    from langchain_m3.splitter import M3LateChunkingSplitter

    splitter = M3LateChunkingSplitter(model_name_or_path="BAAI/bge-m3", chunk_size=256)
    for doc, chunk in splitter.split_documents_with_vectors([Document(page_content=text)]):
        print(doc.metadata["start_index"], chunk.dense.shape, len(chunk.sparse))
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import BaseDocumentTransformer, Document
from pydantic import Field, PrivateAttr

from langchain_m3._encoder_model import EncoderModel
from m3kit.late_chunking import DensePooling, LateChunker
from m3kit.outputs import Chunk

__all__ = ["CHUNK_INDEX_KEY", "END_INDEX_KEY", "START_INDEX_KEY", "M3LateChunkingSplitter"]

START_INDEX_KEY = "start_index"
END_INDEX_KEY = "end_index"
CHUNK_INDEX_KEY = "chunk_index"


class M3LateChunkingSplitter(EncoderModel, BaseDocumentTransformer):
    """Split documents into late-chunked pieces (dense, sparse and ColBERT per chunk).

    Build it from a checkpoint (``model_name_or_path`` and the other loading fields), or share a
    loaded model: ``M3LateChunkingSplitter.from_encoder(encoder, chunk_size=128)``.
    """

    chunk_size: int = Field(default=256, ge=1)
    """Token budget per chunk of the built-in sentence splitter."""
    window: int | None = Field(default=None, ge=3)
    """Most tokens per forward pass (default: the encoder's ``max_length``). Smaller windows cost
    less (attention is quadratic): ``2 * chunk_size + 2`` gives each chunk about one neighbour."""
    overlap: int | None = Field(default=None, ge=0)
    """Context tokens shared by consecutive windows of a long document (default 0)."""
    dense_pooling: DensePooling = DensePooling.MEAN
    """``mean`` (late chunking) or ``naive`` (each chunk's text encoded alone)."""
    splitter: Any = Field(default=None, exclude=True)
    """Chunk boundaries instead of the sentence splitter: a LangChain ``TextSplitter``, or a
    callable ``str -> [(start, end)]``."""

    _chunker: LateChunker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._chunker = LateChunker(
            self.encoder,
            chunk_size=self.chunk_size,
            splitter=self.splitter,
            window=self.window,
            overlap=self.overlap,
            dense_pooling=self.dense_pooling,
        )

    @property
    def chunker(self) -> LateChunker:
        """The :class:`~m3kit.late_chunking.LateChunker` (pass it to ``M3Retriever``)."""
        return self._chunker

    def split_text(self, text: str) -> list[str]:
        """The chunk texts of ``text`` (no model call: boundaries only)."""
        return [text[s:e] for s, e in self._chunker.spans([text])[0]]

    def split_documents_with_vectors(
        self, documents: Sequence[Document]
    ) -> list[tuple[Document, Chunk]]:
        """Chunk ``Document``\\ s paired with their :class:`m3kit.Chunk` (all vectors)."""
        docs = list(documents)
        per_doc = self._chunker.chunk(
            [d.page_content for d in docs], show_progress=self.show_progress
        )
        return [
            (_chunk_document(doc, c.text, c.start, c.end, c.index), c)
            for doc, chunks in zip(docs, per_doc, strict=True)
            for c in chunks
        ]

    def split_documents(self, documents: Sequence[Document]) -> list[Document]:
        """Chunk ``Document``\\ s, boundaries only: no model call, no vectors.

        The same chunks as :meth:`split_documents_with_vectors`; use that method (or
        ``M3Retriever.add_documents(..., late_chunking=splitter.chunker)``) for the vectors.
        """
        docs = list(documents)
        spans = self._chunker.spans([d.page_content for d in docs])
        return [
            _chunk_document(doc, doc.page_content[s:e], s, e, i)
            for doc, doc_spans in zip(docs, spans, strict=True)
            for i, (s, e) in enumerate(doc_spans)
        ]

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> list[Document]:
        """``BaseDocumentTransformer`` entry point: :meth:`split_documents`."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return self.split_documents(documents)

    async def atransform_documents(
        self, documents: Sequence[Document], **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`transform_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.transform_documents, documents, **kwargs)


def _chunk_document(parent: Document, text: str, start: int, end: int, index: int) -> Document:
    metadata = {
        **parent.metadata,
        START_INDEX_KEY: start,
        END_INDEX_KEY: end,
        CHUNK_INDEX_KEY: index,
    }
    return Document(page_content=text, metadata=metadata)
