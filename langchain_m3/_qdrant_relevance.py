"""Relevance scores of :class:`~langchain_m3.M3QdrantVectorStore`: dense mode only.

langchain-qdrant 1.1.0 maps every raw score with the relevance function of the collection's
distance (cosine: ``(s + 1) / 2``) whatever the retrieval mode. In hybrid mode a score is the
rank fusion of the dense and sparse hits (RRF unless ``hybrid_fusion`` says otherwise), which
says where a hit ranks, not how similar it is; in sparse mode it is a dot product of sparse
weights, with no fixed scale. ``similarity_search_with_relevance_scores`` and
``as_retriever(search_type="similarity_score_threshold")`` then filtered on a number that means
nothing, silently. As :class:`~langchain_m3.M3VectorStore` does for rank fusion, those modes
refuse relevance scores instead. LangChain's relevance searches (sync and async, and so the
threshold retriever's ``invoke`` / ``ainvoke``) select the function before they search, so the
refusal comes before any query, with the retrieval mode of that call; ``as_retriever`` refuses
a threshold retriever in those modes where it is built (the search-time check stays, as
``retrieval_mode`` may change after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.vectorstores import VectorStoreRetriever
from langchain_qdrant import QdrantVectorStore, RetrievalMode

__all__ = ["QdrantRelevance", "no_relevance_message"]

_SCORES = {
    RetrievalMode.HYBRID: "the rank fusion of its dense and sparse hits (RRF by default)",
    RetrievalMode.SPARSE: "a dot product of sparse weights, which has no fixed scale",
}


def no_relevance_message(mode: RetrievalMode) -> str:
    """Why ``mode`` has no relevance scores, and what to use instead.

    >>> no_relevance_message(RetrievalMode.SPARSE)[:58]
    'RetrievalMode.SPARSE scores a hit by a dot product of spar'
    """
    return (
        f"RetrievalMode.{mode.name} scores a hit by {_SCORES[mode]}: it has no relevance in "
        "[0, 1], so similarity_search_with_relevance_scores and "
        "as_retriever(search_type='similarity_score_threshold') are refused; use "
        "similarity_search_with_score for the raw scores (or RetrievalMode.DENSE, whose "
        "relevance is the distance's)"
    )


class QdrantRelevance(QdrantVectorStore):
    """``QdrantVectorStore`` whose relevance scores exist in dense mode only."""

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """langchain-qdrant's relevance function of the distance, in dense mode.

        Raises:
            ValueError: The store is in hybrid or sparse mode, whose scores are no
                similarity of a known scale.
        """
        mode = self.retrieval_mode
        if mode in _SCORES:
            raise ValueError(no_relevance_message(mode))
        return super()._select_relevance_score_fn()

    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """LangChain's ``VectorStoreRetriever`` (same arguments), refusing
        ``search_type="similarity_score_threshold"`` in a mode without relevance scores.

        Raises:
            ValueError: A threshold retriever while the store is in hybrid or sparse mode.
        """
        if kwargs.get("search_type") == "similarity_score_threshold":
            self._select_relevance_score_fn()  # raises in a mode without relevance
        return super().as_retriever(**kwargs)
