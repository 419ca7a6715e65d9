"""The search half of :class:`~langchain_m3.M3VectorStore`: similarity search, scores, retrievers.

Split from :mod:`langchain_m3.vectorstore`: :class:`VectorStoreSearch` is the base class of
``M3VectorStore`` holding its search methods (``similarity_search*``, :meth:`search_settings`,
:meth:`score_scale`, relevance scores, ``as_retriever`` / ``as_m3_retriever``);
``M3VectorStore.__init__`` sets the attributes they read. Search arguments: see
:mod:`langchain_m3.vectorstore`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from langchain_m3._documents import VECTOR_STORE_SHOWN, document_filter, hit_document
from langchain_m3._search import (
    SEARCH_ARGS,
    ScoreScale,
    check_k,
    check_query,
    relevance_function,
    scale_of,
)
from m3kit.outputs import Head
from m3kit.store import Fusion, Hit, M3Index, SearchSettings
from m3kit.store.filters import to_filter
from m3kit.store.index_search import dense_query
from m3kit.store.search_settings import check_score_threshold

if TYPE_CHECKING:
    from langchain_m3.retriever import M3Retriever

__all__ = ["VectorStoreSearch", "check_no_more", "check_search_values"]

_NO_MMR = (
    "M3VectorStore has no max_marginal_relevance_search: it does not read stored vectors "
    "back; use similarity search (search_type='similarity')"
)


class VectorStoreSearch(VectorStore):
    """The search methods of :class:`~langchain_m3.M3VectorStore` (its base; it sets these).

    Attributes:
        fusion: Default fusion (``None``: the index's).
        rerank: Default ColBERT rerank (``None``: the index's).
        weights: Default ``[dense, sparse, colbert]`` of the ``m3`` fusion (``None``: the
            index's).
        candidates: Default candidates per retriever (``None``: the index's).
    """

    _index: M3Index
    fusion: Fusion | None
    rerank: bool | None
    weights: tuple[float, float, float] | None
    candidates: int | None

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best chunks for ``query`` (search arguments: see the module docstring)."""
        return [hit_document(h) for h in self._search(query, k, kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search` with each chunk's final score (see :class:`ScoreScale`)."""
        return [(hit_document(h), h.score) for h in self._search(query, k, kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Dense search with a query vector (``filter`` and ``score_threshold`` apply)."""
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search_by_vector` with each chunk's cosine similarity.

        Raises:
            ValueError: ``embedding`` is not a vector of the collection's dense size, or is
                all zeros or not finite (it has no direction: every document would score 0).
        """
        # checked only: the vector is searched as given (Qdrant's cosine normalises it)
        dense_query(embedding, self._index.store.schema.dense_dim, "the query embedding")
        flt = document_filter(kwargs.pop("filter", None), VECTOR_STORE_SHOWN)
        threshold = kwargs.pop("score_threshold", None)
        check_no_more(kwargs, "similarity_search_by_vector")
        self._index.check_encoder()  # the store checks its holder's, maybe another index's
        hits = self._index.store.query(
            dense=embedding,
            k=check_k(k),
            rerank=False,
            filter=flt,
            score_threshold=threshold,
        )
        return [(hit_document(h), h.score) for h in hits]

    def search_settings(
        self,
        *,
        fusion: Fusion | str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
    ) -> SearchSettings:
        """The ranking a search with these arguments uses (``None``: the store's, else the
        index's defaults); a misspelt name is a ``TypeError``, not the default."""
        given = {"fusion": fusion, "weights": weights, "rerank": rerank, "candidates": candidates}
        return self._index.search_settings(**self._index.layered_settings(given, self._defaults()))

    def _ranking_of(self, kwargs: Mapping[str, Any]) -> SearchSettings:
        """:meth:`search_settings` of a search's keyword arguments (its ranking ones)."""
        return self.search_settings(**{n: kwargs.get(n) for n in SearchSettings.NAMES})

    def score_scale(
        self,
        *,
        fusion: Fusion | str | None = None,
        rerank: bool | None = None,
        weights: Sequence[float] | None = None,
    ) -> ScoreScale:
        """What the final score of a search with these arguments is (the store's defaults
        where ``None``), which decides its relevance score (see
        :meth:`_similarity_search_with_relevance_scores`)."""
        settings = self.search_settings(fusion=fusion, rerank=rerank, weights=weights)
        return scale_of(settings, self._index.store.heads)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """The relevance of a final score of a search with the store's defaults (see
        :meth:`_similarity_search_with_relevance_scores`).

        Raises:
            ValueError: The defaults score by rank fusion (no relevance).
        """
        return relevance_function(self.search_settings(), self._index.store.heads)

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The hits of :meth:`similarity_search_with_score` with relevance scores in ``[0, 1]``.

        The relevance is a fixed, strictly increasing function of the final score ``s`` (so it
        keeps the order of the results, and distinct scores stay distinct; a
        ``score_threshold`` of LangChain's applies to it, means the same for every query, and
        is not the threshold on ``s`` that ``similarity_search(score_threshold=...)`` takes):

        * a similarity (ColBERT MaxSim or cosine in ``[-1, 1]``; also ``m3`` without a sparse
          term): ``(1 + s) / 2``, langchain-qdrant's relevance of a cosine (an exact match
          1.0, an unrelated text about 0.5, a relevance threshold ``t`` keeps ``s >= 2t - 1``);
        * ``m3`` with a sparse term (unbounded above): ``(1 + s) / 2`` up to ``s = 0``, then
          ``1 - 1 / (2 (1 + s))`` (0.75 at ``s = 1``, 0.875 at 3; 1 only in the limit).

        Raises:
            ValueError: The search would score by rank fusion (``rrf`` / ``dbsf`` without
                ColBERT rerank), which is no relevance.
        """
        relevance = relevance_function(self._ranking_of(kwargs), self._index.store.heads)
        hits = self.similarity_search_with_score(query, k, **kwargs)
        return [(d, relevance(s)) for d, s in hits]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`_similarity_search_with_relevance_scores` in a worker thread."""
        return await asyncio.to_thread(
            self._similarity_search_with_relevance_scores, query, k, **kwargs
        )

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """Not supported: the stored vectors are not read back, which MMR needs.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(_NO_MMR)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Not supported, as :meth:`max_marginal_relevance_search`.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(_NO_MMR)

    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """A ``VectorStoreRetriever``: ``search_type`` ``"similarity"`` (default) or
        ``"similarity_score_threshold"``; ``search_kwargs`` ``k``, ``filter``, ``fusion``,
        ``weights``, ``rerank``, ``candidates``, ``score_threshold``.

        Raises:
            ValueError: An unknown search argument, a bad one (``k``, ``filter``,
                ``score_threshold``, a ranking one: ``weights``...), ``search_type="mmr"``,
                or ``"similarity_score_threshold"`` with a search that scores by rank fusion
                (no relevance; also refused when it searches, as the store's defaults may
                change after).
            TypeError: A ``filter`` that is neither a mapping nor a qdrant ``Filter``.
        """
        check_no_more_fields(kwargs)
        search_type = kwargs.get("search_type", "similarity")
        if search_type == "mmr":
            raise ValueError("M3VectorStore does not support search_type='mmr' (no MMR search)")
        search_kwargs = kwargs.get("search_kwargs") or {}
        unknown = set(search_kwargs) - SEARCH_ARGS - {"k"}
        if unknown:
            raise ValueError(
                f"unknown search_kwargs {sorted(unknown)}; M3VectorStore takes "
                f"{sorted(SEARCH_ARGS | {'k'})}"
            )
        settings = self._ranking_of(search_kwargs)  # a bad value fails here, not later
        check_search_values(search_kwargs)
        if search_kwargs.get("rerank") and Head.COLBERT not in self._index.store.heads:
            raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
        if search_type == "similarity_score_threshold":
            relevance_function(settings, self._index.store.heads)  # rank fusion: refused
        tags = [*(kwargs.pop("tags", None) or []), *self._get_retriever_tags()]
        return _M3VectorStoreRetriever(vectorstore=self, tags=tags, **kwargs)

    def as_m3_retriever(self, **defaults: Any) -> M3Retriever:
        """An :class:`~langchain_m3.M3Retriever` on the same index (its own defaults: ``k``,
        ``fusion``, ``weights``, ``rerank``, ``candidates``, ``filter``, ``score_threshold``;
        unset ranking ones are this store's; results carry ``score`` and ``doc_id``)."""
        from langchain_m3.retriever import M3Retriever

        # the store's weights are left out where the retriever's own fusion / rerank picks
        # rrf / dbsf, as a call's would leave them out
        given = {name: defaults.get(name) for name in SearchSettings.NAMES}
        defaults.update(self._index.layered_settings(given, self._defaults()))
        return M3Retriever(index=self._index, **defaults)

    def _defaults(self) -> dict[str, Any]:
        """The store's ranking defaults (``None``: the index's), by search argument."""
        return {
            "fusion": self.fusion,
            "weights": self.weights,
            "rerank": self.rerank,
            "candidates": self.candidates,
        }

    def _search(self, query: str, k: int, kwargs: dict[str, Any]) -> list[Hit]:
        """The index's hits for ``query`` with a call's search arguments over the defaults."""
        unknown = set(kwargs) - SEARCH_ARGS
        if unknown:
            raise TypeError(
                f"unknown search argument(s) {sorted(unknown)}; M3VectorStore takes k and "
                f"{sorted(SEARCH_ARGS)}"
            )
        return self._index.search(
            check_query(query),
            k=check_k(k),
            filter=document_filter(kwargs.get("filter"), VECTOR_STORE_SHOWN),
            score_threshold=kwargs.get("score_threshold"),
            **self._index.layered_settings(kwargs, self._defaults()),
        )


class _M3VectorStoreRetriever(VectorStoreRetriever):
    """LangChain's ``VectorStoreRetriever``, with ``search_kwargs``' ranking values held as
    the retriever's own: weights held there are left out when a call's own ``fusion`` /
    ``rerank`` picks a rank fusion, as those of ``M3Retriever`` and ``M3VectorStore`` are
    (LangChain merges a call's arguments over ``search_kwargs``, so held weights met the
    call's ``fusion="rrf"`` as the call's own: an error)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return super()._get_relevant_documents(
            query, run_manager=run_manager, **self._over_held(kwargs)
        )

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await super()._aget_relevant_documents(
            query, run_manager=run_manager, **self._over_held(kwargs)
        )

    def _over_held(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        call = {n: kwargs[n] for n in SearchSettings.NAMES if n in kwargs}
        if not call:
            return kwargs
        store = self.vectorstore
        assert isinstance(store, VectorStoreSearch)
        index = store._index
        held = index.layered_settings(self.search_kwargs, store._defaults())
        return {**kwargs, **index.layered_settings(call, held)}


#: What ``as_retriever`` passes on to ``VectorStoreRetriever`` (the store is its own).
_RETRIEVER_FIELDS = frozenset(VectorStoreRetriever.model_fields) - {"vectorstore"}


def check_no_more_fields(kwargs: Mapping[str, Any]) -> None:
    """Refuse an ``as_retriever`` argument ``VectorStoreRetriever`` has no field for: it
    ignored them, so ``as_retriever(k=1, filter=...)`` searched 4 unfiltered hits.

    Raises:
        ValueError: Such an argument (a search argument: named, to go in ``search_kwargs``).
    """
    unknown = sorted(set(kwargs) - _RETRIEVER_FIELDS)
    if not unknown:
        return
    searched = [n for n in unknown if n in SEARCH_ARGS | {"k"}]
    hint = f"; give {searched} in search_kwargs={{...}}" if searched else ""
    raise ValueError(
        f"unknown as_retriever argument(s) {unknown} (it takes {sorted(_RETRIEVER_FIELDS)})" + hint
    )


def check_search_values(search_kwargs: Mapping[str, Any]) -> None:
    """Refuse the ``k``, ``filter`` or ``score_threshold`` of ``search_kwargs`` that a search
    would refuse (checked where a retriever is built, as ``M3Retriever`` checks its own).

    Raises:
        ValueError: ``k`` is not a positive int, ``filter`` an empty mapping or one with a
            value no filter takes, or ``score_threshold`` not a finite number.
        TypeError: ``filter`` is neither a mapping nor a qdrant ``Filter``.
    """
    if "k" in search_kwargs:
        check_k(search_kwargs["k"])
    to_filter(document_filter(search_kwargs.get("filter"), VECTOR_STORE_SHOWN))
    check_score_threshold(search_kwargs.get("score_threshold"))


def check_no_more(kwargs: dict[str, Any], method: str) -> None:
    """Refuse keyword arguments ``method`` did not take (what is left of its ``**kwargs``).

    Raises:
        TypeError: ``kwargs`` is not empty.
    """
    if kwargs:
        raise TypeError(f"{method}() got unexpected argument(s) {sorted(kwargs)}")
