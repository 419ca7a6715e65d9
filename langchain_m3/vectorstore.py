"""``M3VectorStore``: a LangChain ``VectorStore`` on the m3kit Qdrant layer (BGE-M3 hybrid search).

A thin class over :class:`~m3kit.store.M3Index`, which owns ids, versions and writes; this
class converts ``Document``\\ s, search arguments and scores. The collection layout is the one
:class:`~langchain_m3.M3Retriever`, ``llamaindex_m3`` and ``m3kit index`` use.

Ids: a LangChain id names a stored *document* (what ``add_*`` return and ``delete`` takes).
A document is stored as one chunk, unless it was added with ``chunking`` or ``late_chunking``:
then as several chunks that all carry its id, and every ``Document`` this store returns for
one of them has ``chunk_index``, ``start_index`` and ``end_index`` (its place in the document)
added to its metadata. ``get_by_ids`` returns every stored chunk of the given documents, in
chunk order. Chunk documents from :class:`~langchain_m3.M3LateChunkingSplitter` are documents
of their own (one chunk each), stored with the late-chunked vectors they carry.

Search: ``similarity_search`` encodes the query with every head the collection holds: dense
and sparse candidates, fused (``fusion``: ``rrf``, ``dbsf`` or ``m3``), re-scored by ColBERT
MaxSim when the collection has ColBERT vectors (``rerank``). ``similarity_search_by_vector``
is a dense search. Search arguments (also in ``as_retriever(search_kwargs=...)``): ``k``,
``filter`` (a metadata mapping, a list value = any of, or a qdrant ``Filter``), ``fusion``,
``weights`` (``[dense, sparse, colbert]`` of ``m3``), ``rerank``, ``candidates`` (per retriever
before fusion) and ``score_threshold``. Ranking arguments left unset (here and in the store's
defaults) are the index's (:meth:`~m3kit.store.M3Index.search_settings`): a calibrated
checkpoint's fusion (``m3kit_search.json``) when it has one. Relevance scores
(``similarity_search_with_relevance_scores``, ``search_type="similarity_score_threshold"``)
are a fixed, strictly increasing map of the final score into ``[0, 1]``: ``(1 + s) / 2`` for
a cosine or MaxSim (langchain-qdrant's), and for ``m3`` with its unbounded sparse term
``(1 + s) / 2`` up to 0, ``1 - 1 / (2 (1 + s))`` above; a rank fusion without rerank has none
(see ``_similarity_search_with_relevance_scores``). Async methods are LangChain's (the sync
method in a worker thread).

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> store = M3VectorStore.from_documents(
    ...     [
    ...         Document("Berlin is the capital of Germany.", id="berlin", metadata={"t": "geo"}),
    ...         Document("Oxygen has atomic number 8.", id="oxygen", metadata={"t": "chem"}),
    ...     ],
    ...     enc,
    ... )
    >>> [d.id for d in store.similarity_search("Oxygen has atomic number 8.", k=1)]
    ['oxygen']
    >>> retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"t": "geo"}})
    >>> [d.id for d in retriever.invoke("capital")]
    ['berlin']
    >>> store.close()
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.outputs import Head
from m3kit.store import Backend, ClusterSettings, ConnectionSettings, Fusion, M3Index
from m3kit.store.opening import collection_named

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-core", "langchain", e) from e

from langchain_m3._documents import (
    check_ids_length,
    documents_of,
    open_index,
)
from langchain_m3._parents import check_key
from langchain_m3._search import ScoreScale, check_setting
from langchain_m3._vectorstore_documents import VectorStoreDocuments
from langchain_m3._vectorstore_search import VectorStoreSearch

if TYPE_CHECKING:
    from langchain_m3._encoder_model import EncoderModel
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["M3VectorStore", "ScoreScale"]

logger = logging.getLogger(__name__)

#: The arguments of :meth:`M3VectorStore.open` that are the store's own (its constructor's).
_STORE_SETTINGS = ("fusion", "rerank", "chunking", "late_chunking", "weights", "candidates")


class M3VectorStore(VectorStoreDocuments, VectorStoreSearch):
    """LangChain vector store over an :class:`~m3kit.store.M3Index` (see the module docstring).

    Build it with :meth:`open`, :meth:`from_documents` / :meth:`from_texts`, or around an
    opened index: ``M3VectorStore(index)``.

    Children of a parent (``ParentDocumentRetriever``, which writes them without ids: each
    gets its content id, so a parent re-added with another text keeps its old children): set
    :attr:`parent_id_key` to the retriever's ``id_key`` (or pass ``parent_id_key=`` to
    ``add_documents``, as the retriever's ``add_documents`` does with its keyword arguments)
    and a write replaces the children of each parent id it carries: a child without an id
    gets one from its parent id and its place in the write, and the parent's other documents
    are deleted after the write (see :mod:`langchain_m3._parents`); after a failed (or
    cancelled) write, a parent it wrote children of keeps those of the new version only, the
    others keep their old ones. Off by default: documents
    carrying one parent id but added over several calls would keep only the last call's.

    Attributes:
        parent_id_key: Metadata key of the parent id whose children a write replaces
            (``None``, the default: no replacing).
    """

    parent_id_key: str | None = None

    def __init__(
        self,
        index: M3Index,
        *,
        fusion: Fusion | str | None = None,
        rerank: bool | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> None:
        """Wrap an opened index.

        Args:
            index: The encoder + collection (closed by :meth:`close`).
            fusion: Default fusion of dense and sparse candidates (``None``: the index's, a
                calibrated checkpoint's when it has one).
            rerank: Default ColBERT rerank (``None``: the index's; on when the collection has
                ColBERT).
            chunking: Default for :meth:`add_documents`: ``True`` (a default
                :class:`~m3kit.chunking.NaiveChunker`) or a configured chunker.
            late_chunking: Default for :meth:`add_documents`: ``True`` (a default
                :class:`~m3kit.late_chunking.LateChunker`) or a configured ``LateChunker``.
            weights: Default ``[dense, sparse, colbert]`` of the ``m3`` fusion (``None``: the
                index's).
            candidates: Default candidates per retriever before fusion and rerank (``None``:
                the index's, ``max(4 * k, 50)`` uncalibrated).

        Raises:
            ValueError: ``rerank=True`` on a collection without ColBERT vectors; bad
                ``fusion``, ``weights`` or ``candidates``; ``weights`` with a ``fusion`` (given,
                or the index's default) that is ``rrf`` or ``dbsf``, which never uses them.
        """
        if not isinstance(index, M3Index):
            raise TypeError(f"index must be an M3Index, got {type(index).__name__}")
        if rerank and Head.COLBERT not in index.store.heads:
            raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
        self._index = index
        self.fusion: Fusion | None = check_setting("fusion", fusion)
        self.rerank: bool | None = check_setting("rerank", rerank)
        self.weights: tuple[float, float, float] | None = check_setting("weights", weights)
        self.candidates: int | None = check_setting("candidates", candidates)
        self.chunking, self.late_chunking = chunking, late_chunking
        self._chunker(chunking, late_chunking)  # a wrong argument fails here, not at an add
        # weights the store's own fusion (or the index's default) never uses would fail every
        # search that does not choose its own fusion: refused here, as the search refuses them
        index.search_settings(fusion=self.fusion, weights=self.weights, rerank=self.rerank)
        self._embeddings: Embeddings | None = None

    @classmethod
    def open(
        cls,
        embedding: M3Encoder | EncoderModel,
        location: str | os.PathLike[str] | None = None,
        *,
        collection: str | None = None,
        collection_name: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        connection: ConnectionSettings | None = None,
        cluster: ClusterSettings | None = None,
        fusion: Fusion | str | None = None,
        rerank: bool | None = None,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
        create: bool = True,
        force_recreate: bool = False,
    ) -> M3VectorStore:
        """Open (or create) a collection for ``embedding``'s model.

        Args:
            embedding: A loaded :class:`~m3kit.M3Encoder`, or an m3kit LangChain class holding
                one (:class:`~langchain_m3.M3Embeddings`, ``M3SparseEmbeddings``,
                ``M3LateChunkingSplitter``). A ``sparse_top_k`` / ``sparse_min_weight`` of
                ``M3SparseEmbeddings`` is the index's sparse cut (every stored chunk and every
                query is cut so; recorded with the collection, see
                :mod:`m3kit.store.sparse_cut`); otherwise the collection's recorded cut is
                used.
            location: ``None`` / ``":memory:"`` (in memory) or a folder to persist in.
            collection: Collection name (default ``"m3kit"``).
            collection_name: The same, under langchain-qdrant's (and LangChain's other
                stores') name, so ``M3VectorStore.from_texts(..., collection_name="docs")``
                works as with them; given with ``collection``, the two must agree.
            url: Qdrant server URL instead of ``location``.
            api_key: Server API key (default ``$QDRANT_API_KEY``).
            backend: ``"edge"`` (embedded engine, default) or ``"client"`` (qdrant-client).
            connection: With ``url`` only: request timeout and the server's request size
                limit (:class:`~m3kit.store.ConnectionSettings`).
            cluster: With ``url`` only: shards, replication, on-disk storage and quantisation
                of a new collection (checked against an existing one), and points per write
                request and requests in flight (:class:`~m3kit.store.ClusterSettings`).
            fusion: Default fusion (``None``: the index's, see :meth:`__init__`).
            rerank: Default ColBERT rerank.
            chunking: Default chunking of added documents.
            late_chunking: Default late chunking of added documents.
            weights: Default ``m3`` weights.
            candidates: Default candidates per retriever.
            create: Create the collection if it does not exist (``False``: a search service
                opening an existing one; a misspelt name is refused, not created empty).
            force_recreate: Delete the collection first, points, schema and m3kit record
                (langchain-qdrant's option; e.g. to index with another model):
                :func:`~m3kit.store.drop_collection`.

        Raises:
            CollectionNotFoundError: ``create=False`` and the collection does not exist.
            ValueError: ``embedding``'s sparse cut differs from the one the collection's
                chunks were stored with (the message names both); ``collection`` and
                ``collection_name`` name different collections.
        """
        args = {name: value for name, value in locals().items() if name != "cls"}
        return cls._open(args, then=None)

    @classmethod
    def _open(
        cls, args: dict[str, Any], then: Callable[[M3VectorStore], object] | None
    ) -> M3VectorStore:
        """:meth:`open` with its arguments ``args`` (all of them, by name), then ``then`` on
        the store (``from_documents``'s writes): with ``force_recreate`` the rehearsal runs
        both, once, before the drop; a ``then`` that raises closes the index."""
        settings = {name: args[name] for name in _STORE_SETTINGS}

        def build(index: M3Index) -> M3VectorStore:
            store = cls(index, **settings)
            if then is not None:
                then(store)
            return store

        index = open_index(
            args["embedding"],
            args["location"],
            collection=collection_named(args["collection"], args["collection_name"]),
            url=args["url"],
            api_key=args["api_key"],
            backend=args["backend"],
            connection=args["connection"],
            cluster=args["cluster"],
            create=args["create"],
            force_recreate=args["force_recreate"],
            rehearsal=build,
        )
        try:
            return build(index)
        except BaseException:
            index.close()
            raise

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M3VectorStore:
        """:meth:`open` a collection and add ``texts`` (keyword arguments: those of
        :meth:`from_documents`)."""
        return cls.from_documents(documents_of(texts, metadatas), embedding, ids=ids, **kwargs)

    @classmethod
    def from_documents(
        cls, documents: list[Document], embedding: Any, **kwargs: Any
    ) -> M3VectorStore:
        """:meth:`open` a collection and add ``documents`` (chunk documents keep their vectors).

        Keyword arguments: ``ids``, ``batch_size`` (as :meth:`add_documents`'s),
        ``parent_id_key`` (sets :attr:`parent_id_key` before the documents are written),
        ``path`` (langchain-qdrant's name of a folder: ``location``) and :meth:`open`'s
        (``location``, ``collection``, ...).

        With ``force_recreate=True`` the store's construction and these writes are rehearsed
        together on an empty in-memory index before the collection is dropped.

        Raises:
            ValueError: ``path`` and ``location`` name different places.
            TypeError: A keyword argument none of the above (``open``'s signature binds them).
        """
        if not isinstance(documents, Document):  # (refused by the write, which names it)
            documents = list(documents)  # a generator, read twice with force_recreate
        ids = kwargs.pop("ids", None)
        if isinstance(documents, list) and isinstance(ids, Sequence) and not isinstance(ids, str):
            check_ids_length(documents, ids)  # before the open: a refused call creates nothing
        batch_size = kwargs.pop("batch_size", None)
        key = kwargs.pop("parent_id_key", None)
        if key is not None:
            check_key(key)  # before the collection is opened
        path = kwargs.pop("path", None)
        if path is not None:  # (None: langchain-qdrant's default, often passed on as it is)
            location = kwargs.get("location")
            if location is not None and os.fspath(location) != os.fspath(path):
                raise ValueError(
                    f"path={path!r} and location={location!r} name two places; give one"
                )
            kwargs["location"] = path

        def fill(store: M3VectorStore) -> None:
            if key is not None:
                store.parent_id_key = key
            store.add_documents(documents, ids=ids, batch_size=batch_size)

        # the arguments _open reads are M3VectorStore.open's (a subclass's own open is not
        # called here: it customises __init__ or _open)
        bound = inspect.signature(M3VectorStore.open).bind(embedding, **kwargs)
        bound.apply_defaults()
        return cls._open(dict(bound.arguments), then=fill)

    @classmethod
    async def afrom_documents(
        cls, documents: list[Document], embedding: Any, **kwargs: Any
    ) -> M3VectorStore:
        """:meth:`from_documents` in a worker thread; cancelled, it writes nothing more once it
        has raised (:func:`~m3kit.store.cancelling.in_worker`), as :meth:`aadd_documents`, and
        the store it had opened by then is closed (no caller holds it).

        (LangChain's default rebuilds the documents from their texts and metadata, which
        loses the vectors splitter chunks carry.)
        """
        from m3kit.store.cancelling import opened_in_worker

        return await opened_in_worker(cls.close, cls.from_documents, documents, embedding, **kwargs)

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M3VectorStore:
        """:meth:`from_texts` in a worker thread, stopped when cancelled as
        :meth:`afrom_documents` is (LangChain's default ran it in a thread that went on
        writing after the cancelled call had raised, and left the store it opened open)."""
        return await cls.afrom_documents(
            documents_of(texts, metadatas), embedding, ids=ids, **kwargs
        )

    @property
    def index(self) -> M3Index:
        """The :class:`~m3kit.store.M3Index` (``.encoder``, ``.store``)."""
        return self._index

    @property
    def embeddings(self) -> Embeddings:
        """The model as a LangChain ``Embeddings`` (:class:`~langchain_m3.M3Embeddings`)."""
        if self._embeddings is None:
            from langchain_m3.embeddings import M3Embeddings

            self._embeddings = M3Embeddings.from_encoder(self._index.encoder)
        return self._embeddings

    def __repr__(self) -> str:
        try:
            search = self.search_settings().describe()
        except ValueError as exc:  # settings a search would refuse: shown, not raised
            search = f"<invalid: {exc}>"
        return f"M3VectorStore(index={self._index!r}, search={search})"

    def close(self) -> None:
        """Close the index (files, locks, connections)."""
        self._index.close()

    def __enter__(self) -> M3VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
