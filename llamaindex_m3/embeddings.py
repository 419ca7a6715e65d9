"""LlamaIndex embeddings: M3 dense (:class:`M3Embedding`) and learned-sparse vectors.

:class:`M3Embedding` is a ``BaseEmbedding`` (``Settings.embed_model``, ``VectorStoreIndex``).
:class:`M3SparseEmbedding` is a ``BaseSparseEmbedding`` (``{token_id: weight}`` dicts).
:func:`m3_sparse_fns` gives the ``sparse_doc_fn`` / ``sparse_query_fn`` pair that
``llama_index.vector_stores.qdrant.QdrantVectorStore(enable_hybrid=True, ...)`` takes, so its
hybrid mode uses M3's own sparse head instead of a second (SPLADE / FastEmbed) model.

Example:
    >>> import tempfile
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> emb = M3Embedding.from_encoder(enc)
    >>> len(emb.get_text_embedding("Berlin is the capital of Germany.")) == enc.dense_dim
    True
    >>> doc_fn, query_fn = m3_sparse_fns(emb)
    >>> indices, values = doc_fn(["Berlin is the capital of Germany."])
    >>> len(indices[0]) == len(values[0]) > 0
    True
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from pydantic import Field

from llamaindex_m3._encoder_fields import M3EncoderFields
from m3kit.encoder import M3Encoder
from m3kit.errors import HeadNotAvailableError, missing_extra
from m3kit.outputs import Head

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex") from e

__all__ = ["M3Embedding", "M3SparseEmbedding", "QdrantSparseFn", "m3_sparse_fns"]

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]
"""What ``QdrantVectorStore``'s ``sparse_doc_fn`` / ``sparse_query_fn`` return."""


