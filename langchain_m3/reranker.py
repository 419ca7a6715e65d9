"""``M3Reranker``: a LangChain document compressor that reranks with BGE-M3's three heads.

Scores each (query, document) pair as FlagEmbedding's ``compute_score`` does (see
:mod:`m3kit.rerank`): by default the weighted ``colbert+sparse+dense`` score with weights
``[0.4, 0.2, 0.4]``. Each distinct document text is encoded once. Use it in a
``ContextualCompressionRetriever`` (from ``langchain-classic`` / ``langchain``) or call
:meth:`M3Reranker.compress_documents` directly.

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> reranker = M3Reranker.from_encoder(enc, top_n=1)
    >>> docs = [Document("Bees dance."), Document("Oxygen has atomic number 8.")]
    >>> best = reranker.compress_documents(docs, "Oxygen has atomic number 8.")
    >>> best[0].page_content, sorted(best[0].metadata)
    ('Oxygen has atomic number 8.', ['relevance_score'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from langchain_m3._encoder_model import EncoderModel
from m3kit.errors import missing_extra
from m3kit.field_types import WholeNumber
from m3kit.rerank import M3Reranker as CoreReranker
from m3kit.rerank import RerankConfig, RerankMode
from m3kit.scoring import DEFAULT_M3_WEIGHTS

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-core", "langchain", e) from e

__all__ = ["RELEVANCE_SCORE_KEY", "M3Reranker"]

RELEVANCE_SCORE_KEY = "relevance_score"
"""Metadata key of the rerank score (the key LangChain's other rerankers use). The value is the
raw ``compute_score`` score, not a probability in [0, 1] as Cohere's: dense and ColBERT scores
lie in [-1, 1], the sparse score is >= 0 and unbounded, so the default M3 score can exceed 1."""


class M3Reranker(EncoderModel, BaseDocumentCompressor):
    """Rerank documents by their M3 score against the query; keep the ``top_n`` best.

    Build it from a checkpoint (``model_name_or_path`` and the other loading fields), or share a
    loaded model: ``M3Reranker.from_encoder(encoder, top_n=5)``. Returned documents are copies
    with ``metadata["relevance_score"]`` set (same ``id``); the input is not modified. The score
    is ``mode``'s raw score (:data:`RELEVANCE_SCORE_KEY`), not mapped into [0, 1]: compare it
    with thresholds measured on the same ``mode`` and ``weights``.

    ``top_n`` is read by each call: assign it, or ``model_copy(update={"top_n": n})`` (sharing
    the model). The other fields are read when the reranker is built and refuse both.
    """

    # Not frozen as a whole (EncoderModel is): top_n is per call; load_time_fields() lists the
    # rest, which LoadTimeFields refuses to assign or model_copy(update=...).
    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), frozen=False, validate_assignment=True
    )

    top_n: WholeNumber | None = Field(default=3, ge=1)
    """How many documents to return (``None``: all, reordered)."""
    mode: RerankMode = RerankMode.M3
    """The score that orders documents: ``dense``, ``sparse``, ``colbert``, ``sparse+dense`` or
    ``colbert+sparse+dense`` (a dense-only checkpoint needs ``dense``)."""
    weights: tuple[float, float, float] = DEFAULT_M3_WEIGHTS
    """``[dense, sparse, colbert]`` weights of the combined scores (normalised by their sum)."""
    max_query_length: WholeNumber | None = Field(default=None, ge=2)
    """Longest query in tokens (default: FlagEmbedding's 512, or the model's ``max_length`` if
    shorter; a longer one than the model's is refused)."""
    max_passage_length: WholeNumber | None = Field(default=None, ge=2)
    """Longest document in tokens (default: the model's ``max_length``; a longer one is
    refused)."""
    use_query_instruction: bool = False
    """Prefix queries with the model's query instruction (``compute_score`` adds none)."""

    _reranker: CoreReranker = PrivateAttr()

    @classmethod
    def load_time_fields(cls) -> frozenset[str]:
        """Every field but ``top_n`` (read by each call)."""
        return frozenset(cls.model_fields) - {"top_n"}

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, weights: tuple[float, float, float]) -> tuple[float, float, float]:
        RerankConfig(weights=weights)  # raises ValueError naming the problem
        return weights

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._reranker = CoreReranker(
            self.encoder,
            RerankConfig(
                mode=self.mode,
                weights=self.weights,
                max_query_length=self.max_query_length,
                max_passage_length=self.max_passage_length,
                query_instruction=self.use_query_instruction,
            ),
        )

    @property
    def reranker(self) -> CoreReranker:
        """The :class:`m3kit.rerank.M3Reranker` doing the scoring."""
        return self._reranker

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_n`` documents with the highest score, best first, score in metadata.

        Raises:
            TypeError: ``query`` is not a string or an item is not a ``Document``.
        """
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, not a Document")
        if not docs:
            return []
        ranked = self._reranker.rerank(
            query,
            [d.page_content for d in docs],
            top_n=self.top_n,
            show_progress=self.show_progress,
        )
        return [
            docs[r.index].model_copy(
                update={"metadata": {**docs[r.index].metadata, RELEVANCE_SCORE_KEY: r.score}}
            )
            for r in ranked
        ]
