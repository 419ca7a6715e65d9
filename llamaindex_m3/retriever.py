"""``M3Retriever``: a LlamaIndex retriever on the m3kit Qdrant layer (dense + sparse + ColBERT).

One query is encoded once with all three M3 heads; Qdrant gathers dense and sparse candidates,
fuses them (RRF, DBSF or M3's weighted sum) and ColBERT MaxSim re-scores them. The collection
layout is the one :class:`langchain_m3.M3Retriever` writes, so either framework can read what
the other indexed.

Example:
    >>> import tempfile
    >>> from llama_index.core import Document
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> docs = [Document(text="Berlin is the capital of Germany.", metadata={"lang": "en"}),
    ...         Document(text="Oxygen has the atomic number 8.", metadata={"lang": "en"})]
    >>> retriever = M3Retriever.from_documents(docs, enc, similarity_top_k=1)
    >>> [n.node.get_content() for n in retriever.retrieve("Oxygen has the atomic number 8.")]
    ['Oxygen has the atomic number 8.']
    >>> retriever.close()
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from llamaindex_m3.embedding_origins import check_origin
from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding
from llamaindex_m3.events import embedding_event
from llamaindex_m3.filters import to_store_filter
from llamaindex_m3.node_classes import rebuild_node
from llamaindex_m3.node_records import CHUNK_INDEX_KEY, DOC_ID_KEY, NODE_FIELDS
from llamaindex_m3.retriever_writes import RetrieverWrites
from llamaindex_m3.sourceless import sourceless_chunk
from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.outputs import Head
from m3kit.store import (
    Backend,
    ClusterSettings,
    ConnectionSettings,
    Fusion,
    Hit,
    M3Index,
    SearchSettings,
)
from m3kit.store.index_search import dense_query
from m3kit.store.opening import collection_named
from m3kit.store.search_settings import check_count

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
    from llama_index.core.schema import (
        Document,
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
    )
    from llama_index.core.vector_stores.types import MetadataFilters
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex", e) from e

if TYPE_CHECKING:
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["M3Retriever", "check_settings", "hit_to_node"]


class M3Retriever(RetrieverWrites, BaseRetriever):
    """LlamaIndex ``BaseRetriever`` running M3 hybrid search on an :class:`~m3kit.store.M3Index`.

    Results are ``NodeWithScore`` holding a ``TextNode`` (id = the node id it was written
    under, else the Qdrant point id; text; metadata with ``doc_id`` and ``chunk_index`` added;
    ``SOURCE`` relationship = the document) and the score of the last stage (fused score,
    ColBERT MaxSim or M3 sum; the M3 sum is divided by the weights of the heads the
    collection scores with, so on a dense-only collection it is the cosine similarity).
    A query bundle with several ``custom_embedding_strs`` (HyDE) is one search with the mean
    of their query vectors, scored on the same scale (:meth:`~m3kit.store.M3Index.search_mean`).
    A bundle's precomputed ``embedding`` is the dense query (as LlamaIndex's
    ``VectorIndexRetriever`` uses it); the sparse and ColBERT vectors come from its texts.
    Works wherever LlamaIndex takes a retriever (``RetrieverQueryEngine``, fusion retrievers).

    Attributes:
        index: The encoder + store pair (``index.store`` is the Qdrant layer).
        similarity_top_k: Number of nodes returned.
        fusion: ``rrf``, ``dbsf`` or ``m3`` (FlagEmbedding's weighted sum); ``None``: the
            index's (the checkpoint's calibrated fusion when it has one).
        filters: LlamaIndex ``MetadataFilters`` applied to every query.
        score_threshold: Minimum final score.
        rerank: ColBERT rerank (``None``: the index's; on when the collection holds ColBERT
            vectors).
        weights: ``[dense, sparse, colbert]`` of the ``m3`` fusion (``None``: the index's).
        candidates: Candidates per retriever before fusion and rerank (``None``: the index's,
            ``max(4 * k, 50)`` uncalibrated).
    """

    def __init__(
        self,
        index: M3Index,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        fusion: Fusion | str | None = None,
        filters: MetadataFilters | None = None,
        score_threshold: float | None = None,
        rerank: bool | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> None:
        """Wrap an opened :class:`~m3kit.store.M3Index` (see :meth:`open` to open one).

        Raises:
            ValueError: A bad ``similarity_top_k`` (not an int >= 1), ``fusion``, ``weights`` or
                ``candidates``; ``weights`` while the search fuses with ``rrf`` or ``dbsf``
                (given, or the index's default); ``rerank=True`` on a collection without
                ColBERT vectors.
        """
        check_count("similarity_top_k", similarity_top_k)
        settings = check_settings(
            fusion=fusion, weights=weights, rerank=rerank, candidates=candidates
        )
        if rerank and Head.COLBERT not in index.store.heads:
            raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
        # what each search resolves: weights the fusion never uses are refused now, as
        # M3VectorStore refuses them, not at the first query
        index.search_settings(fusion=fusion, weights=weights, rerank=rerank)
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.fusion: Fusion | None = settings["fusion"]
        self.filters = filters
        self.score_threshold = score_threshold
        self.rerank: bool | None = settings["rerank"]
        self.weights: tuple[float, float, float] | None = settings["weights"]
        self.candidates: int | None = settings["candidates"]
        to_store_filter(filters)  # refuse unsupported filters now, not at the first query
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        # an index given here is its opener's (shared, e.g., with an M3VectorStore.from_index):
        # close() leaves it open; one this class opened (open, from_documents) it closes
        self._owns_index = False

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        model: M3Encoder | M3Embedding,
        *,
        location: str | os.PathLike[str] | None = None,
        collection: str | None = None,
        collection_name: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        connection: ConnectionSettings | None = None,
        cluster: ClusterSettings | None = None,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        fusion: Fusion | str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
        create: bool = True,
    ) -> M3Retriever:
        """Open (or create) a collection shaped for the model and return a retriever on it.

        Args:
            model: A loaded :class:`~m3kit.M3Encoder` or an :class:`M3Embedding` (its encoder).
            location: ``None`` / ``":memory:"`` or a folder to persist in.
            collection: Collection name (default ``"m3kit"``).
            collection_name: The same under ``M3VectorStore``'s (and LlamaIndex's
                ``QdrantVectorStore``'s) name; given with ``collection``, the two must agree.
            url: Qdrant server URL.
            api_key: Server API key (default: ``QDRANT_API_KEY``).
            backend: ``"edge"`` (embedded engine) or ``"client"`` (qdrant-client).
            connection: With ``url`` only: request timeout and the server's request size
                limit (:class:`~m3kit.store.ConnectionSettings`).
            cluster: With ``url`` only: shards, replication, on-disk storage and quantisation
                of a new collection (checked against an existing one), and points per write
                request and requests in flight (:class:`~m3kit.store.ClusterSettings`).
            similarity_top_k: Number of nodes returned.
            fusion: ``rrf``, ``dbsf`` or ``m3`` (``None``: the index's, the checkpoint's
                calibrated fusion when it has one).
            weights: ``[dense, sparse, colbert]`` of the ``m3`` fusion.
            rerank: ColBERT rerank.
            candidates: Candidates per retriever before fusion and rerank.
            create: Create the collection if it does not exist (``False``: a search service
                opening an existing one; a misspelt name is refused, not created empty).

        Raises:
            CollectionNotFoundError: ``create=False`` and the collection does not exist.
            SchemaMismatchError: The collection exists with other vectors.
            TypeError: ``model`` is neither (an :class:`M3SparseEmbedding` included: for a
                sparse cut, wrap ``M3Index.open(encoder, ..., sparse_top_k=...)``).
            ValueError: A bad ``fusion``, ``weights`` or ``candidates``; an
                :class:`M3Embedding` with a ``text_instruction`` (this retriever encodes
                documents on their bare text, so the prefix would be left out silently).
        """
        encoder = model_encoder(model, "M3Retriever.open", "M3Retriever(index)")
        _refuse_text_instruction(model)
        index = M3Index.open(
            encoder,
            location,
            collection=collection_named(collection, collection_name),
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            cluster=cluster,
            create=create,
        )
        try:
            retriever = cls(
                index,
                similarity_top_k=similarity_top_k,
                fusion=fusion,
                weights=weights,
                rerank=rerank,
                candidates=candidates,
            )
        except BaseException:
            index.close()
            raise
        retriever._owns_index = True
        return retriever

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        model: M3Encoder | M3Embedding,
        *,
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
        show_progress: bool | None = None,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        fusion: Fusion | str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
    ) -> M3Retriever:
        """:meth:`open` a collection, :meth:`add_documents` to it and return the retriever."""
        retriever = cls.open(
            model,
            location=location,
            collection=collection,
            collection_name=collection_name,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            cluster=cluster,
            similarity_top_k=similarity_top_k,
            fusion=fusion,
            weights=weights,
            rerank=rerank,
            candidates=candidates,
        )
        try:
            retriever.add_documents(
                documents,
                chunking=chunking,
                late_chunking=late_chunking,
                show_progress=show_progress,
            )
        except BaseException:
            retriever.close()
            raise
        return retriever

    # -- retrieval --------------------------------------------------------------------------
    def _search_kwargs(self) -> dict[str, Any]:
        return {
            "k": self.similarity_top_k,
            "fusion": self.fusion,
            "filter": to_store_filter(self.filters),
            "score_threshold": self.score_threshold,
            "rerank": self.rerank,
            "weights": self.weights,
            "candidates": self.candidates,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        texts = _query_texts(query_bundle)
        dense = query_bundle.embedding
        if dense is not None:  # precomputed, as LlamaIndex's VectorIndexRetriever uses it
            check_origin(dense, self.index.fingerprint, "QueryBundle.embedding")
            dense = dense_query(dense, self.index.store.schema.dense_dim, "QueryBundle.embedding")
        # the query texts are encoded inside the search (for the dense head unless given)
        with embedding_event(self.callback_manager, self._encoder_payload()) as report:
            hits = self.index.search_mean(texts, dense=dense, **self._search_kwargs())
            report(texts)
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def close(self) -> None:
        """Close the index this retriever opened (:meth:`open`, :meth:`from_documents`: its
        files, locks, connections). An index given to ``M3Retriever(index)`` is left open for
        whoever opened it (an ``M3VectorStore.from_index`` sharing it went on searching a
        closed store)."""
        if self._owns_index:
            self.index.close()

    def __enter__(self) -> M3Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _query_texts(query_bundle: QueryBundle) -> list[str]:
    """What to search for: ``custom_embedding_strs`` when a transform set them, else the query.

    (HyDE and other query transforms put the texts to embed there; several are searched as
    one query, their mean: :meth:`~m3kit.store.M3Index.search_mean`.)
    """
    custom = query_bundle.custom_embedding_strs
    return list(custom) if custom else [query_bundle.query_str]


def check_settings(
    *,
    fusion: Fusion | str | None = None,
    weights: Sequence[float] | None = None,
    rerank: bool | None = None,
    candidates: int | None = None,
) -> dict[str, Any]:
    """Search settings as :class:`~m3kit.store.SearchSettings` checks and normalises them.

    ``None`` stays ``None`` (the index's default).

    Raises:
        ValueError: A value ``SearchSettings`` refuses (its message says why).
    """
    given: dict[str, Any] = {
        "fusion": fusion,
        "weights": weights,
        "rerank": rerank,
        "candidates": candidates,
    }
    checked = SearchSettings().merged(
        fusion=fusion, weights=weights, rerank=rerank, candidates=candidates
    )
    return {name: None if v is None else getattr(checked, name) for name, v in given.items()}


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A store :class:`~m3kit.store.Hit` as a LlamaIndex ``NodeWithScore``.

    A node written by LlamaIndex comes back as it was written (its id; its class, e.g.
    ``IndexNode`` or ``ImageNode`` with its image:
    :func:`~llamaindex_m3.node_classes.rebuild_node`; relationships; the metadata keys hidden
    from the embedding model and the LLM; templates:
    :data:`~llamaindex_m3.node_records.NODE_FIELDS`); other chunks as a ``TextNode`` whose id is
    the point id. ``doc_id`` and ``chunk_index`` are added to the metadata where it has no key
    of that name (a user's own key is returned as stored), left out of what the embedding model
    and the LLM see, and out of what is stored when the node is written again. The character
    offsets are the stored ones; the source relationship names the document without a hash, so
    writing the node again adds it to the stored version and never replaces the document's other
    chunks. A node written without a source document comes back without one and without
    ``doc_id`` (``ref_doc_id`` ``None``, as from LlamaIndex's stores;
    :mod:`~llamaindex_m3.sourceless`).
    """
    kept = {k: v for k, v in hit.extra.items() if k in NODE_FIELDS and k != "class_name"}
    sourceless = sourceless_chunk(hit.chunk_id, hit.extra)  # no document: no doc_id
    placement = {
        k: v
        for k, v in ((DOC_ID_KEY, hit.doc_id), (CHUNK_INDEX_KEY, hit.chunk_index))
        if k not in hit.metadata  # a user's own key of that name wins
        and not (sourceless and k == DOC_ID_KEY)
    }
    node = rebuild_node(
        hit.extra.get("class_name"),
        {**kept, "id_": hit.chunk_id or hit.id, "metadata": {**placement, **hit.metadata}},
        hit.text,
        hit.start,
        hit.end,
    )
    for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        keys.extend(k for k in placement if k not in keys)
    if sourceless:
        return NodeWithScore(node=node, score=hit.score)
    source = node.relationships.get(NodeRelationship.SOURCE)
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
        node_id=hit.doc_id,
        node_type=getattr(source, "node_type", None),
        metadata=getattr(source, "metadata", None) or {},
    )
    return NodeWithScore(node=node, score=hit.score)


def model_encoder(model: object, who: str, wrap: str) -> M3Encoder:
    """The encoder of ``model``: an :class:`M3Embedding`'s, else ``model`` itself (an
    :class:`~m3kit.M3Encoder`, or an object standing in for one).

    Args:
        model: What the user gave.
        who: The refusing call, for the message.
        wrap: How that class wraps an opened index (``M3Retriever(index)``), for the message.

    Raises:
        TypeError: ``model`` is an :class:`M3SparseEmbedding`; the message says how to give
            the index its sparse cut instead.
    """
    if isinstance(model, M3Embedding):
        return model.encoder
    if isinstance(model, M3SparseEmbedding):
        raise TypeError(
            f"{who} takes an M3Encoder or an M3Embedding, got M3SparseEmbedding (it computes "
            "sparse vectors only; the index encodes every head with the encoder itself). For "
            "a sparse cut, open the index with it, M3Index.open(encoder, ..., "
            f"sparse_top_k=..., sparse_min_weight=...), and pass it: {wrap}"
        )
    # anything else is taken as an encoder, as before (M3Index checks what it needs)
    return cast("M3Encoder", model)


def _refuse_text_instruction(model: M3Encoder | M3Embedding) -> None:
    """Refuse an :class:`M3Embedding` whose ``text_instruction`` the retriever would drop.

    Raises:
        ValueError: ``model`` is an ``M3Embedding`` with a ``text_instruction``.
    """
    prefix = model.text_instruction if isinstance(model, M3Embedding) else None
    if prefix:
        raise ValueError(
            f"this M3Embedding has text_instruction {prefix!r}, but M3Retriever encodes "
            "documents on their bare text (it takes only the embedding's encoder), so their "
            "vectors would be stored without that prefix; use M3VectorStore(embedding) with a "
            "VectorStoreIndex, which prefixes it, or pass embedding.encoder to store the "
            "documents without it"
        )
