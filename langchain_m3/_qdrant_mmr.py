"""Maximal marginal relevance for :class:`~langchain_m3.M3QdrantVectorStore` with LangChain's
meaning of ``lambda_mult``.

LangChain's ``lambda_mult`` is the weight of relevance: 1 ranks by similarity alone, 0 gives
the most diverse results (``langchain_core.vectorstores.utils.maximal_marginal_relevance``,
``InMemoryVectorStore``). langchain-qdrant 1.1.0 passes it to Qdrant's ``Mmr.diversity`` as
it is, whose meaning is the reverse (langchain-ai/langchain#39052, open), so
``lambda_mult=1.0`` gave the most diverse results, silently. This override sends
``diversity=1 - lambda_mult`` itself rather than flipping the value before calling the
parent: a later langchain-qdrant that fixes the mapping would otherwise flip it back.
"""

from __future__ import annotations

import math
from typing import Any

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

from langchain_m3._qdrant_filter import check_filter

__all__ = ["QdrantMmr", "check_lambda_mult"]


def check_lambda_mult(lambda_mult: float) -> float:
    """``lambda_mult`` as a float in [0, 1].

    >>> check_lambda_mult(1)
    1.0
    >>> check_lambda_mult(1.5)
    Traceback (most recent call last):
    ...
    ValueError: lambda_mult must be a number in [0, 1] (1: by similarity alone, ...), got 1.5

    Raises:
        ValueError: ``lambda_mult`` is not a number in [0, 1] (NaN included).
    """
    if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, int | float):
        raise ValueError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r}")
    value = float(lambda_mult)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            "lambda_mult must be a number in [0, 1] (1: by similarity alone, 0: most "
            f"diverse), got {lambda_mult!r}"
        )
    return value


class QdrantMmr(QdrantVectorStore):
    """``QdrantVectorStore`` whose MMR takes ``lambda_mult`` as LangChain means it (the other
    MMR methods, sync and async, all end here)."""

    def _before_query_text(self) -> None:
        """Run before a query text is encoded (a subclass checks its embeddings)."""

    def max_marginal_relevance_search(
        self, query: str, *args: Any, **kwargs: Any
    ) -> list[Document]:
        """``QdrantVectorStore.max_marginal_relevance_search``, after
        :meth:`_before_query_text`."""
        self._before_query_text()
        return super().max_marginal_relevance_search(query, *args, **kwargs)

    def max_marginal_relevance_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: models.Filter | None = None,  # as QdrantVectorStore's
        search_params: models.SearchParams | None = None,
        score_threshold: float | None = None,
        consistency: models.ReadConsistency | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents chosen by maximal marginal relevance, with their similarity scores.

        Args:
            embedding: The query's dense vector.
            k: How many documents.
            fetch_k: How many nearest candidates MMR chooses from.
            lambda_mult: Weight of relevance against diversity: 1 ranks by similarity
                alone, 0 gives the most diverse documents (LangChain's meaning).
            filter: Qdrant filter of the candidates.
            search_params: Qdrant search parameters.
            score_threshold: Lowest similarity score returned.
            consistency: Qdrant read consistency.
            **kwargs: Passed to ``QdrantClient.query_points``, as langchain-qdrant does.

        Raises:
            ValueError: ``lambda_mult`` is not in [0, 1].
            TypeError: ``filter`` is not a ``qdrant_client.models.Filter``.
        """
        check_filter(filter)
        diversity = 1.0 - check_lambda_mult(lambda_mult)
        points = self.client.query_points(
            collection_name=self.collection_name,
            query=models.NearestQuery(
                nearest=embedding,
                mmr=models.Mmr(diversity=diversity, candidates_limit=fetch_k),
            ),
            query_filter=filter,
            search_params=search_params,
            limit=k,
            with_payload=True,
            with_vectors=True,
            score_threshold=score_threshold,
            consistency=consistency,
            using=self.vector_name,
            **kwargs,
        ).points
        return [
            (
                self._document_from_point(
                    point,
                    self.collection_name,
                    self.content_payload_key,
                    self.metadata_payload_key,
                ),
                point.score,
            )
            for point in points
        ]
