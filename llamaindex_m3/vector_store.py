"""``M3VectorStore``: a LlamaIndex vector store on m3kit's Qdrant layer (dense, sparse, ColBERT).

A thin ``BasePydanticVectorStore`` over :class:`~m3kit.store.M3Index`: the index owns ids,
versions and writes; this class converts nodes, queries and filters. The collection layout is
the one ``m3kit index``, :class:`langchain_m3.M3Retriever` and
:class:`llamaindex_m3.M3Retriever` use, so any of them reads what this store wrote, and back.
How nodes map to stored chunks is described in :mod:`llamaindex_m3.node_writes`.

Query modes: ``default`` is a dense search with the query embedding LlamaIndex computed;
``sparse`` a learned-sparse search on ``query_str``; ``hybrid`` dense + sparse candidates
fused (``fusion``: RRF, DBSF or M3's weighted sum) and, when the collection holds ColBERT
vectors, re-scored by ColBERT MaxSim. Other modes raise ``NotImplementedError``.

Ranking settings (``fusion``, ``weights``, ``rerank``, ``candidates``) left ``None`` are the
index's (:meth:`~m3kit.store.M3Index.search_settings`): the checkpoint's calibrated fusion
(``m3kit_search.json``) when it has one. One query can override them through the retriever's
``vector_store_kwargs`` (``index.as_retriever(vector_store_kwargs={"candidates": 200})``).

Example:
    >>> import tempfile
    >>> from llama_index.core import Document, VectorStoreIndex
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> from llamaindex_m3 import M3Embedding
    >>> embed = M3Embedding.from_encoder(
    ...     M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp())))
    >>> store = M3VectorStore(embed)
    >>> index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    >>> index.insert(Document(text="Oxygen has the atomic number 8.", id_="oxygen"))
    >>> hit = index.as_retriever(vector_store_query_mode="hybrid").retrieve("atomic number")[0]
    >>> hit.node.ref_doc_id, hit.node.get_content()
    ('oxygen', 'Oxygen has the atomic number 8.')
    >>> store.close()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from llamaindex_m3._open_store import OpenStoreCopies
from llamaindex_m3.embeddings import M3Embedding
from llamaindex_m3.retriever import check_settings, model_encoder
from llamaindex_m3.vector_store_reads import VectorStoreReads
from llamaindex_m3.vector_store_writes import VectorStoreWrites
from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.field_types import WholeNumber
from m3kit.outputs import Head
from m3kit.store import (
    Backend,
    ClusterSettings,
    ConnectionSettings,
    Fusion,
    M3Index,
)
from m3kit.store.doc_prefix import check_stored_prefix

try:
    from llama_index.core.vector_stores.types import BasePydanticVectorStore
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex", e) from e

__all__ = ["M3VectorStore"]

logger = logging.getLogger(__name__)


class M3VectorStore(VectorStoreReads, VectorStoreWrites, OpenStoreCopies, BasePydanticVectorStore):
    """LlamaIndex vector store running M3 search on an :class:`~m3kit.store.M3Index`.

    Build it from a model (``M3VectorStore(embed_or_encoder, location="./m3db")``) or share
    an opened index (``M3VectorStore.from_index(retriever.index)``). Node ids it returns are
    the nodes' own ids, as LlamaIndex's stores (a chunk another writer stored, e.g.
    ``langchain_m3``, has its point id ``uuid5(ref_doc_id, chunk_index)``); ``get_nodes``,
    ``delete_nodes`` and a query's ``node_ids`` take either.

    Attributes:
        collection_name: Qdrant collection.
        location: ``None`` / ``":memory:"`` or a folder (embedded engine by default).
        url: Qdrant server URL (instead of ``location``).
        backend: ``edge`` (embedded engine) or ``client`` (qdrant-client).
        connection: With ``url`` only: request timeout and the server's request size limit
            (:class:`~m3kit.store.ConnectionSettings`; saved by ``to_dict``, the API key is not).
        cluster: With ``url`` only: shards, replication, on-disk storage and quantisation of a
            new collection (checked against an existing one), and points per write request
            and requests in flight (:class:`~m3kit.store.ClusterSettings`; saved by
            ``to_dict``).
        fusion: How hybrid mode fuses dense and sparse candidates: ``rrf``, ``dbsf`` or ``m3``;
            ``None``: the index's (a calibrated checkpoint's fusion when it has one).
        rerank: ColBERT rerank. ``None``: in hybrid mode as the index decides (when the
            collection holds ColBERT vectors, unless its calibration says otherwise);
            ``True``: in every mode (needs ColBERT); ``False``: never.
        weights: ``[dense, sparse, colbert]`` of the ``m3`` fusion (``None``: the index's).
        candidates: Candidates per retriever before fusion and rerank (``None``: the index's,
            ``max(4 * k, 50)`` uncalibrated).
        text_instruction: Prefix of the texts encoded for sparse / ColBERT (default: the
            ``M3Embedding``'s). The collection records it at its first write; a store with
            another one (``None`` and ``""``: none) is refused on it, as is any other writer
            (``langchain_m3``, ``M3Retriever``, ``m3kit index`` never prefix) on a collection
            recorded with one (:mod:`m3kit.store.doc_prefix`).
        show_progress: tqdm bars while ``add`` encodes and writes nodes (default off, as
            LlamaIndex's own stores: ``VectorStoreIndex(show_progress=True)`` shows its own
            bars but does not reach a store's ``add``).
    """

    # a field assigned later is checked as at construction; where the collection is (opened
    # once, at construction) cannot be changed by assigning
    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, validate_assignment=True
    )

    stores_text: bool = True
    is_embedding_query: bool = True
    collection_name: str = Field(
        default="m3kit", min_length=1, frozen=True, description="Collection name."
    )
    location: str | None = Field(
        default=None, frozen=True, description="None/':memory:' or a folder."
    )
    url: str | None = Field(default=None, frozen=True, description="Qdrant server URL.")
    backend: Backend | None = Field(default=None, frozen=True, description="'edge' or 'client'.")
    connection: ConnectionSettings | None = Field(
        default=None, frozen=True, description="Server request timeout and size limit (url only)."
    )
    cluster: ClusterSettings | None = Field(
        default=None,
        frozen=True,
        description="Shards, replication, quantisation and write batches (url only).",
    )
    fusion: Fusion | None = Field(
        default=None, description="Hybrid fusion: rrf, dbsf or m3 (None: the index's)."
    )
    rerank: bool | None = Field(default=None, description="ColBERT rerank (None: hybrid only).")
    weights: tuple[float, float, float] | None = Field(
        default=None, description="[dense, sparse, colbert] of the m3 fusion (None: the index's)."
    )
    candidates: WholeNumber | None = Field(
        default=None, description="Candidates per retriever before fusion (None: the index's)."
    )
    text_instruction: str | None = Field(default=None, description="Prefix of encoded texts.")
    show_progress: bool = Field(
        default=False,
        description="tqdm bars while nodes are encoded and written (default off, as LlamaIndex's "
        "stores: VectorStoreIndex(show_progress=...) does not reach a store's add).",
    )

    _index: M3Index = PrivateAttr()

    @field_validator("fusion", "weights", "rerank", "candidates", mode="before")
    @classmethod
    def _check_setting(cls, value: Any, info: ValidationInfo) -> Any:
        name = str(info.field_name)
        return check_settings(**{name: value})[name]

    @field_validator("location", mode="before")
    @classmethod
    def _absolute_location(cls, value: Any) -> Any:
        # to_dict saves it: a relative folder, read by from_dict in another working
        # directory, opened (created) an empty collection there
        return _absolute(value)

    @field_validator("connection", mode="before")
    @classmethod
    def _check_connection(cls, value: Any) -> Any:
        # a saved store's dict: a misspelt key would be dropped silently by pydantic
        return ConnectionSettings.from_dict(value) if isinstance(value, Mapping) else value

    @field_validator("cluster", mode="before")
    @classmethod
    def _check_cluster(cls, value: Any) -> Any:
        # likewise: a misspelt key would leave the collection with the server's defaults
        return ClusterSettings.from_dict(value) if isinstance(value, Mapping) else value

    _owns_index: bool = PrivateAttr(default=True)

    copy_hint: ClassVar[
        str
    ] = (  # pickling and deep copies are refused (see llamaindex_m3._open_store)
        "open one in the other process (M3VectorStore(model, location=...)), or share this "
        "one's index: M3VectorStore.from_index(store.client)"
    )

    def __init__(
        self,
        model: M3Encoder | M3Embedding | None = None,
        *,
        index: M3Index | None = None,
        api_key: str | None = None,
        create: bool = True,
        **data: Any,
    ) -> None:
        """Open (or create) the collection for ``model``, or wrap ``index``.

        Args:
            model: A loaded :class:`~m3kit.M3Encoder` or an :class:`M3Embedding`.
            index: An opened :class:`~m3kit.store.M3Index` instead of a model (not closed by
                :meth:`close`); ``location``, ``url``, ``backend``, ``connection``,
                ``cluster`` and ``collection_name`` are then the index's (given, they must be:
                ``from_dict`` of its ``to_dict``).
            api_key: Server API key (default: ``QDRANT_API_KEY``); not a field, never saved.
            create: Create the collection if it does not exist (``False``: a search service
                opening an existing one; a misspelt name is refused, not created empty); not
                a field, never saved.
            **data: The fields above.

        Raises:
            CollectionNotFoundError: ``create=False`` and the collection does not exist.
            TypeError: ``model`` is neither an encoder nor an ``M3Embedding`` (an
                ``M3SparseEmbedding`` included: for a sparse cut, pass
                ``index=M3Index.open(encoder, ..., sparse_top_k=...)``).
            ValueError: Neither or both of ``model`` and ``index``; with ``index``, an
                ``api_key`` or another collection than its own; ``rerank=True`` on a
                collection without ColBERT vectors; ``weights`` with a ``fusion`` (or the
                index's default) that is not ``m3``; a collection that records another
                document prefix than ``text_instruction`` (:mod:`m3kit.store.doc_prefix`:
                every add checks it too).
            SchemaMismatchError: The collection exists with other vectors.
        """
        if (model is None) == (index is None):
            raise ValueError("give a model (M3Encoder or M3Embedding) or an opened index=")
        if isinstance(model, M3Embedding) and data.get("text_instruction") is None:
            data["text_instruction"] = model.text_instruction
        if index is not None:
            data.update(_index_place(index, data, api_key))
        super().__init__(**data)
        if index is None:
            encoder = model_encoder(model, "M3VectorStore", "M3VectorStore(index=index)")
            if not isinstance(encoder, M3Encoder):
                raise TypeError(f"model must be an M3Encoder or M3Embedding, got {type(model)}")
            location = os.fspath(self.location) if self.location is not None else None
            index = M3Index.open(
                encoder,
                location,
                collection=self.collection_name,
                url=self.url,
                api_key=api_key,
                backend=self.backend,
                connection=self.connection,
                cluster=self.cluster,
                create=create,
            )
        else:
            self._owns_index = False
        try:
            if self.rerank and Head.COLBERT not in index.store.heads:
                raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
            # weights the store's own fusion (or the index's default) never uses: a query's
            # mode decides its rerank, so they would be left out of every query, silently
            index.search_settings(fusion=self.fusion, weights=self.weights, rerank=self.rerank)
            # another document prefix than the collection's: refused now, not at the first add
            check_stored_prefix(index.store, self.text_instruction)
        except ValueError:
            if self._owns_index:
                index.close()
            raise
        self._index = index

    @classmethod
    def from_index(cls, index: M3Index, **data: Any) -> M3VectorStore:
        """A store on an opened index (shared, e.g., with an ``M3Retriever``; not closed here).

        Its ``location``, ``url``, ``backend``, ``connection``, ``cluster`` and
        ``collection_name`` are the index's, so
        ``M3VectorStore.from_dict(store.to_dict(), model=...)`` opens the same collection,
        with the same server settings.
        """
        return cls(index=index, **data)

    @classmethod
    def class_name(cls) -> str:
        return "M3VectorStore"

    @property
    def client(self) -> M3Index:
        """The :class:`~m3kit.store.M3Index` (``.store`` is the Qdrant layer, ``.encoder``)."""
        return self._index

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the index (files, locks, connections) unless it was given by ``index=``."""
        if self._owns_index:
            self._index.close()

    def __enter__(self) -> M3VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _index_place(index: M3Index, data: dict[str, Any], api_key: str | None) -> dict[str, Any]:
    """The fields naming where ``index``'s collection is, so ``to_dict`` can reopen it.

    Args:
        index: The opened index a store is built on.
        data: The fields given with it: ``collection_name``, ``location``, ``url``,
            ``backend``, ``connection`` and ``cluster`` may be given (``from_dict`` of such a
            store's ``to_dict``) when they are the index's.
        api_key: Must be ``None``: the index is already connected.

    Raises:
        ValueError: ``api_key`` is given, or a given field names another collection than the
            index's, or other server settings (the store would say one and use the other).
    """
    if api_key is not None:
        raise ValueError("index= is already opened; do not also give api_key")
    store = index.store
    place: dict[str, Any] = {
        "collection_name": store.collection,
        "location": _absolute(store.location),
        "url": store.url,
        "backend": store.backend,
        "connection": store.connection,
        "cluster": store.cluster,
    }
    for name, value in place.items():
        given = data.get(name)
        if name == "location":
            given = _absolute(given)
        if name == "connection" and isinstance(given, Mapping):  # from to_json's JSON
            given = ConnectionSettings.from_dict(given)
        if name == "cluster" and isinstance(given, Mapping):
            given = ClusterSettings.from_dict(given)
        if given is not None and given != value:
            server = name in ("connection", "cluster")
            what = "other server settings" if server else "another collection"
            raise ValueError(
                f"index= is already opened on {name}={value!r}; do not also give "
                f"{name}={given!r} ({what}): leave it out, or open that one with "
                "M3VectorStore(model, ...)"
            )
    return place


def _absolute(location: Any) -> Any:
    """A folder ``location`` as an absolute path (``None`` and ``":memory:"``: ``None``; a URL,
    which opening refuses with a message naming ``url=``, and anything else as it is)."""
    if location is None or not isinstance(location, str | os.PathLike):
        return location
    text = os.fspath(location)
    if "://" in str(text):
        return text
    return None if text == ":memory:" else os.path.abspath(text)
