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
from typing import Any

from m3kit.outputs import Head
from m3kit.store import Fusion, M3Index, SearchSettings

__all__ = [
    "SEARCH_ARGS",
    "SETTINGS_ARGS",
    "ScoreScale",
    "check_k",
    "check_setting",
    "clip01",
    "score_scale",
]

#: Search arguments that choose the ranking (:class:`~m3kit.store.SearchSettings`' fields).
SETTINGS_ARGS = frozenset(SearchSettings.NAMES)
#: Search arguments besides ``k`` (``similarity_search*`` and ``as_retriever`` search_kwargs).
SEARCH_ARGS = SETTINGS_ARGS | {"filter", "score_threshold"}


class ScoreScale(str, enum.Enum):
    """What a search's final score is, which decides whether it can be a relevance score.

    ``SIMILARITY``: a cosine or ColBERT MaxSim in ``[-1, 1]``. ``WEIGHTED``: M3's weighted sum
    (dense, sparse, ColBERT; the sparse term is unbounded). ``RANK``: a rank fusion (RRF, DBSF)
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


def score_scale(
    index: M3Index, *, fusion: Fusion | str | None = None, rerank: bool | None = None
) -> ScoreScale:
    """What the final score of ``index.search(fusion=fusion, rerank=rerank)`` is."""
    heads = index.store.heads
    settings = index.search_settings(fusion=fusion, rerank=rerank)
    colbert = settings.reranks(heads)
    if settings.fusion is Fusion.M3:  # a weighted sum, over the weights of the heads that score
        return ScoreScale.WEIGHTED
    if colbert or Head.SPARSE not in heads:
        return ScoreScale.SIMILARITY
    return ScoreScale.RANK


def check_k(k: Any) -> int:
    """``k`` when it is a positive int (a bool is not)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def clip01(score: float) -> float:
    """A score clipped to ``[0, 1]`` (LangChain's relevance score)."""
    return min(1.0, max(0.0, float(score)))
