"""Changes to an index's default ranking that keep the rest of it: :class:`SearchOverrides`.

``M3Index.open(..., search=SearchSettings(candidates=200))`` replaces the whole default ranking:
``SearchSettings``' other fields have defaults of their own (RRF), so a checkpoint's calibrated
fusion (or FlagEmbedding's published weights for a BGE-M3-shaped model) was dropped by a call
meant to change the candidate budget only. ``search=SearchOverrides(candidates=200)`` changes
what it names and keeps the rest of the default; fields left ``None`` are not changed.

>>> from m3kit.store.search_settings import SearchSettings
>>> calibrated = SearchSettings(fusion="m3", weights=(0.3, 0.2, 0.5), rerank=True)
>>> SearchOverrides(candidates=200).over(calibrated).describe()
'm3 weights 0.3/0.2/0.5, rerank on, 200 candidates'
>>> SearchOverrides(weights=(0.5, 0.5, 0.0)).over(SearchSettings())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: weights [0.5, 0.5, 0.0] set the m3 weighted sum, but ... fuses with 'rrf', ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from m3kit.store.records import Fusion
from m3kit.store.search_settings import SearchSettings

__all__ = ["SearchOverrides"]


@dataclass(frozen=True)
class SearchOverrides:
    """Settings that replace only themselves in an index's default ranking.

    Attributes:
        fusion: ``rrf``, ``dbsf`` or ``m3`` (``None``: the default's).
        weights: ``[dense, sparse, colbert]`` of the ``m3`` sum (``None``: the default's).
        rerank: ColBERT rerank on or off (``None``: the default's).
        candidates: Candidates per retriever (``None``: the default's).

    Raises:
        ValueError: A bad setting (the messages of :class:`SearchSettings`).
    """

    fusion: Fusion | str | None = None
    weights: Sequence[float] | None = None
    rerank: bool | None = None
    candidates: int | None = None

    def __post_init__(self) -> None:
        checked = SearchSettings().merged(  # every setting checked as SearchSettings checks it
            fusion=self.fusion, weights=self.weights, rerank=self.rerank, candidates=self.candidates
        )
        if self.fusion is not None:
            object.__setattr__(self, "fusion", checked.fusion)
        if self.weights is not None:
            object.__setattr__(self, "weights", checked.weights)

    def over(self, default: SearchSettings) -> SearchSettings:
        """``default`` with the settings given here replacing its own.

        Raises:
            ValueError: ``weights`` given while the result fuses with ``rrf`` or ``dbsf``
                (they would play no part).
        """
        merged = default.merged(
            fusion=self.fusion, weights=self.weights, rerank=self.rerank, candidates=self.candidates
        )
        if self.weights is not None and merged.fusion is not Fusion.M3:
            raise ValueError(
                f"weights {list(merged.weights)} set the m3 weighted sum, but this index's "
                f"default fuses with {merged.fusion.value!r}, which does not use them: give "
                "fusion='m3' too, or leave weights unset"
            )
        return merged

    def describe(self) -> str:
        """One line for logs: the settings given."""
        given = {
            "fusion": None if self.fusion is None else Fusion(self.fusion).value,
            "weights": None if self.weights is None else "/".join(f"{w:g}" for w in self.weights),
            "rerank": self.rerank,
            "candidates": self.candidates,
        }
        return ", ".join(f"{k} {v}" for k, v in given.items() if v is not None) or "nothing"
