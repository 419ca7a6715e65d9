"""``M3QdrantVectorStore``: langchain-qdrant's own store, keeping late-chunked vectors.

``langchain_qdrant.QdrantVectorStore`` builds every point's vectors by calling its
embeddings on the document texts: texts only, no ``Document``. A chunk from
:class:`~langchain_m3.M3LateChunkingSplitter` already carries its late-chunked dense and
sparse vectors (pooled from its whole document); re-encoding its text alone silently replaces
them with context-free ones, while the chunk keeps its ``m3_late_chunk`` marker.

:class:`M3QdrantVectorStore` is that store with one change: when it builds the points, a
late-chunked chunk gets the vectors it carries (checked as :class:`~langchain_m3.M3VectorStore`
checks them: same model, text unchanged, vectors still in memory), and only the other
documents go through the embeddings. Everything else (payload, ids, retrieval modes, search,
``from_documents`` / ``from_existing_collection``) is ``QdrantVectorStore``'s own, except
with :attr:`M3QdrantVectorStore.parent_id_key` set: then a write replaces the children of
each parent it names (for ``ParentDocumentRetriever``, whose re-added parent otherwise gets
its children stored again next to the old ones), and MMR, which takes ``lambda_mult`` as
LangChain means it (1: by similarity alone; langchain-qdrant 1.1.0 reverses it:
:mod:`langchain_m3._qdrant_mmr`), and relevance scores, refused in sparse and hybrid mode.

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from langchain_qdrant import RetrievalMode
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import SAMPLE_TEXTS, build_tiny_m3_checkpoint
    >>> from langchain_m3 import M3Embeddings, M3LateChunkingSplitter, M3SparseEmbeddings
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> splitter = M3LateChunkingSplitter.from_encoder(enc, chunk_size=12)
    >>> chunks = splitter.split_documents([Document(" ".join(SAMPLE_TEXTS[:4]))])
    >>> store = M3QdrantVectorStore.from_documents(
    ...     chunks,
    ...     embedding=M3Embeddings.from_encoder(enc),
    ...     sparse_embedding=M3SparseEmbeddings.from_encoder(enc),
    ...     retrieval_mode=RetrievalMode.HYBRID,
    ...     location=":memory:",
    ...     collection_name="late",
    ... )
    >>> len(store.similarity_search(SAMPLE_TEXTS[1], k=2))
    2
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.documents import Document

from langchain_m3._parents import check_key, fill_ids, parent_ids, parent_locks, parent_path
from langchain_m3._qdrant_parents import (
    child_point_ids,
    client_write_lock,
    delete_stale_children,
)
from langchain_m3._qdrant_record import model_identities
from langchain_m3.splitter import refuse_lost_markers
from m3kit.chunk_spans import is_blank
from m3kit.errors import missing_extra
from m3kit.store.cancelling import holding, in_worker
from m3kit.store.search_settings import SearchSettings, check_score_threshold
from m3kit.store.stock_record import (
    Recheck,
    check_models,
    refuse_changed,
)

try:
    from langchain_qdrant import RetrievalMode

    from langchain_m3._qdrant_constructors import ParentKeyConstructors
    from langchain_m3._qdrant_filter import QdrantFilterCheck, check_filter
    from langchain_m3._qdrant_mmr import QdrantMmr
    from langchain_m3._qdrant_relevance import QdrantRelevance
    from langchain_m3._qdrant_vectors import CarriedVectors
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-qdrant", "langchain", e) from e

__all__ = ["M3QdrantVectorStore"]

logger = logging.getLogger(__name__)


class M3QdrantVectorStore(
    ParentKeyConstructors, CarriedVectors, QdrantMmr, QdrantFilterCheck, QdrantRelevance
):
    """``langchain_qdrant.QdrantVectorStore`` that stores late-chunked chunks with their own
    vectors.

    Takes every ``QdrantVectorStore`` argument. A chunk ``Document`` from
    :class:`~langchain_m3.M3LateChunkingSplitter` needs the store's embeddings to be
    :class:`~langchain_m3.M3Embeddings` (and, in hybrid or sparse mode,
    :class:`~langchain_m3.M3SparseEmbeddings`) of the model that split it; its sparse vector
    is cut with the sparse embeddings' ``sparse_top_k`` / ``sparse_min_weight``, as theirs are.
    Other documents are encoded by the embeddings, as in ``QdrantVectorStore``.

    Children of a parent (``ParentDocumentRetriever``): langchain-qdrant gives every point
    written without an id a random one, so ``retriever.add_documents(docs, ids=[...])`` of a
    parent already stored adds its children again next to the old ones (duplicated hits, and
    stale ones when its text changed). Set :attr:`parent_id_key` to the retriever's
    ``id_key`` (``store.parent_id_key = "doc_id"``, or ``parent_id_key="doc_id"`` in one
    ``add_documents`` call, which the retriever's ``add_documents`` passes on) and a write
    carries all the children of each parent id it names: a child written without an id gets
    one from its parent id and its place among that parent's children in the write (re-adding
    unchanged content rewrites the same points), and the parent's other points are deleted
    (its children of before, however many); two such writes of one parent through one client
    take turns (writes of other parents encode and write at once). A write that fails (or is
    cancelled) deletes, before raising, the other points of each parent it wrote a child of,
    so a parent holds one version of its children: the old ones whole (none written), or the
    new ones written before the failure.
    Documents without the key are written as ``QdrantVectorStore`` writes them. It is off by
    default: documents that carry a parent id but are added in several calls (chunks of one
    source added in batches, or ``MultiVectorRetriever`` summaries and chunks of one parent)
    would keep only the last.

    Attributes:
        parent_id_key: Metadata key of the parent id whose children a write replaces
            (``None``, the default: no replacing, langchain-qdrant's writes).

    Raises (when adding):
        ValueError: A chunk lost its vectors, was edited after splitting, lacks a head the
            store keeps, or came from another model than the store's embeddings; with
            ``parent_id_key`` set, a parent id is not a string or an integer.

    Relevance scores (``similarity_search_with_relevance_scores``, the
    ``similarity_score_threshold`` retriever) exist in dense mode only: a hybrid score is a rank
    fusion, a sparse one a dot product of no fixed scale (:mod:`langchain_m3._qdrant_relevance`);
    ``as_retriever`` refuses that retriever in those modes where it is built.

    Raises (when searching):
        ValueError: An empty or whitespace-only query in sparse or hybrid mode; relevance
            scores asked in sparse or hybrid mode (use ``similarity_search_with_score``).
        EncoderChangedError: The embeddings' encoder changed in memory since the store was
            built (checked before a query text is encoded).
    """

    parent_id_key: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``QdrantVectorStore(...)``; embeddings of another model than the one the collection
        records are refused (:mod:`m3kit.store.stock_record`).

        Raises:
            FingerprintMismatchError: The collection records another model's vectors.
        """
        super().__init__(*args, **kwargs)
        # both embeddings', for a change in memory whatever the mode is set to later
        self._built_identities = model_identities(self._embeddings, self._sparse_embeddings)
        check_models(self.client, self.collection_name, self._model_identities())
        self._recheck = Recheck()

    def _before_query_text(self) -> None:
        now = model_identities(self._embeddings, self._sparse_embeddings)
        refuse_changed(self._built_identities, now)
        if self._recheck.due():  # an alias moved, the collection re-encoded: stock_record
            check_models(self.client, self.collection_name, self._model_identities())
            self._recheck.done()

    def add_texts(  # type: ignore[override]  # as QdrantVectorStore.add_texts
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        ids: Sequence[str | int] | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> list[str | int]:
        """``QdrantVectorStore.add_texts``; with a parent id key (``parent_id_key=`` here,
        else :attr:`parent_id_key`) the write replaces the children of each parent it names.

        Raises:
            TypeError: The parent id key is not a string.
            ValueError: ``ids`` has another length than ``texts`` (``QdrantVectorStore``
                drops the texts past the last id, silently); a parent id is not a string or
                an integer, or the key cannot be addressed in a payload filter.
        """
        key = kwargs.pop("parent_id_key", self.parent_id_key)
        all_texts = list(texts)
        ids = None if ids is None else list(ids)
        if ids is not None and len(ids) != len(all_texts):  # before anything is written
            raise ValueError(f"{len(all_texts)} texts but {len(ids)} ids")
        if key is None:
            return super().add_texts(all_texts, metadatas, ids, batch_size, **kwargs)
        check_key(key)
        parents = parent_ids(metadatas, key, len(all_texts))
        if all(parent is None for parent in parents):
            return super().add_texts(all_texts, metadatas, ids, batch_size, **kwargs)
        point_ids = fill_ids(ids, child_point_ids(key, parents))
        field = parent_path(self.metadata_payload_key, key)
        # the write and its deletes are one step for its parents: another write of the same
        # parents between them would lose its children, or delete some of these
        with parent_locks(self.client).hold(parents):
            written: list[str | int] = []
            try:
                self._upsert(all_texts, metadatas, point_ids, batch_size, written, **kwargs)
            except BaseException:  # a parent with children written keeps those only
                done = len(written)  # the first texts' points, upserted in order
                try:
                    with client_write_lock(self.client):
                        delete_stale_children(
                            self.client, self.collection_name, field, parents[:done], written
                        )
                except Exception:
                    logger.exception("a write failed, and so did the clean-up after it")
                raise
            with client_write_lock(self.client):
                delete_stale_children(self.client, self.collection_name, field, parents, point_ids)
        return written

    def _upsert(
        self,
        texts: list[str],
        metadatas: list[dict[Any, Any]] | None,
        ids: Sequence[str | int],
        batch_size: int,
        written: list[str | int],
        **kwargs: Any,
    ) -> None:
        """``QdrantVectorStore.add_texts``' loop (langchain-qdrant 1.x), each upsert holding
        :func:`~langchain_m3._qdrant_parents.client_write_lock` (each batch is encoded
        outside it, so writes of other parents encode meanwhile); the ids of each batch
        upserted are added to ``written`` (so a caller knows them after a failure)."""
        for batch_ids, points in self._generate_batches(texts, metadatas, ids, batch_size):
            with holding(client_write_lock(self.client)):  # cancelled while it waited: not written
                self.client.upsert(collection_name=self.collection_name, points=points, **kwargs)
            written.extend(batch_ids)

    async def aadd_texts(  # type: ignore[override]  # as add_texts
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        ids: Sequence[str | int] | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> list[str | int]:
        """:meth:`add_texts` in a worker thread (``aadd_documents`` ends here too).

        Cancelled (``task.cancel()``, an ``asyncio.wait_for`` timeout), it stops before the
        next batch it would write and raises only once stopped, so nothing more is written
        after: the batches written before stay, and the same call again writes the rest
        (:mod:`m3kit.store.cancelling`; langchain-qdrant's thread went on writing).
        """
        return await in_worker(self.add_texts, texts, metadatas, ids, batch_size, **kwargs)

    async def adelete(  # type: ignore[override]  # as QdrantVectorStore.delete
        self, ids: list[str | int] | None = None, **kwargs: Any
    ) -> bool | None:
        """``QdrantVectorStore.delete`` in a worker thread; cancelled, it raises only once the
        thread is done (a delete under way is not left to land after)."""
        return await in_worker(self.delete, ids, **kwargs)

    def similarity_search_with_score(
        self, query: str, *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``QdrantVectorStore.similarity_search_with_score`` (which ``similarity_search``,
        the relevance searches and ``as_retriever`` run), refusing a blank query in sparse or
        hybrid mode: it encodes to an empty sparse vector, which matches nothing.

        Raises:
            ValueError: An empty or whitespace-only query in sparse or hybrid mode; a
                ``score_threshold`` that is not a finite number (NaN kept no hit, silently);
                m3kit's ranking arguments (``fusion``, ``weights``, ``rerank``,
                ``candidates``: qdrant-client refused them with a bare ``AssertionError``).
            TypeError: ``filter`` is not a ``qdrant_client.models.Filter`` (a ``{key:
                value}`` mapping failed deep in langchain-qdrant with an ``AttributeError``).
        """
        check_filter(args[1] if len(args) > 1 else kwargs.get("filter"))
        ranking = sorted(set(kwargs) & set(SearchSettings.NAMES))
        if ranking:
            raise ValueError(
                f"M3QdrantVectorStore searches as langchain-qdrant's QdrantVectorStore does: "
                f"{ranking} are m3kit ranking arguments it does not take (its fusion is "
                "hybrid_fusion=); use langchain_m3.M3VectorStore or M3Retriever for them"
            )
        if "score_threshold" in kwargs:
            check_score_threshold(kwargs["score_threshold"])
        self._before_query_text()
        mode = self.retrieval_mode
        if mode is not RetrievalMode.DENSE and isinstance(query, str) and is_blank(query):
            raise ValueError(
                f"{mode.value} mode encodes the query with M3's sparse head: the query is "
                f"empty ({query!r}), which gives an empty sparse vector (it matches nothing); "
                "give a query text"
            )
        return super().similarity_search_with_score(query, *args, **kwargs)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """``QdrantVectorStore.add_documents``, refusing a splitter chunk that lost its marker.

        Raises:
            ValueError: A chunk ``Document`` the splitter returned no longer has its
                ``m3_late_chunk`` marker (stored as a plain text it would be encoded alone).
        """
        refuse_lost_markers(documents)
        return super().add_documents(documents, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Async :meth:`add_documents`."""
        refuse_lost_markers(documents)
        return await super().aadd_documents(documents, **kwargs)
