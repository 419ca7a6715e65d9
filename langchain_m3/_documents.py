"""Conversions of :class:`~langchain_m3.M3VectorStore`: model argument, texts and hits."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3.splitter import CHUNK_INDEX_KEY, END_INDEX_KEY, START_INDEX_KEY
from m3kit.encoder import M3Encoder
from m3kit.store import Backend, ClusterSettings, ConnectionSettings, Hit, M3Index
from m3kit.store.conditions import any_of, equals, present_else
from m3kit.store.filters import doc_id_text, metadata_filter, refuse_has_id
from m3kit.store.schema import CHUNK_COUNT, CHUNK_INDEX, DOC_ID, END, START, flat_metadata_path

if TYPE_CHECKING:
    from langchain_m3._encoder_model import EncoderModel

__all__ = [
    "RETRIEVER_KEYS",
    "check_ids_length",
    "document_filter",
    "documents_of",
    "encoder_of",
    "hit_document",
    "open_index",
    "sparse_cut_of",
    "without_retriever_keys",
]

#: Where a key a returned ``Document`` shows in its metadata comes from (``document_filter``):
#: ``"always"`` the chunk's own field; ``"chunked"`` the field on a chunk of a document stored
#: as several chunks, else the user's metadata key; ``"metadata first"`` the user's metadata
#: key where the chunk has one, else the chunk's field (``doc_id`` in ``M3VectorStore``, shown
#: as ``Document.id``: a ``MultiVectorRetriever`` child points at its parent by a metadata
#: ``doc_id``, and a filter on its parent's id must not match another child whose own id it
#: is). Other keys are the user's metadata.
VECTOR_STORE_SHOWN = {
    "doc_id": "metadata first",
    CHUNK_INDEX_KEY: "chunked",
    START_INDEX_KEY: "chunked",
    END_INDEX_KEY: "chunked",
}
RETRIEVER_SHOWN = {"doc_id": "always", CHUNK_INDEX_KEY: "always"}
#: The keys :class:`~langchain_m3.M3Retriever` adds to the metadata of what it returns.
RETRIEVER_KEYS = ("score", "doc_id", CHUNK_INDEX_KEY)
_FIELDS = {
    "doc_id": DOC_ID,
    CHUNK_INDEX_KEY: CHUNK_INDEX,
    START_INDEX_KEY: START,
    END_INDEX_KEY: END,
}
# the chunks whose placement M3VectorStore shows (hit_document)
_CHUNKED = models.FieldCondition(key=CHUNK_COUNT, range=models.Range(gt=1))
# filter values meaning "any of" (as m3kit.store.filters.metadata_filter reads them)
_ANY_OF = list | tuple | set | frozenset


def encoder_of(embedding: M3Encoder | EncoderModel) -> M3Encoder:
    """The encoder of an ``M3Encoder`` or of an m3kit LangChain class holding one.

    Raises:
        TypeError: ``embedding`` holds no encoder.
    """
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


def sparse_cut_of(embedding: M3Encoder | EncoderModel) -> dict[str, Any]:
    """The sparse cut ``embedding`` sets, as ``M3Index.open`` keyword arguments.

    ``M3SparseEmbeddings`` with a ``sparse_top_k`` or ``sparse_min_weight`` gives both
    (``{"sparse_top_k": ..., "sparse_min_weight": ...}``): the index then cuts every chunk it
    stores and every query as those embeddings cut theirs, and records the cut with the
    collection (one holding chunks stored with another cut is refused, naming both). Anything
    else, uncut sparse embeddings included, gives ``{}``: the collection's recorded cut (none
    for a new one) is used.
    """
    top_k = getattr(embedding, "sparse_top_k", None)
    min_weight = getattr(embedding, "sparse_min_weight", 0.0)
    if top_k is None and not min_weight:
        return {}
    return {"sparse_top_k": top_k, "sparse_min_weight": min_weight}


def open_index(
    embedding: M3Encoder | EncoderModel,
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    url: str | None,
    api_key: str | None,
    backend: Backend | str | None,
    connection: ConnectionSettings | None,
    cluster: ClusterSettings | None,
    create: bool = True,
    force_recreate: bool = False,
    rehearsal: Callable[[M3Index], object] | None = None,
) -> M3Index:
    """``M3Index.open`` of :func:`encoder_of` ``embedding`` with its :func:`sparse_cut_of`
    (what ``M3VectorStore.open`` and ``M3Retriever.from_documents`` open); with
    ``force_recreate``, the collection is dropped first (:func:`~m3kit.store.drop_collection`,
    langchain-qdrant's meaning), once the other arguments are checked and ``rehearsal`` (what
    the caller will do with the index: build its object, add its documents) has passed on an
    empty in-memory index (:func:`~langchain_m3._rehearsal.rehearse`): a call refused after
    the drop would have lost the collection for nothing.

    Raises:
        TypeError: ``embedding`` holds no encoder.
        ValueError: ``embedding``'s sparse cut differs from the one the collection's chunks
            were stored with (the message names both).
    """
    encoder = encoder_of(embedding)  # (a wrong embedding refused before anything is dropped)
    if force_recreate:
        from langchain_m3._rehearsal import rehearse
        from m3kit.store import drop_collection
        from m3kit.store.opening import check_place

        if not create:
            raise ValueError(
                "force_recreate=True makes the collection again: not with create=False"
            )
        check_place(
            location,
            collection=collection,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            cluster=cluster,
        )
        if rehearsal is not None:
            rehearse(encoder, sparse_cut_of(embedding), collection, rehearsal)
        drop_collection(
            location,
            collection=collection,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
        )
    return M3Index.open(
        encoder,
        location,
        collection=collection,
        url=url,
        api_key=api_key,
        backend=backend,
        connection=connection,
        cluster=cluster,
        create=create,
        **sparse_cut_of(embedding),
    )


def check_ids_length(documents: Sequence[Any], ids: Sequence[Any]) -> None:
    """Refuse ``ids`` of another length than ``documents``, before a collection is opened
    (or created) for them.

    >>> check_ids_length(["a"], ["1", "2"])
    Traceback (most recent call last):
    ...
    ValueError: 1 documents but 2 ids
    """
    if len(ids) != len(documents):
        raise ValueError(f"{len(documents)} documents but {len(ids)} ids")


def documents_of(
    texts: Iterable[str], metadatas: Sequence[Mapping[str, Any] | None] | None
) -> list[Document]:
    """One ``Document`` per text (with its metadata dict; a ``None`` entry is no metadata,
    as langchain-qdrant stores it).

    Raises:
        TypeError: ``texts`` is one string, or a metadata entry is not a mapping or ``None``.
        ValueError: ``metadatas`` has another length than ``texts``.
    """
    if isinstance(texts, str):
        raise TypeError("texts is a list of texts; wrap a single text as [text]")
    if isinstance(metadatas, Mapping):  # (its keys were read as positions: KeyError 0)
        raise TypeError("metadatas is a list of dicts, one per text; wrap a single one as [dict]")
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
    out = []
    for i, text in enumerate(texts):
        meta = metadatas[i] if metadatas else None
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"metadatas[{i}] is {type(meta).__name__}, not a dict (or None)")
        out.append(Document(page_content=text, metadata=dict(meta or {})))
    return out


def hit_document(hit: Hit) -> Document:
    """A stored chunk as the store's ``Document``: id = document id, chunk place when split.

    The place (``chunk_index``, ``start_index``, ``end_index``) is shown on the chunks of a
    document stored as several chunks, where it replaces a user's own keys of those names,
    as a LangChain splitter's ``add_start_index`` does; a whole document's metadata is
    returned exactly as stored.
    """
    metadata = dict(hit.metadata)
    if hit.chunk_count is not None and hit.chunk_count > 1:
        metadata[CHUNK_INDEX_KEY] = hit.chunk_index
        metadata[START_INDEX_KEY] = hit.start
        metadata[END_INDEX_KEY] = hit.end
    return Document(id=hit.doc_id, page_content=hit.text, metadata=metadata)


def without_retriever_keys(metadata: dict[str, Any], doc_id: str | None) -> dict[str, Any]:
    """``metadata`` of a document written under ``doc_id``, less the keys
    :class:`~langchain_m3.M3Retriever` added when it returned that document.

    They are dropped when they are what the retriever shows (``doc_id`` equal to ``doc_id``,
    an integer ``chunk_index`` and a number ``score``), so a returned document added back is
    the stored one; otherwise ``metadata`` is returned as it is (the user's own keys).

    >>> without_retriever_keys({"t": 1, "score": 0.5, "doc_id": "a", "chunk_index": 0}, "a")
    {'t': 1}
    >>> without_retriever_keys({"score": 5, "doc_id": "x"}, "a")
    {'score': 5, 'doc_id': 'x'}
    """
    score, index = metadata.get("score"), metadata.get(CHUNK_INDEX_KEY)
    shown = (
        doc_id is not None
        and metadata.get("doc_id") == doc_id
        and isinstance(index, int)
        and isinstance(score, int | float)
        and not isinstance(index, bool)
        and not isinstance(score, bool)
    )
    if not shown:
        return metadata
    return {k: v for k, v in metadata.items() if k not in RETRIEVER_KEYS}


def document_filter(value: Any, shown: Mapping[str, str]) -> Any:
    """A LangChain ``filter`` mapping as a store filter that matches what returned
    ``Document``\\ s show: a key in ``shown`` (:data:`VECTOR_STORE_SHOWN`,
    :data:`RETRIEVER_SHOWN`) matches the chunk's own field where the ``Document`` shows it and
    the user's metadata key elsewhere. A ``qdrant_client`` ``Filter`` (or ``None``) is passed
    on as it is.

    Raises:
        ValueError: A ``Filter`` holds a ``HasIdCondition``: it would match point ids, never
            the ``Document.id`` s this store returns (use ``{"doc_id": [...]}``).

    >>> f = document_filter({"chunk_index": 0, "lang": "en"}, RETRIEVER_SHOWN)
    >>> f.must[0].key, f.must[1].key
    ('chunk_index', 'metadata.lang')
    >>> f = document_filter({"start_index": 0}, VECTOR_STORE_SHOWN)
    >>> [[c.key for c in (s.must or []) + (s.must_not or [])] for s in f.must[0].should]
    [['chunk_count', 'start'], ['metadata.start_index', 'chunk_count']]
    """
    if isinstance(value, models.Filter):
        refuse_has_id(value)
    if not isinstance(value, Mapping) or not value:
        return value
    must: list[Any] = []
    for key, wanted in value.items():
        conditions = metadata_filter({key: wanted}).must
        assert isinstance(conditions, list)  # one condition per key
        mine = conditions[0]
        rule = shown.get(str(key))
        if rule is None:
            must.append(mine)
            continue
        field = _FIELDS[str(key)]
        stored = _stored_doc_ids(wanted) if field == DOC_ID else wanted
        theirs = any_of(field, list(stored)) if isinstance(stored, _ANY_OF) else None
        if theirs is None:
            theirs = equals(field, stored)
        if rule == "always":
            must.append(theirs)
        elif rule == "chunked":
            must.append(
                models.Filter(
                    should=[
                        models.Filter(must=[_CHUNKED, theirs]),
                        models.Filter(must=[mine], must_not=[_CHUNKED]),
                    ]
                )
            )
        else:  # "metadata first" (``mine`` reads metadata.<key>, a plain key)
            must.append(present_else(flat_metadata_path(str(key)), mine, theirs))
    return models.Filter(must=must)


def _stored_doc_ids(wanted: Any) -> Any:
    """A ``doc_id`` filter value as the ids are stored: an int is its digits, as
    ``add_documents``, ``get_by_ids`` and ``delete`` take it (other values are left as given;
    a set, any of its ids, becomes a list).

    >>> _stored_doc_ids(7), _stored_doc_ids([7, "x", True]), _stored_doc_ids({7})
    ('7', ['7', 'x', True], ['7'])
    """
    if isinstance(wanted, _ANY_OF):
        return [_stored_doc_ids(v) for v in wanted]
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return doc_id_text(wanted, "filter['doc_id']")
    return wanted
