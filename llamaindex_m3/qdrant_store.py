"""LlamaIndex's own ``QdrantVectorStore`` in hybrid mode with M3, late-chunked sparse kept.

``QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=...)`` computes every node's sparse
vector by calling ``sparse_doc_fn`` on the node's text (``get_content(MetadataMode.EMBED)``):
texts only, no node. A node from :class:`~llamaindex_m3.M3LateChunkingNodeParser` already
carries its late-chunked sparse vector (pooled from its whole document); re-encoding its text
alone would silently replace it with a context-free one, while the dense vector
(``node.embedding``) stays late-chunked.

:class:`M3QdrantVectorStore` is that store with M3's sparse functions built in; when it builds
the points, a late-chunked node's sparse vector is the one it carries (per node, not looked up
by text; cut to the sparse model's ``sparse_top_k`` / ``sparse_min_weight`` as the others are)
and only the other nodes go through ``sparse_doc_fn``. A node late-chunked by another model
than the sparse model is refused. ``get_nodes`` / ``delete_nodes`` (and their async twins)
given ``node_ids`` and ``filters`` take the nodes matching both, also when the filters are an
``OR`` group (``QdrantVectorStore`` took every node the group matched), and a
``MetadataFilters`` without a ``condition`` is an ``AND`` group, as in LlamaIndex's own
filtering (``QdrantVectorStore`` ignored it); ``add([])`` returns ``[]`` (``QdrantVectorStore``
raised on a collection not created yet); a query mode other than default, sparse and hybrid
(MMR, text search...) raises ``NotImplementedError`` (``QdrantVectorStore`` ran a dense search
instead); a default or hybrid query without ``query_embedding`` raises ``ValueError``
(``QdrantVectorStore`` returned the first stored nodes, unranked). ``MetadataFilters`` mean
what they mean in :class:`~llamaindex_m3.M3VectorStore`
(:func:`~llamaindex_m3.filters.to_flat_payload_filter`; ``QdrantVectorStore``'s translation
differed silently); ``delete_nodes`` naming no node is refused (``QdrantVectorStore`` deleted
every node); ``alpha`` outside [0, 1], budgets below 1 and an id list given as one string are
refused; keyword arguments ``QdrantVectorStore`` would ignore are refused, and a query's
``qdrant_filters`` applies together with its ``filters`` / ``doc_ids`` / ``node_ids``
(``QdrantVectorStore`` dropped them). Everything else (payload, ids, hybrid fusion) is
``QdrantVectorStore``'s own.

Example::

    from llama_index.core import StorageContext, VectorStoreIndex
    from qdrant_client import QdrantClient
    from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3QdrantVectorStore

    embed = M3Embedding(model_name="BAAI/bge-m3")
    parser = M3LateChunkingNodeParser.from_encoder(embed.encoder, chunk_size=256)
    store = M3QdrantVectorStore("docs", client=QdrantClient(path="./qdrant"), sparse_model=embed)
    index = VectorStoreIndex(
        parser.get_nodes_from_documents(documents),
        embed_model=embed,
        storage_context=StorageContext.from_defaults(vector_store=store),
    )
    retriever = index.as_retriever(vector_store_query_mode="hybrid", sparse_top_k=10)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

from llama_index.core.schema import BaseNode, MetadataMode

from llamaindex_m3._open_store import OpenStoreCopies
from llamaindex_m3._qdrant_nodes import QdrantNodeAccess, no_kwargs
from llamaindex_m3._qdrant_query import (
    DOC_VECTORS,
    QUERY_ALPHA,
    QUERY_VECTORS,
    QueryAlphaFusion,
    VectorHandoff,
    check_query,
    encoded_in_thread,
    query_kwargs,
)
from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding, m3_sparse_fns
from llamaindex_m3.late_sparse import carried_sparse
from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.fingerprint import encoder_fingerprint
from m3kit.store.stock_record import (
    check_models,
)

try:
    from llama_index.core.vector_stores.types import (
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import node_to_metadata_dict
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client.http import models as rest
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-vector-stores-qdrant", "llamaindex", e) from e

__all__ = ["M3QdrantVectorStore", "carried_sparse"]

_OWN_ARGS = ("enable_hybrid", "sparse_doc_fn", "sparse_query_fn", "fastembed_sparse_model")
#: What ``to_dict()`` holds that is no free argument, as this class sets it: the hybrid
#: arguments above and the store's fixed fields (``QdrantVectorStore`` swallows the latter).
_OWN_VALUES: dict[str, Any] = {
    "enable_hybrid": True,
    "fastembed_sparse_model": None,
    **{
        name: QdrantVectorStore.model_fields[name].default
        for name in ("stores_text", "flat_metadata", "is_embedding_query")
    },
}


def _store_arguments() -> set[str]:
    """The named arguments of ``QdrantVectorStore.__init__`` (its ``**kwargs`` are unused)."""
    params = inspect.signature(QdrantVectorStore.__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in named} - {"self", "collection_name"}


class M3QdrantVectorStore(OpenStoreCopies, QdrantNodeAccess):
    """``QdrantVectorStore`` in hybrid mode with M3 sparse vectors; late chunks keep theirs.

    Takes every ``QdrantVectorStore`` argument except the hybrid ones it sets itself
    (``enable_hybrid=True``, ``sparse_doc_fn`` / ``sparse_query_fn`` from
    :func:`~llamaindex_m3.m3_sparse_fns`, no FastEmbed model); those and the fixed fields
    (``stores_text`` ...) are accepted at the values its ``to_dict()`` records, so
    ``M3QdrantVectorStore.from_dict(store.to_dict(), client=..., sparse_model=...)`` rebuilds it.

    Args:
        collection_name: The Qdrant collection.
        sparse_model: The model whose sparse head encodes documents and queries: the
            :class:`~llamaindex_m3.M3Embedding` given to ``VectorStoreIndex`` (one forward pass
            per document for dense + sparse), an :class:`~llamaindex_m3.M3SparseEmbedding` or a
            loaded encoder. Late-chunked nodes must come from the same model (another
            model's raise a ``ValueError`` naming the node when added).
        **kwargs: ``QdrantVectorStore`` arguments (``client``, ``aclient``, ``url``,
            ``batch_size``, vector names, ...).

    Raises:
        TypeError: A hybrid argument this class sets itself was given (another value), or one that
            ``QdrantVectorStore`` does not take (it would swallow a misspelt one, unused).
        HeadNotAvailableError: The model has no sparse head.
    """

    copy_hint: ClassVar[
        str
    ] = (  # pickling and deep copies are refused (see llamaindex_m3._open_store)
        "build one in the other process: M3QdrantVectorStore(collection_name, client=..., "
        "sparse_model=...)"
    )

    def __init__(
        self,
        collection_name: str,
        *,
        sparse_model: M3Encoder | M3Embedding | M3SparseEmbedding,
        **kwargs: Any,
    ) -> None:
        for key, value in _OWN_VALUES.items():  # in its own to_dict(): from_dict passes them
            if key in kwargs and kwargs[key] == value and type(kwargs[key]) is type(value):
                del kwargs[key]
        clash = sorted(k for k in _OWN_ARGS if k in kwargs)
        if clash:
            raise TypeError(
                f"M3QdrantVectorStore sets {clash} itself (hybrid mode with M3's sparse head); "
                "use llama_index's QdrantVectorStore for other sparse models"
            )
        unknown = sorted(set(kwargs) - _store_arguments())
        if unknown:
            raise TypeError(
                f"M3QdrantVectorStore got unexpected arguments {unknown}; QdrantVectorStore "
                f"takes {sorted(_store_arguments() - set(_OWN_ARGS))}"
            )
        doc_fn, query_fn = m3_sparse_fns(sparse_model)
        # (mypy types the mixins' __init__ from their pydantic fields; QdrantVectorStore's runs)
        super().__init__(  # type: ignore[call-arg]
            collection_name=collection_name,
            enable_hybrid=True,
            sparse_doc_fn=doc_fn,
            sparse_query_fn=query_fn,
            **kwargs,
        )
        self._m3_doc_fn = doc_fn
        self._hybrid_fusion_fn = QueryAlphaFusion(self._hybrid_fusion_fn)
        self._sparse_query_fn = VectorHandoff(self._sparse_query_fn, QUERY_VECTORS)
        self._sparse_doc_fn = VectorHandoff(self._sparse_doc_fn, DOC_VECTORS)
        self._m3_built = self._model_identities()  # what its sparse queries are checked by
        self._m3_fingerprint = encoder_fingerprint(doc_fn.encoder)  # and dense vectors' origin
        if self._client is not None:  # (an async-only store: at its first async call)
            self._refuse_no_sparse()
            check_models(self._client, collection_name, self._m3_built)
            self._m3_checked = True

    def set_query_functions(
        self,
        sparse_doc_fn: Any = None,
        sparse_query_fn: Any = None,
        hybrid_fusion_fn: Any = None,
    ) -> None:
        """``QdrantVectorStore``'s, the fusion function given the query's own ``alpha`` in
        :meth:`aquery` too."""
        fuse = None if hybrid_fusion_fn is None else QueryAlphaFusion(hybrid_fusion_fn)
        encode = None if sparse_query_fn is None else VectorHandoff(sparse_query_fn, QUERY_VECTORS)
        docs = None if sparse_doc_fn is None else VectorHandoff(sparse_doc_fn, DOC_VECTORS)
        super().set_query_functions(docs, encode, fuse)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """``QdrantVectorStore.query``; another mode than default, sparse and hybrid, or a
        sparse or hybrid query without text, is refused.

        Raises:
            NotImplementedError: Another mode (MMR, text search, SVM...; LlamaIndex's store
                ran a dense search instead, silently).
            ValueError: Default or hybrid mode without ``query_embedding`` (LlamaIndex's store
                returned the first stored nodes, unranked); sparse or hybrid mode without
                ``query_str`` (LlamaIndex's store ran a dense-only search instead, silently)
                or with a blank one (its sparse search found nothing, silently).
            EncoderChangedError: Sparse or hybrid mode after the sparse model's encoder
                changed in memory since the store was built.
            FingerprintMismatchError: The collection now records another sparse model (an
                alias moved, the collection re-encoded), checked again once the last check is
                :data:`~m3kit.store.stock_record.RECHECK_SECONDS` old.
        """
        check_query(query)
        kwargs = query_kwargs(kwargs, lambda: self._build_query_filter(query))
        self._refuse_changed(query)
        self._recheck_models()  # an alias moved, the collection re-encoded: stock_record
        return super().query(query, **kwargs)  # type: ignore[no-any-return]

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """``QdrantVectorStore.aquery``, a hybrid query fused with its own ``alpha``, as
        :meth:`query` fuses it (LlamaIndex's made ``alpha=0`` 0.5); another mode, or a sparse
        or hybrid query without text or with a blank one, is refused as in :meth:`query`."""
        check_query(query)
        kwargs = query_kwargs(kwargs, lambda: self._build_query_filter(query))
        await self._acheck_models()
        self._refuse_changed(query)
        hybrid = query.mode == VectorStoreQueryMode.HYBRID
        vectors = None
        encode = self._sparse_query_fn
        if encode and query.mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID):
            # encoded here in a worker thread, handed to QdrantVectorStore.aquery, which
            # calls the sparse query function on the event loop (see VectorHandoff)
            vectors = await encoded_in_thread(encode, [query.query_str or ""])
        handed = QUERY_VECTORS.set(vectors)
        token = QUERY_ALPHA.set(query.alpha if hybrid and query.alpha is not None else None)
        try:
            return await super().aquery(query, **kwargs)  # type: ignore[no-any-return]
        finally:
            QUERY_ALPHA.reset(token)
            QUERY_VECTORS.reset(handed)

    def add(
        self, nodes: Sequence[BaseNode], shard_identifier: Any | None = None, **add_kwargs: Any
    ) -> list[str]:
        """``QdrantVectorStore.add``; no nodes: nothing to store, ``[]`` (as ``async_add``).

        ``QdrantVectorStore.add([])`` sent the empty batch to a collection it had not created
        yet (the first node's embedding gives its size) and raised "Collection ... not found".

        Raises:
            ValueError: A late-chunked node the store refuses (see :func:`carried_sparse`),
                before anything is written (the collection is not created either).
        """
        no_kwargs("add", add_kwargs)
        if not nodes:
            return []
        for node in nodes:
            carried_sparse(node, self._m3_doc_fn)  # refuses a late-chunked node it would refuse
        self._check_origins(nodes)
        existed = self._record_models()  # another model's store wrote it since: refused
        try:
            ids: list[str] = super().add(list(nodes), shard_identifier, **add_kwargs)
        except BaseException:
            if not existed:  # the collection may exist now, holding some of these points
                self._record_after_failed_add()
            raise
        if not existed:
            self._record_models(created=True)  # the first add created the collection
        return ids

    async def async_add(
        self, nodes: Sequence[BaseNode], shard_identifier: Any | None = None, **kwargs: Any
    ) -> list[str]:
        """``QdrantVectorStore.async_add``, refusing nodes as :meth:`add` does; the sparse
        vectors of nodes without a carried one are encoded in a worker thread (LlamaIndex's
        store encodes them on the event loop)."""
        no_kwargs("async_add", kwargs)
        # the texts _build_points encodes: nodes without a carried sparse vector (one pass
        # that also refuses a late-chunked node it would refuse, before anything is written)
        texts = [
            node.get_content(metadata_mode=MetadataMode.EMBED)
            for node in nodes
            if carried_sparse(node, self._m3_doc_fn) is None
        ]
        existed = await self._arecord_models()
        self._check_origins(nodes)  # after the record names another sparse model
        encode = self._sparse_doc_fn
        vectors = await encoded_in_thread(encode, texts) if encode and texts else None
        handed = DOC_VECTORS.set(vectors)
        try:
            ids: list[str] = await super().async_add(list(nodes), shard_identifier, **kwargs)
        except BaseException:  # cancelled too: a timeout while Qdrant's reply was on its way
            if not existed:  # the collection may exist now, holding some of these points
                await self._arecord_after_failed_add()
            raise
        finally:
            DOC_VECTORS.reset(handed)
        if not existed:
            await self._arecord_models(created=True)
        return ids

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3QdrantVectorStore"

    def _build_points(
        self, nodes: list[BaseNode], sparse_vector_name: str
    ) -> tuple[list[Any], list[str]]:
        """The store's points, in node order; late-chunked nodes with their carried sparse."""
        carried = [carried_sparse(node, self._m3_doc_fn) for node in nodes]
        others = [node for node, sparse in zip(nodes, carried, strict=True) if sparse is None]
        if len(others) == len(nodes):
            return super()._build_points(nodes, sparse_vector_name)  # type: ignore[no-any-return]
        built, _ = super()._build_points(others, sparse_vector_name) if others else ([], [])
        other_points = iter(built)
        points: list[Any] = []
        for node, sparse in zip(nodes, carried, strict=True):
            if sparse is None:
                points.append(next(other_points))
                continue
            points.append(
                rest.PointStruct(
                    id=node.node_id,
                    payload=node_to_metadata_dict(
                        node, remove_text=False, flat_metadata=self.flat_metadata
                    ),
                    vector={
                        sparse_vector_name: rest.SparseVector(
                            indices=sparse.indices.tolist(), values=sparse.values.tolist()
                        ),
                        self.dense_vector_name: node.get_embedding(),
                    },
                )
            )
        return points, [node.node_id for node in nodes]
