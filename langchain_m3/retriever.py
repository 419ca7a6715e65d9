"""``M3Retriever``: three-way hybrid search (dense + sparse + ColBERT) over an m3kit collection.

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> retriever = M3Retriever.from_documents(
    ...     [
    ...         Document("Berlin is the capital of Germany.", metadata={"topic": "geo"}),
    ...         Document("Oxygen has atomic number 8.", metadata={"topic": "chem"}),
    ...     ],
    ...     enc,
    ...     k=1,
    ... )
    >>> [d.page_content for d in retriever.invoke("Oxygen has atomic number 8.")]
    ['Oxygen has atomic number 8.']
    >>> docs = retriever.invoke("capital", k=2, filter={"topic": "geo"})
    >>> [(d.metadata["topic"], d.metadata["chunk_index"]) for d in docs]
    [('geo', 0)]
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from qdrant_client import models

from langchain_m3._documents import (
    RETRIEVER_SHOWN,
    check_ids_length,
    document_filter,
    documents_of,
    open_index,
)
from langchain_m3._retriever_writes import RetrieverWrites
from langchain_m3._search import (
    SETTINGS_ARGS,
    check_k,
    check_query,
    check_setting,
)
from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.outputs import Head
from m3kit.store import Backend, ClusterSettings, ConnectionSettings, Fusion, Hit, M3Index
from m3kit.store.filters import to_filter
from m3kit.store.opening import collection_named
from m3kit.store.search_settings import check_score_threshold

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-core", "langchain", e) from e

if TYPE_CHECKING:
    from langchain_m3._encoder_model import EncoderModel
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["M3Retriever"]

MetadataFilter = dict[str, Any] | models.Filter


class _NotGiven(enum.Enum):
    """A call's ``filter`` / ``score_threshold`` left out (``None`` given means "none")."""

    NOT_GIVEN = enum.auto()


_NOT_GIVEN = _NotGiven.NOT_GIVEN


