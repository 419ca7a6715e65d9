"""Conversions of :class:`~langchain_m3.M3VectorStore`: model argument, texts and hits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3.splitter import CHUNK_INDEX_KEY, END_INDEX_KEY, START_INDEX_KEY
from m3kit.encoder import M3Encoder
from m3kit.store import Hit
from m3kit.store.conditions import any_of, equals
from m3kit.store.filters import metadata_filter
from m3kit.store.schema import CHUNK_INDEX, DOC_ID, END, START

if TYPE_CHECKING:
    from langchain_m3._encoder_model import EncoderModel

__all__ = ["document_filter", "documents_of", "encoder_of", "hit_document"]

#: Keys the adapters put into a returned ``Document``'s metadata -> the payload field they show.
SHOWN_KEYS = {
    "doc_id": DOC_ID,
    CHUNK_INDEX_KEY: CHUNK_INDEX,
    START_INDEX_KEY: START,
    END_INDEX_KEY: END,
}


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


def document_filter(value: Any) -> Any:
    """A LangChain ``filter`` mapping as a store filter that also matches the keys a returned
    ``Document`` shows (``doc_id``, ``chunk_index``, ``start_index``, ``end_index``).

    Those keys come from the chunk's own fields, not from its stored metadata, so a filter
    on them used to match nothing; each now matches the stored metadata key *or* the field.
    A ``qdrant_client`` ``Filter`` (or ``None``) is passed on as it is.

    >>> f = document_filter({"chunk_index": 0, "lang": "en"})
    >>> [c.key for c in f.must[0].should], f.must[1].key
    (['metadata.chunk_index', 'chunk_index'], 'metadata.lang')
    """
    if not isinstance(value, Mapping) or not value:
        return value
    must: list[Any] = []
    for key, wanted in value.items():
        conditions = metadata_filter({key: wanted}).must
        assert isinstance(conditions, list)  # one condition per key
        mine = conditions[0]
        field = SHOWN_KEYS.get(str(key))
        if field is None:
            must.append(mine)
            continue
        shown = any_of(field, list(wanted)) if isinstance(wanted, list | tuple) else None
        if shown is None:
            shown = equals(field, wanted)
        must.append(models.Filter(should=[mine, shown]))
    return models.Filter(must=must)
