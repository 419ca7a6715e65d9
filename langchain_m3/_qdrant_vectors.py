"""How :class:`~langchain_m3.M3QdrantVectorStore` builds its points: a late chunk keeps its vectors.

``langchain_qdrant.QdrantVectorStore`` builds every point's vectors by calling its embeddings
on the texts alone (its ``_build_vectors`` sees no metadata), which re-encodes a chunk from
:class:`~langchain_m3.M3LateChunkingSplitter` without its document. :class:`CarriedVectors`
replaces its batch loop: a late-chunked chunk gets the vectors it carries (checked as
:class:`~langchain_m3.M3VectorStore` checks them), the other texts go through the embeddings,
and the first write records which models' vectors the collection holds
(:mod:`m3kit.store.stock_record`).
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode
from qdrant_client import models

from langchain_m3._qdrant_record import model_identities, unwrapped
from langchain_m3._writes import checked_chunk, same_model
from langchain_m3.embeddings import M3Embeddings
from langchain_m3.sparse_embeddings import M3SparseEmbeddings
from langchain_m3.splitter import LATE_CHUNK_KEY
from m3kit.encoder import M3Encoder
from m3kit.outputs import Chunk, Head
from m3kit.store.cancelling import stop_if_cancelled
from m3kit.store.stock_record import TEXT_INSTRUCTION, is_m3kit_identity, record_models

__all__ = ["CarriedVectors"]


class CarriedVectors(QdrantVectorStore):
    """``QdrantVectorStore`` whose points keep a late chunk's own vectors."""

    def _model_identities(self) -> dict[str, str]:
        """The identities of the embeddings whose vectors this store's mode writes and
        queries (an embeddings given but unused in its mode is neither recorded nor checked)."""
        mode = self.retrieval_mode
        return model_identities(
            self._embeddings if mode != RetrievalMode.SPARSE else None,
            self._sparse_embeddings if mode != RetrievalMode.DENSE else None,
        )

    def _write_identities(self) -> dict[str, str]:
        """The models' identities and, with them, this store's document prefix: none
        (LangChain's embeddings never prefix documents; checked at writes only, as reading
        a collection LlamaIndex wrote with a ``text_instruction`` is sound)."""
        ids = self._model_identities()
        return {**ids, TEXT_INSTRUCTION: ""} if any(map(is_m3kit_identity, ids.values())) else ids

    def _generate_batches(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        ids: Sequence[str | int] | None = None,
        batch_size: int = 64,
    ) -> Generator[tuple[list[str | int], list[models.PointStruct]], Any, None]:
        # QdrantVectorStore's loop (langchain-qdrant 1.x), with the vectors built per batch by
        # _vectors: its _build_vectors sees texts only, not the metadata that marks a chunk.
        all_texts = list(texts)
        all_metas = list(metadatas) if metadatas else []
        all_ids: list[str | int] = list(ids) if ids else [uuid.uuid4().hex for _ in all_texts]
        if all_texts:  # which model's vectors the collection holds, before it holds them
            record_models(self.client, self.collection_name, self._write_identities())
        for start in range(0, len(all_texts), batch_size):
            stop_if_cancelled()  # an aadd_texts cancelled: nothing more is encoded
            batch_texts = all_texts[start : start + batch_size]
            batch_metas = all_metas[start : start + batch_size] or None
            batch_ids = all_ids[start : start + batch_size]
            payloads = self._build_payloads(
                batch_texts, batch_metas, self.content_payload_key, self.metadata_payload_key
            )
            vectors = self._vectors(batch_texts, batch_metas, start)
            points = [
                models.PointStruct(id=point_id, vector=vector, payload=payload)
                for point_id, vector, payload in zip(batch_ids, vectors, payloads, strict=False)
            ]
            stop_if_cancelled()  # ... nor written
            yield batch_ids, points

    def _vectors(
        self, texts: list[str], metadatas: list[dict[Any, Any]] | None, offset: int
    ) -> list[models.VectorStruct]:
        """Each text's vectors, in order: carried for late chunks, encoded for the others."""
        metas: list[dict[Any, Any] | None] = list(metadatas or [])
        metas += [None] * (len(texts) - len(metas))
        late = [meta is not None and LATE_CHUNK_KEY in meta for meta in metas]
        if not any(late):
            return self._build_vectors(texts)
        heads = self._heads()
        encoder = self._m3_encoder(heads)  # once per batch, not per chunk
        carried = [
            checked_chunk(Document(text, metadata=meta), f"documents[{offset + i}]", heads, encoder)
            if meta is not None and is_late
            else None
            for i, (text, meta, is_late) in enumerate(zip(texts, metas, late, strict=True))
        ]
        others = [text for text, chunk in zip(texts, carried, strict=True) if chunk is None]
        encoded = iter(self._build_vectors(others) if others else [])
        return [
            next(encoded) if chunk is None else self._chunk_vectors(chunk, heads)
            for chunk in carried
        ]

    def _heads(self) -> set[Head]:
        mode = self.retrieval_mode
        heads = set()
        if mode in (RetrievalMode.DENSE, RetrievalMode.HYBRID):
            heads.add(Head.DENSE)
        if mode in (RetrievalMode.SPARSE, RetrievalMode.HYBRID):
            heads.add(Head.SPARSE)
        return heads

    def _m3_encoder(self, heads: set[Head]) -> M3Encoder | None:
        """The model the store's embeddings encode with (``None``: they are not M3's, or
        the dense and sparse embeddings are two different models; two loads of one
        checkpoint are one model)."""
        # (the store's own model behind LangChain's CacheBackedEmbeddings: chunks that carry
        # their vectors skip the cache anyway)
        dense = unwrapped(self._embeddings) if Head.DENSE in heads else None
        sparse = self._sparse_embeddings if Head.SPARSE in heads else None
        models_used = [
            e.encoder for e in (dense, sparse) if isinstance(e, M3Embeddings | M3SparseEmbeddings)
        ]
        wanted = sum(e is not None for e in (dense, sparse))
        if len(models_used) != wanted:
            return None
        if any(not same_model(m, models_used[0]) for m in models_used):
            return None  # dense and sparse of two models: no chunk can carry both
        return models_used[0]

    def _chunk_vectors(self, chunk: Chunk, heads: set[Head]) -> models.VectorStruct:
        vector: dict[str, Any] = {}
        if Head.DENSE in heads:
            vector[self.vector_name] = chunk.vectors.dense[0].tolist()
        if Head.SPARSE in heads:
            sparse = chunk.vectors.sparse[0]
            options = self._sparse_embeddings
            if isinstance(options, M3SparseEmbeddings):  # what its embed_documents keeps
                sparse = options.encoder.sparse_vector(
                    sparse.indices,
                    sparse.values,
                    top_k=options.sparse_top_k,
                    min_weight=options.sparse_min_weight,
                )
            vector[self.sparse_vector_name] = models.SparseVector(
                indices=sparse.indices.tolist(), values=sparse.values.tolist()
            )
        return vector