class M3Retriever(RetrieverWrites, BaseRetriever):
    """LangChain retriever over an :class:`~m3kit.store.M3Index` (BGE-M3 in Qdrant).

    Each query is encoded once (all heads the checkpoint has); Qdrant gathers dense and sparse
    candidates, fuses them (``fusion``) and, with a ColBERT head, reranks them by MaxSim.
    A dense-only checkpoint (e.g. MiniLM) does plain dense search.

    ``k``, ``fusion``, ``weights``, ``rerank``, ``candidates``, ``filter`` and
    ``score_threshold`` are defaults that one call can override:
    ``retriever.invoke("query", k=3, filter={"lang": "en"}, candidates=200)``. Ranking
    settings left ``None`` are the index's (:meth:`~m3kit.store.M3Index.search_settings`):
    the checkpoint's calibrated fusion (``m3kit_search.json``) when it has one.

    A call's ``filter=None`` / ``score_threshold=None`` means no filter / no threshold for
    that call (as LangChain's ``VectorStoreRetriever`` merges a call's keywords over its
    ``search_kwargs``); a call that leaves them out uses the retriever's. A call's ``None``
    for ``k``, ``fusion``, ``weights``, ``rerank`` or ``candidates`` keeps the retriever's
    value: there is no "no ``k``", and a ranking setting's ``None`` ("the index's") is what
    the retriever's own ``None`` already means (to use the index's ranking over a retriever's
    own setting for one call, pass the index's values). ``filter={}`` is an error (it would
    match everything): pass ``filter=None``.

    Each returned :class:`~langchain_core.documents.Document` has the chunk's text, its
    document's id as ``id`` (what :meth:`add_documents` returns and :meth:`delete` takes; the
    chunks of one document share it) and its metadata plus ``score``, ``doc_id`` (the same id)
    and ``chunk_index`` (these three keys overwrite user metadata of the same name; added back
    with :meth:`add_documents`, such a document is stored without them, as it was).

    Example:
        >>> import tempfile
        >>> from m3kit import M3Encoder
        >>> from m3kit.store import M3Index
        >>> from m3kit.testing import build_tiny_m3_checkpoint
        >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
        >>> retriever = M3Retriever(index=M3Index.open(enc, ":memory:"), k=2, fusion="m3")
        >>> ids = retriever.add_texts(["Jupiter is a gas giant.", "Honeybees dance."])
        >>> hit = retriever.invoke("Honeybees dance.")[0]
        >>> hit.page_content, sorted(hit.metadata)
        ('Honeybees dance.', ['chunk_index', 'doc_id', 'score'])
        >>> hit.id == hit.metadata["doc_id"] == ids[1]
        True
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    index: M3Index
    """The encoder + Qdrant collection searched (and written by :meth:`add_documents`)."""
    k: int = Field(default=4, ge=1)
    """Number of documents returned."""
    fusion: Fusion | None = None
    """``rrf``, ``dbsf`` or ``m3`` (FlagEmbedding's weighted dense/sparse/ColBERT score);
    ``None``: the index's (a calibrated checkpoint's fusion, see above)."""
    weights: tuple[float, float, float] | None = None
    """``[dense, sparse, colbert]`` of the ``m3`` fusion; ``None``: the index's."""
    rerank: bool | None = None
    """ColBERT rerank; ``None``: the index's (on when the collection holds ColBERT vectors)."""
    candidates: int | None = None
    """Candidates per retriever before fusion and rerank; ``None``: the index's
    (``max(4 * k, 50)`` uncalibrated)."""
    filter: MetadataFilter | None = None
    """Metadata equality (``{"key": value}``, a list value = any of) or a qdrant ``Filter``."""
    score_threshold: float | None = None
    """Drop results scoring below this (on the scale of the last stage's score)."""

    _owns_index: bool = PrivateAttr(default=False)  # opened by from_documents: close() closes it

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, value: Any) -> int:
        return check_k(value)  # as a call's k: True / 2.0 / "3" are not read as a count

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_score_threshold(cls, value: Any) -> float | None:
        return check_score_threshold(value)  # True / "0.5" / NaN are refused, as at search

    @field_validator("fusion", "weights", "rerank", "candidates", mode="before")
    @classmethod
    def _check_setting(cls, value: Any, info: ValidationInfo) -> Any:
        return check_setting(str(info.field_name), value)

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: MetadataFilter | None) -> MetadataFilter | None:
        to_filter(document_filter(value, RETRIEVER_SHOWN))  # raises as a search would
        return value

    @model_validator(mode="after")
    def _check_held_settings(self) -> M3Retriever:
        if self.rerank and Head.COLBERT not in self.index.store.heads:
            raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
        # weights this retriever's own fusion (or the index's default) never uses: every
        # search without a call's own fusion would raise, so refuse them here, as the search
        # would (a call choosing rrf / dbsf over held m3 weights leaves them out instead)
        self.index.search_settings(fusion=self.fusion, weights=self.weights, rerank=self.rerank)
        return self

    # -- retrieval ----------------------------------------------------------------------------
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: MetadataFilter | _NotGiven | None = _NOT_GIVEN,
        score_threshold: float | _NotGiven | None = _NOT_GIVEN,
        **settings: Any,
    ) -> list[Document]:
        args = self._search_args(k, filter, score_threshold, settings)
        hits = self.index.search(check_query(query), **args)
        return [_document(h) for h in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: MetadataFilter | _NotGiven | None = _NOT_GIVEN,
        score_threshold: float | _NotGiven | None = _NOT_GIVEN,
        **settings: Any,
    ) -> list[Document]:
        args = self._search_args(k, filter, score_threshold, settings)
        hits = await self.index.asearch(check_query(query), **args)
        return [_document(h) for h in hits]

    def _search_args(
        self,
        k: int | None,
        filter: MetadataFilter | _NotGiven | None,
        score_threshold: float | _NotGiven | None,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """``index.search`` arguments: a call's values, else this retriever's defaults.

        ``filter`` / ``score_threshold``: :data:`_NOT_GIVEN` (left out of the call) is the
        retriever's; a given ``None`` is none. ``k`` and ``settings`` (a call's ``fusion``,
        ``weights``, ``rerank``, ``candidates``, checked by the index; anything else is an
        error): ``None`` is the retriever's.
        """
        unknown = set(settings) - SETTINGS_ARGS
        if unknown:
            raise TypeError(f"unknown search argument(s) {sorted(unknown)}")
        defaults = {name: getattr(self, name) for name in SETTINGS_ARGS}
        return {
            **self.index.layered_settings(settings, defaults),
            "k": check_k(self.k if k is None else k),
            "filter": document_filter(
                self.filter if filter is _NOT_GIVEN else filter, RETRIEVER_SHOWN
            ),
            "score_threshold": self.score_threshold
            if score_threshold is _NOT_GIVEN
            else score_threshold,
        }

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        embedding: M3Encoder | EncoderModel,
        *,
        ids: Sequence[str] | None = None,
        location: str | os.PathLike[str] | None = None,
        collection: str | None = None,
        collection_name: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        connection: ConnectionSettings | None = None,
        cluster: ClusterSettings | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        k: int = 4,
        fusion: Fusion | str | None = None,
        filter: MetadataFilter | None = None,
        score_threshold: float | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
        force_recreate: bool = False,
    ) -> M3Retriever:
        """Open (or create) a collection, add ``documents`` and return a retriever over it.

        Args:
            documents: The documents to add.
            embedding: A loaded :class:`~m3kit.M3Encoder`, or :class:`~langchain_m3.M3Embeddings`
                / :class:`~langchain_m3.M3SparseEmbeddings` (their encoder is used; a
                ``sparse_top_k`` / ``sparse_min_weight`` of the sparse embeddings is the
                index's sparse cut, applied to every stored chunk and every query and recorded
                with the collection, see :mod:`m3kit.store.sparse_cut`).
            ids: Document ids (default: each document's ``id``, else a content hash).
            location: ``None`` / ``":memory:"`` (in memory) or a folder to persist in.
            collection: Collection name (default ``"m3kit"``).
            collection_name: The same under langchain-qdrant's name; given with
                ``collection``, the two must agree.
            url: Qdrant server URL instead of ``location``.
            api_key: Server API key (default ``$QDRANT_API_KEY``).
            backend: ``"edge"`` (embedded Rust engine) or ``"client"`` (qdrant-client).
            connection: With ``url`` only: request timeout and the server's request size
                limit (:class:`~m3kit.store.ConnectionSettings`).
            cluster: With ``url`` only: shards, replication, on-disk storage and quantisation
                of a new collection (checked against an existing one), and points per write
                request and requests in flight (:class:`~m3kit.store.ClusterSettings`).
            chunking: See :meth:`add_documents`.
            late_chunking: See :meth:`add_documents`.
            k: Default number of results.
            fusion: Default fusion (``None``: the index's, a calibrated checkpoint's fusion
                when it has one).
            filter: Default metadata filter.
            score_threshold: Default score threshold.
            weights: Default ``[dense, sparse, colbert]`` of the ``m3`` fusion.
            rerank: Default ColBERT rerank.
            candidates: Default candidates per retriever before fusion and rerank.
            force_recreate: Delete the collection first (langchain-qdrant's option):
                :func:`~m3kit.store.drop_collection`.

        Raises:
            ValueError: ``embedding``'s sparse cut differs from the one the collection's
                chunks were stored with (the message names both).
        """
        documents = list(documents)  # (read twice with force_recreate: rehearsed, then added)
        if ids is not None:
            check_ids_length(documents, ids)  # before the open: a refused call creates nothing

        def build(index: M3Index) -> M3Retriever:
            retriever = cls(
                index=index,
                k=k,
                fusion=check_setting("fusion", fusion),
                filter=filter,
                score_threshold=score_threshold,
                weights=check_setting("weights", weights),
                rerank=rerank,
                candidates=candidates,
            )
            retriever.add_documents(
                documents, ids=ids, chunking=chunking, late_chunking=late_chunking
            )
            return retriever

        index = open_index(
            embedding,
            location,
            collection=collection_named(collection, collection_name),
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            cluster=cluster,
            force_recreate=force_recreate,
            rehearsal=build,
        )
        try:
            retriever = build(index)
        except BaseException:
            index.close()
            raise
        retriever._owns_index = True
        return retriever

    def close(self) -> None:
        """Close the index this retriever opened (:meth:`from_documents`, :meth:`from_texts`:
        its files, locks, connections); an index given as ``index=`` is left open for whoever
        opened it. ``with M3Retriever.from_texts(...) as retriever:`` closes it at the end."""
        if self._owns_index:
            self.index.close()

    def __enter__(self) -> M3Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        embedding: M3Encoder | EncoderModel,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: Sequence[str] | None = None,
        location: str | os.PathLike[str] | None = None,
        collection: str | None = None,
        collection_name: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        connection: ConnectionSettings | None = None,
        cluster: ClusterSettings | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        k: int = 4,
        fusion: Fusion | str | None = None,
        filter: MetadataFilter | None = None,
        score_threshold: float | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
        force_recreate: bool = False,
    ) -> M3Retriever:
        """:meth:`from_documents` for plain texts (and optional metadata dicts)."""
        return cls.from_documents(
            documents_of(texts, metadatas),
            embedding,
            ids=ids,
            location=location,
            collection=collection,
            collection_name=collection_name,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            cluster=cluster,
            chunking=chunking,
            late_chunking=late_chunking,
            k=k,
            fusion=fusion,
            filter=filter,
            score_threshold=score_threshold,
            weights=weights,
            rerank=rerank,
            candidates=candidates,
            force_recreate=force_recreate,
        )


def _document(hit: Hit) -> Document:
    """A hit as a ``Document`` whose ``id`` is its document's id, as ``add_documents``
    returns and ``delete`` takes (and as ``M3VectorStore`` gives); the chunks of one
    document share it and differ by ``metadata["chunk_index"]``."""
    meta = {
        **hit.metadata,
        "score": hit.score,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
    }
    return Document(id=hit.doc_id, page_content=hit.text, metadata=meta)
