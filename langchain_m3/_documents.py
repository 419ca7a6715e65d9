"""Conversions of :class:`~langchain_m3.M3VectorStore`: model argument, texts and hits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from langchain_m3.splitter import CHUNK_INDEX_KEY, END_INDEX_KEY, START_INDEX_KEY
from m3kit.encoder import M3Encoder
from m3kit.store import Hit

if TYPE_CHECKING:
    from langchain_m3._encoder_model import EncoderModel

__all__ = ["documents_of", "encoder_of", "hit_document"]


def encoder_of(embedding: M3Encoder | EncoderModel) -> M3Encoder:
    """The encoder of an ``M3Encoder`` or of an m3kit LangChain class holding one."""
    if isinstance(embedding, M3Encoder):
        return embedding
    encoder = getattr(embedding, "encoder", None)
    if not isinstance(encoder, M3Encoder):
        raise TypeError(
            "embedding must be an M3Encoder or an m3kit LangChain class holding one "
            f"(M3Embeddings, M3SparseEmbeddings, M3LateChunkingSplitter); got "
            f"{type(embedding).__name__}"
        )
    return encoder


def documents_of(
    texts: Iterable[str], metadatas: Sequence[dict[str, Any]] | None
) -> list[Document]:
    """One ``Document`` per text (with its metadata dict)."""
    if isinstance(texts, str):
        raise TypeError("texts is a list of texts; wrap a single text as [text]")
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
    return [
        Document(page_content=t, metadata=dict(metadatas[i]) if metadatas else {})
        for i, t in enumerate(texts)
    ]


def hit_document(hit: Hit) -> Document:
    """A stored chunk as the store's ``Document``: id = document id, chunk place when split."""
    metadata = dict(hit.metadata)
    if hit.chunk_count is not None and hit.chunk_count > 1:
        metadata[CHUNK_INDEX_KEY] = hit.chunk_index
        metadata[START_INDEX_KEY] = hit.start
        metadata[END_INDEX_KEY] = hit.end
    return Document(id=hit.doc_id, page_content=hit.text, metadata=metadata)
