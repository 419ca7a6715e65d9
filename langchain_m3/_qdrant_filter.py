"""The ``filter=`` of :class:`~langchain_m3.M3QdrantVectorStore`'s searches, checked.

langchain-qdrant's ``QdrantVectorStore`` takes a ``qdrant_client.models.Filter`` on its own
payload layout (the document's metadata under ``metadata.``) and passes it on unchecked: the
``{key: value}`` mapping :class:`~langchain_m3.M3VectorStore` takes failed deep inside it
(``AttributeError: 'dict' object has no attribute 'must'`` in dense mode, a pydantic error
about ``Prefetch`` in hybrid mode), naming neither the argument nor the fix.
"""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

__all__ = ["QdrantFilterCheck", "check_filter"]


def check_filter(value: Any) -> None:
    """Refuse a ``filter=`` that is not ``None`` or a ``qdrant_client.models.Filter``.

    >>> check_filter(None)
    >>> check_filter({"lang": "en"})
    Traceback (most recent call last):
    ...
    TypeError: M3QdrantVectorStore filters as langchain-qdrant's QdrantVectorStore: ...

    Raises:
        TypeError: Names the type given and the form to use.
    """
    if value is not None and not isinstance(value, models.Filter):
        raise TypeError(
            "M3QdrantVectorStore filters as langchain-qdrant's QdrantVectorStore: filter= is a "
            f"qdrant_client.models.Filter on the payload (metadata under 'metadata.'), not "
            f"{type(value).__name__} (e.g. models.Filter(must=[models.FieldCondition("
            "key='metadata.lang', match=models.MatchValue(value='en'))])); "
            "langchain_m3.M3VectorStore takes {key: value} mappings"
        )


class QdrantFilterCheck(QdrantVectorStore):
    """``QdrantVectorStore`` whose search by vector checks its ``filter=`` (the search by text
    and MMR check theirs in :class:`~langchain_m3.M3QdrantVectorStore` /
    :class:`~langchain_m3._qdrant_mmr.QdrantMmr`)."""

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``QdrantVectorStore.similarity_search_with_score_by_vector`` (which
        ``similarity_search_by_vector`` runs), its ``filter`` checked.

        Raises:
            TypeError: ``filter`` is not a ``qdrant_client.models.Filter``.
        """
        check_filter(args[1] if len(args) > 1 else kwargs.get("filter"))
        return super().similarity_search_with_score_by_vector(  # type: ignore[no-any-return]
            embedding, *args, **kwargs
        )
