"""How :class:`~langchain_m3.M3Retriever` is built and closed: ``from_documents``,
``from_texts``, ``close`` and the ``with`` block.

Split from :mod:`langchain_m3.retriever` (the class-size guide): :class:`RetrieverConstruction`
is a base class of ``M3Retriever`` (a plain mixin, no pydantic fields, as
:class:`~langchain_m3._retriever_writes.RetrieverWrites`, its own base).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from qdrant_client import models
from typing_extensions import Self

from langchain_m3._documents import check_ids_length, documents_of, open_index
from langchain_m3._retriever_writes import RetrieverWrites
from langchain_m3._search import check_setting
from m3kit.encoder import M3Encoder
from m3kit.store import Backend, ClusterSettings, ConnectionSettings, Fusion, M3Index
from m3kit.store.opening import collection_named

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from langchain_m3._encoder_model import EncoderModel
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["RetrieverConstruction"]

MetadataFilter = dict[str, Any] | models.Filter


class RetrieverConstruction(RetrieverWrites):
    """The constructors and ``close`` of :class:`~langchain_m3.M3Retriever` (its base;
    ``index`` is its field, ``_owns_index`` its private attribute).

    Declares no annotations at run time, so pydantic sees no field here.
    """

    if TYPE_CHECKING:
        _owns_index: bool

        def __init__(self, **data: Any) -> None: ...

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
    ) -> Self:
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

        def build(index: M3Index) -> RetrieverConstruction:
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
            retriever = cast(Self, build(index))  # (cls's instance: a subclass's too)
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

    def __enter__(self) -> Self:
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
    ) -> Self:
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
