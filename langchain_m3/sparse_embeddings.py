"""``M3SparseEmbeddings``: M3 learned-sparse (lexical) vectors for ``langchain_qdrant``.

Use it as the ``sparse_embedding`` of ``QdrantVectorStore`` in hybrid mode, next to
:class:`~langchain_m3.M3Embeddings` sharing the same loaded model:

Example:
    >>> import tempfile
    >>> from langchain_qdrant import QdrantVectorStore, RetrievalMode
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> from langchain_m3 import M3Embeddings
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> store = QdrantVectorStore.from_texts(
    ...     ["Berlin is the capital of Germany.", "Oxygen has atomic number 8."],
    ...     embedding=M3Embeddings.from_encoder(enc),
    ...     sparse_embedding=M3SparseEmbeddings.from_encoder(enc),
    ...     retrieval_mode=RetrievalMode.HYBRID,
    ...     location=":memory:",
    ...     collection_name="demo",
    ... )
    >>> len(store.similarity_search("capital of Germany", k=2))
    2
"""

from __future__ import annotations

from pydantic import Field, field_validator

from langchain_m3._encoder_model import EncoderModel
from m3kit.encoder import M3Encoder
from m3kit.encoder_inputs import check_text, check_texts
from m3kit.errors import HeadNotAvailableError, missing_extra
from m3kit.field_types import WholeNumber
from m3kit.outputs import Head
from m3kit.outputs import SparseVector as M3SparseVector
from m3kit.sparse_options import finite_sparse_min_weight

try:
    from langchain_qdrant import SparseEmbeddings, SparseVector
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-qdrant", "langchain", e) from e

__all__ = ["M3SparseEmbeddings"]


class M3SparseEmbeddings(EncoderModel, SparseEmbeddings):
    """``langchain_qdrant.SparseEmbeddings`` giving M3 sparse vectors (token id -> weight).

    Needs a checkpoint with the sparse head (``sparse_linear.pt``, e.g. ``BAAI/bge-m3``);
    a dense-only checkpoint raises :class:`~m3kit.errors.HeadNotAvailableError` when built.
    Indices are the tokenizer's ids, so documents and queries must use the same checkpoint.
    The inherited async methods run the sync ones in a worker thread.

    Given to :meth:`M3VectorStore.open <langchain_m3.M3VectorStore.open>` (``from_texts``,
    ``from_documents``) or :meth:`M3Retriever.from_documents
    <langchain_m3.M3Retriever.from_documents>` (``from_texts``), ``sparse_top_k`` /
    ``sparse_min_weight`` become the index's sparse cut (:mod:`m3kit.store.sparse_cut`).
    """

    sparse_top_k: WholeNumber | None = Field(default=None, ge=1)
    """Keep only the k highest weights per text (default: all)."""
    sparse_min_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Drop weights at or below this value (a finite number >= 0)."""

    _finite_min_weight = field_validator("sparse_min_weight", mode="before")(
        finite_sparse_min_weight
    )

    def _check_encoder(self, encoder: M3Encoder) -> None:
        if Head.SPARSE not in encoder.available_heads:
            raise HeadNotAvailableError(
                f"{self.model_name_or_path} is a dense-only checkpoint (no sparse_linear.pt); "
                "M3SparseEmbeddings needs an M3 checkpoint such as BAAI/bge-m3"
            )

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Sparse vectors of documents.

        Args:
            texts: The documents.

        Returns:
            One ``langchain_qdrant.SparseVector`` per text, in order.

        Raises:
            TypeError: ``texts`` is a single string (``""`` too: wrap it as ``[text]``) or
                holds a non-string (named by its position).
        """
        texts = check_texts(texts, method="embed_documents")
        if not texts:
            return []
        out = self.encoder.encode(
            texts,
            heads=Head.SPARSE,
            max_length=self.max_length,
            sparse_top_k=self.sparse_top_k,
            sparse_min_weight=self.sparse_min_weight,
            show_progress=self.show_progress,
        )
        return [_to_langchain(v) for v in out.sparse]

    def embed_query(self, text: str) -> SparseVector:
        """Sparse vector of one query (with the query instruction, if any).

        Args:
            text: The query.

        Returns:
            The query's ``langchain_qdrant.SparseVector``.

        Raises:
            TypeError: ``text`` is not a str.
        """
        check_text(text, method="embed_query")
        out = self.encoder.encode(
            [text],
            heads=Head.SPARSE,
            query=True,
            max_length=self.max_length,
            sparse_top_k=self.sparse_top_k,
            sparse_min_weight=self.sparse_min_weight,
            show_progress=False,
        )
        return _to_langchain(out.sparse[0])


def _to_langchain(vector: M3SparseVector) -> SparseVector:
    return SparseVector(indices=vector.indices.tolist(), values=vector.values.tolist())
