"""The model record of :class:`~llamaindex_m3.M3QdrantVectorStore`: which sparse model, cut and
document prefix a collection's vectors come from, checked and kept in its metadata.

LlamaIndex's ``QdrantVectorStore`` records nothing of the model: a collection written with one
checkpoint and opened with a fine-tune of it was searched with the new model's sparse queries
against the old sparse vectors, silently. :class:`QdrantModelRecord` records the sparse model's
identity at the first write, checks it when the store is built (the sync client) or at its first
async call, again once the last check is :data:`~m3kit.store.stock_record.RECHECK_SECONDS` old
(an alias moved, the collection re-encoded), and refuses dense vectors an ``M3Embedding`` of
another encoder made (:mod:`m3kit.store.stock_record`,
:mod:`llamaindex_m3.embedding_origins`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index.vector_stores.qdrant.base import DEFAULT_SPARSE_VECTOR_NAME_OLD

from llamaindex_m3.embedding_origins import check_origin
from llamaindex_m3.embeddings import QdrantSparseFn
from m3kit.store.stock_record import (
    SPARSE_CUT,
    TEXT_INSTRUCTION,
    Recheck,
    acheck_models,
    arecord_models,
    check_models,
    record_models,
    refuse_changed,
    sparse_cut_identity,
    sparse_identity,
)

__all__ = ["QdrantModelRecord", "refuse_no_sparse"]

logger = logging.getLogger(__name__)


class QdrantModelRecord(QdrantVectorStore):
    """``QdrantVectorStore`` that records and checks its sparse model (set by the subclass's
    ``__init__``: ``_m3_doc_fn``, ``_m3_built``, ``_m3_fingerprint``)."""

    _m3_doc_fn: QdrantSparseFn = PrivateAttr()
    _m3_checked: bool = PrivateAttr(default=False)
    _m3_recheck: Recheck = PrivateAttr(default_factory=Recheck)  # (stock_record.Recheck)
    _m3_built: dict[str, str] = PrivateAttr(default_factory=dict)
    _m3_fingerprint: Any = PrivateAttr(default=None)  # the sparse model's, when built

    def _model_identities(self) -> dict[str, str]:
        """The sparse model's identity, cut and document prefix (the dense vectors are the
        nodes' own embeddings)."""
        fn = self._m3_doc_fn
        return {
            "sparse": sparse_identity(fn.encoder),
            SPARSE_CUT: sparse_cut_identity(fn.sparse_top_k, fn.sparse_min_weight),
            TEXT_INSTRUCTION: fn.text_instruction or "",
        }

    def _record_models(self, *, created: bool = False) -> bool:
        """Check the sparse model against the collection's record, and record it; whether
        there was nothing to wait for (the collection exists, or no sync client checks it).
        ``created``: the add just made created the collection (see :func:`record_models`)."""
        if self._client is None:
            return True
        return record_models(
            self._client, self.collection_name, self._model_identities(), created=created
        )

    def _record_after_failed_add(self) -> None:
        """Record the model after a first add that failed or was cancelled (an
        ``asyncio.wait_for`` timeout while Qdrant's reply was on its way): the collection it
        created may hold some of its points. Left without a record, a store of another model
        wrote into it as into a stock collection, with a warning blaming "another program".
        A failure to record is logged, not raised over the add's own error."""
        try:
            self._record_models(created=True)
        except Exception:
            self._warn_not_recorded()

    async def _arecord_after_failed_add(self) -> None:
        """:meth:`_record_after_failed_add` through the async client."""
        try:
            await self._arecord_models(created=True)
        except Exception:
            self._warn_not_recorded()

    def _warn_not_recorded(self) -> None:
        """Log (with the exception being handled) that a failed add's model is not recorded."""
        logger.warning(
            "collection %r: the model of the failed add's points is not recorded",
            self.collection_name,
            exc_info=True,
        )

    async def _arecord_models(self, *, created: bool = False) -> bool:
        """:meth:`_record_models` through the async client (the sync one without it)."""
        if self._aclient is None:
            return self._record_models(created=created)
        if not self._m3_checked:
            await self._arefuse_no_sparse()
        done = await arecord_models(
            self._aclient, self.collection_name, self._model_identities(), created=created
        )
        self._m3_checked = True
        return done

    async def _acheck_models(self) -> None:
        """Check the sparse model against the collection's record through the async client:
        for a store built without a sync client (which checks when built), and again once
        the last check is older than :data:`~m3kit.store.stock_record.RECHECK_SECONDS`."""
        if (not self._m3_checked or self._m3_recheck.due()) and self._aclient is not None:
            if not self._m3_checked:
                await self._arefuse_no_sparse()
            await acheck_models(self._aclient, self.collection_name, self._m3_built)
            self._m3_checked = True
            self._m3_recheck.done()

    def _refuse_no_sparse(self) -> None:
        """Refuse an existing collection without this store's sparse vector (a stock
        ``QdrantVectorStore`` created it dense-only): its queries and writes failed with
        Qdrant's bare "not found" errors, after a warning that recorded a sparse model into
        the collection's metadata."""
        name, client = self.collection_name, self._client
        if client.collection_exists(name):
            refuse_no_sparse(client.get_collection(name), name, self.sparse_vector_name)

    async def _arefuse_no_sparse(self) -> None:
        """:meth:`_refuse_no_sparse` through the async client."""
        name, client = self.collection_name, self._aclient
        if await client.collection_exists(name):
            refuse_no_sparse(await client.get_collection(name), name, self.sparse_vector_name)

    def _recheck_models(self) -> None:
        """:meth:`_acheck_models` for a sync query (through the sync client)."""
        if self._client is not None and self._m3_recheck.due():
            check_models(self._client, self.collection_name, self._m3_built)
            self._m3_recheck.done()

    def _refuse_changed(self, query: VectorStoreQuery) -> None:
        if query.mode != VectorStoreQueryMode.DEFAULT:  # the sparse head encodes the query
            refuse_changed(self._m3_built, self._model_identities())
        if query.mode != VectorStoreQueryMode.SPARSE and query.query_embedding is not None:
            # an M3Embedding of another encoder (a fine-tune) against the stored vectors
            what = "VectorStoreQuery.query_embedding"
            check_origin(query.query_embedding, self._m3_fingerprint, what)

    def _check_origins(self, nodes: Sequence[BaseNode]) -> None:
        """Raise for a node embedded by an ``M3Embedding`` of another encoder than the sparse
        model's (a fine-tune of it given to ``VectorStoreIndex`` as ``embed_model``: one point
        held its dense vector beside the start model's sparse one, silently), before
        ``QdrantVectorStore`` creates the collection, sized by the first node's embedding."""
        for node in nodes:
            if node.embedding is not None:
                what = f"the embedding of node {node.node_id!r}"
                check_origin(node.embedding, self._m3_fingerprint, what)


def refuse_no_sparse(info: Any, collection: str, sparse_name: str) -> None:
    """Raise unless the collection (its ``get_collection`` answer) has ``sparse_name``.

    Raises:
        ValueError: It has no sparse vector of that name.
    """
    sparse = getattr(info.config.params, "sparse_vectors", None) or {}
    # QdrantVectorStore switches to its old default name when the collection has that one
    # (its _detect_vector_format; an async-only store detects it after this check)
    if sparse_name not in sparse and DEFAULT_SPARSE_VECTOR_NAME_OLD not in sparse:
        raise ValueError(
            f"collection {collection!r} has no sparse vector {sparse_name!r} (its sparse "
            f"vectors: {sorted(sparse) or 'none'}): M3QdrantVectorStore keeps M3's sparse "
            "vectors beside the dense ones (hybrid mode), and LlamaIndex's QdrantVectorStore "
            "built without enable_hybrid=True creates a collection with none. Give a new "
            "collection_name (and add the nodes again there), or search this one with "
            "LlamaIndex's QdrantVectorStore (dense only)"
        )