class M3Embedding(M3EncoderFields, BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` giving M3 (or any BGE / sentence-transformers) dense vectors.

    The checkpoint is loaded when the object is built and kept in a private attribute
    (:attr:`encoder`); share one loaded model between classes with :meth:`from_encoder`.
    Vectors are L2-normalised, so cosine and dot product agree. Queries get
    ``query_instruction``, documents ``text_instruction`` (both none for BGE-M3). The async
    methods run the sync ones in a worker thread.

    Example:
        >>> import tempfile
        >>> from m3kit.testing import build_tiny_m3_checkpoint
        >>> path = build_tiny_m3_checkpoint(tempfile.mkdtemp())
        >>> emb = M3Embedding(model_name=str(path), dtype="fp32")
        >>> vectors = emb.get_text_embedding_batch(["Oxygen is O.", "Iron is Fe."])
        >>> len(vectors), len(emb.get_query_embedding("oxygen")) == len(vectors[0])
        (2, True)
    """

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3Embedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        out = self.encoder.encode(
            [query], heads=Head.DENSE, query=True, max_length=self.max_length, show_progress=False
        )
        return out.dense[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        out = self.encoder.encode(
            self._documents(texts),
            heads=Head.DENSE,
            max_length=self.max_length,
            show_progress=False,
        )
        return [row.tolist() for row in out.dense]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class M3SparseEmbedding(M3EncoderFields, BaseSparseEmbedding):
    """LlamaIndex ``BaseSparseEmbedding`` giving M3 learned-sparse vectors ``{token_id: weight}``.

    Keys are Python ``int`` token ids of the checkpoint's tokenizer, values positive
    ``float`` weights. Needs a checkpoint with the sparse head (``sparse_linear.pt``, e.g.
    ``BAAI/bge-m3``); a dense-only one raises :class:`~m3kit.errors.HeadNotAvailableError`.
    """

    sparse_top_k: int | None = Field(
        default=None, ge=1, description="Keep only the k highest weights per text."
    )
    sparse_min_weight: float = Field(
        default=0.0, ge=0.0, description="Drop weights at or below this value."
    )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3SparseEmbedding"

    @classmethod
    def _check_encoder(cls, encoder: M3Encoder) -> None:
        _require_sparse(encoder, cls.__name__)

    def _encode(self, texts: list[str], *, query: bool) -> list[SparseEmbedding]:
        if not texts:
            return []
        out = self.encoder.encode(
            texts if query else self._documents(texts),
            heads=Head.SPARSE,
            query=query,
            max_length=self.max_length,
            sparse_top_k=self.sparse_top_k,
            sparse_min_weight=self.sparse_min_weight,
            show_progress=False,
        )
        return [v.to_dict() for v in out.sparse]

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        return self._encode([query], query=True)[0]

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._encode([text], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return self._encode(texts, query=False)

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


@dataclass(frozen=True)
class QdrantSparseFn:
    """A ``sparse_doc_fn`` / ``sparse_query_fn`` for LlamaIndex's ``QdrantVectorStore``.

    Called with a list of texts, it returns ``(indices, values)``: one list of token ids and
    one list of weights per text, which the store turns into Qdrant sparse vectors.

    Attributes:
        encoder: The loaded encoder (must have the sparse head).
        query: Encode as queries (adds the query instruction) rather than documents.
        text_instruction: Prefix for documents (ignored for queries).
        max_length: Truncate longer texts to this many tokens.
        sparse_top_k: Keep only the k highest weights per text.
        sparse_min_weight: Drop weights at or below this value.
    """

    encoder: M3Encoder
    query: bool
    text_instruction: str | None = None
    max_length: int | None = None
    sparse_top_k: int | None = None
    sparse_min_weight: float = 0.0

    def __post_init__(self) -> None:
        _require_sparse(self.encoder, "m3_sparse_fns")

    def __call__(self, texts: list[str]) -> BatchSparseEncoding:
        """Sparse vectors of ``texts`` as ``(indices per text, values per text)``."""
        if not texts:
            return [], []
        if not self.query and self.text_instruction:
            texts = [self.text_instruction + t for t in texts]
        out = self.encoder.encode(
            texts,
            heads=Head.SPARSE,
            query=self.query,
            max_length=self.max_length,
            sparse_top_k=self.sparse_top_k,
            sparse_min_weight=self.sparse_min_weight,
            show_progress=False,
        )
        return [v.indices.tolist() for v in out.sparse], [v.values.tolist() for v in out.sparse]


def m3_sparse_fns(
    source: M3Encoder | M3Embedding | M3SparseEmbedding,
) -> tuple[QdrantSparseFn, QdrantSparseFn]:
    """The ``(sparse_doc_fn, sparse_query_fn)`` pair for LlamaIndex's ``QdrantVectorStore``.

    Pass the same model you give ``VectorStoreIndex`` as ``embed_model`` so dense and sparse
    vectors come from one checkpoint (and one copy of it in memory)::

        embed = M3Embedding(model_name="BAAI/bge-m3")
        doc_fn, query_fn = m3_sparse_fns(embed)
        store = QdrantVectorStore(
            client=client, collection_name="docs", enable_hybrid=True,
            sparse_doc_fn=doc_fn, sparse_query_fn=query_fn,
        )

    Args:
        source: A loaded encoder, or an :class:`M3Embedding` / :class:`M3SparseEmbedding`
            (its ``text_instruction``, ``max_length`` and, for the sparse one, its
            ``sparse_top_k`` / ``sparse_min_weight`` are kept).

    Returns:
        ``(doc_fn, query_fn)``; each maps ``list[str]`` to ``(indices, values)``.

    Raises:
        HeadNotAvailableError: The checkpoint has no sparse head.
    """
    if isinstance(source, M3Encoder):
        doc_fn = QdrantSparseFn(source, query=False)
    else:
        top_k, min_weight = (
            (source.sparse_top_k, source.sparse_min_weight)
            if isinstance(source, M3SparseEmbedding)
            else (None, 0.0)
        )
        doc_fn = QdrantSparseFn(
            source.encoder,
            query=False,
            text_instruction=source.text_instruction,
            max_length=source.max_length,
            sparse_top_k=top_k,
            sparse_min_weight=min_weight,
        )
    return doc_fn, dataclasses.replace(doc_fn, query=True)


def _require_sparse(encoder: M3Encoder, who: str) -> None:
    if Head.SPARSE not in encoder.available_heads:
        where = encoder.info.path if encoder.info else "this checkpoint"
        raise HeadNotAvailableError(
            f"{where} is a dense-only checkpoint (no sparse_linear.pt); {who} needs an M3 "
            "checkpoint such as BAAI/bge-m3"
        )
