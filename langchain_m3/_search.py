"""Search arguments of the LangChain classes: what a user tunes, checked once, and score scales.

Every search argument left ``None`` (a field, a ``search_kwargs`` entry, a call's keyword)
means "the index's default": ``search=`` given to :meth:`m3kit.store.M3Index.open`, else the
checkpoint's calibrated fusion (``m3kit_search.json``), else FlagEmbedding's published ``m3``
weights for a BGE-M3-shaped model, else RRF with ColBERT rerank (see
:meth:`m3kit.store.M3Index.search_settings`). The rules a value must follow are
:class:`~m3kit.store.SearchSettings`' own; this module only applies them early, so a bad
value fails where it is given rather than at the first search.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Callable
from typing import Any

from m3kit.encoder_inputs import check_query
from m3kit.outputs import Head
from m3kit.store import Fusion, SearchSettings

__all__ = [
    "SEARCH_ARGS",
    "SETTINGS_ARGS",
    "ScoreScale",
    "check_k",
    "check_query",
    "check_setting",
    "relevance_function",
    "scale_of",
    "similarity_relevance",
    "weighted_relevance",
]

#: Search arguments that choose the ranking (:class:`~m3kit.store.SearchSettings`' fields).
SETTINGS_ARGS = frozenset(SearchSettings.NAMES)
#: Search arguments besides ``k`` (``similarity_search*`` and ``as_retriever`` search_kwargs).
SEARCH_ARGS = SETTINGS_ARGS | {"filter", "score_threshold"}


class ScoreScale(str, enum.Enum):
    """What a search's final score is, which decides its relevance score (LangChain's, in
    ``[0, 1]``; :func:`relevance_function`).

    ``SIMILARITY``: a cosine or ColBERT MaxSim in ``[-1, 1]``, or M3's weighted sum of those
    alone (the collection has no sparse vectors, or the sparse weight is 0).
    ``WEIGHTED``: M3's weighted sum with a sparse term, which is unbounded above (a long query
    matching many terms of a passage scores well over 1). ``RANK``: a rank fusion (RRF, DBSF)
    of dense and sparse without rerank, which says nothing about relevance on its own.
    """

    SIMILARITY = "similarity"
    WEIGHTED = "weighted"
    RANK = "rank"


def check_setting(name: str, value: Any) -> Any:
    """``value`` of the search setting ``name`` as :class:`SearchSettings` normalises it.

    ``None`` stays ``None`` (the index's default).

    Raises:
        ValueError: A value :class:`SearchSettings` refuses (its message says why).
        TypeError: ``rerank`` that is not a bool.
    """
    if name not in SETTINGS_ARGS:
        raise ValueError(f"{name!r} is not a search setting; those are {sorted(SETTINGS_ARGS)}")
    if value is None:
        return None
    return getattr(SearchSettings(**{name: value}), name)


def scale_of(settings: SearchSettings, heads: frozenset[Head]) -> ScoreScale:
    """What the final score of a search with ``settings`` on a collection of ``heads`` is."""
    if settings.fusion is Fusion.M3:  # over the weights of the heads that score, summing to 1
        sparse = Head.SPARSE in heads and settings.weights[1] > 0
        return ScoreScale.WEIGHTED if sparse else ScoreScale.SIMILARITY
    if settings.reranks(heads) or Head.SPARSE not in heads:
        return ScoreScale.SIMILARITY
    return ScoreScale.RANK


def check_k(k: Any) -> int:
    """``k`` as an int when it is a positive integer (a numpy one too; a bool is not).

    >>> import numpy as np
    >>> check_k(np.int64(2)), type(check_k(np.int64(2))).__name__
    (2, 'int')
    """
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def similarity_relevance(score: float) -> float:
    """The relevance of a cosine or MaxSim ``s`` in ``[-1, 1]``: ``(1 + s) / 2``, as
    langchain-qdrant's ``QdrantVectorStore`` has it for cosine (float overshoot clipped).

    >>> similarity_relevance(1.0), similarity_relevance(0.5), similarity_relevance(-0.2)
    (1.0, 0.75, 0.4)
    """
    return min(1.0, max(0.0, (1.0 + float(score)) / 2.0))


def weighted_relevance(score: float) -> float:
    """The relevance of M3's weighted sum ``s`` with a sparse term (``s >= -1``, unbounded
    above): ``(1 + s) / 2`` up to 0 (as :func:`similarity_relevance`), ``1 - 1 / (2 (1 + s))``
    above, which tends to 1 as the sparse term grows. Strictly increasing and continuous
    (with its slope) at 0, so distinct scores keep distinct relevances in their order.

    >>> [round(weighted_relevance(s), 4) for s in (-1.0, -0.5, 0.0, 0.6, 1.0, 3.0, 9.0)]
    [0.0, 0.25, 0.5, 0.6875, 0.75, 0.875, 0.95]
    """
    s = float(score)
    if s <= 0.0:
        return max(0.0, (1.0 + s) / 2.0)
    return 1.0 - 0.5 / (1.0 + s)


def relevance_function(
    settings: SearchSettings, heads: frozenset[Head]
) -> Callable[[float], float]:
    """LangChain's relevance of a final score (in ``[0, 1]``, strictly increasing in it) for a
    search with ``settings`` on a collection of ``heads`` (see :class:`ScoreScale`).

    Raises:
        ValueError: The search scores by rank fusion (``rrf`` / ``dbsf`` without ColBERT
            rerank), which is no relevance.
    """
    scale = scale_of(settings, heads)
    if scale is ScoreScale.RANK:
        raise ValueError(
            "relevance scores need a similarity: this search scores by rank fusion "
            f"({settings.fusion.value}) of dense and sparse without ColBERT rerank; use "
            "rerank=True (a ColBERT collection) or fusion='m3'"
        )
    return weighted_relevance if scale is ScoreScale.WEIGHTED else similarity_relevance
