"""How a hybrid search ranks: the settings every search entry point takes.

:class:`SearchSettings` holds what a user tunes per search: the fusion, the M3 weights, the
ColBERT rerank and the candidate budget. Every search entry point (``M3Index.search``, both
retrievers, both vector stores, ``m3kit search``) takes these; what a call leaves out comes
from the index's defaults, which come from the checkpoint's calibration when it has one.

The calibration a checkpoint carries is
:class:`~m3kit.store.fusion_calibration.FusionCalibration`.

>>> s = SearchSettings(fusion="m3", weights=(0.5, 0.2, 0.3))
>>> s.fusion, s.weights
(<Fusion.M3: 'm3'>, (0.5, 0.2, 0.3))
>>> SearchSettings.from_dict(s.to_dict()) == s
True
>>> s.merged(weights=None, rerank=False).rerank
False
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from m3kit.outputs import Head
from m3kit.scoring import DEFAULT_M3_WEIGHTS
from m3kit.store.records import Fusion

__all__ = [
    "BGE_M3_PUBLISHED",
    "SearchSettings",
    "check_count",
    "check_m3_weights",
    "check_score_threshold",
    "is_bge_m3_architecture",
]


def check_count(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a count (``k``, ``candidates``) that is not a positive int (``True`` is not 1).

    >>> check_count("k", 2.5)
    Traceback (most recent call last):
    ValueError: k must be an int >= 1, not 2.5

    Args:
        name: The argument's name, for the message.
        value: The count given.
        optional: ``None`` is accepted (the default is used).

    Raises:
        ValueError: ``value`` is not an int >= 1 (nor ``None`` when ``optional``).
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name} must be an int >= 1{' or None' if optional else ''}, not {value!r}"
        )


def check_score_threshold(value: object) -> float | None:
    """A search's ``score_threshold`` as a float (``None``: no threshold).

    A NaN threshold kept no hit (no score is ``>=`` NaN) and ``True`` was read as ``1.0``,
    both silently; a string failed only after the search ran.

    >>> check_score_threshold(0.5), check_score_threshold(None), check_score_threshold(-1)
    (0.5, None, -1.0)
    >>> check_score_threshold(float("nan"))
    Traceback (most recent call last):
    ValueError: score_threshold must be a finite number or None, not nan

    Raises:
        ValueError: Not a real number (a bool included), or not finite.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise ValueError(f"score_threshold must be a finite number or None, not {value!r}")
    return float(value)


def check_m3_weights(value: Sequence[float]) -> tuple[float, float, float]:
    """``[dense, sparse, colbert]`` weights of an ``m3`` fusion, checked.

    Raises:
        ValueError: Not three finite numbers ``>= 0``, or all 0.
    """
    try:
        w = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"weights must be three numbers [dense, sparse, colbert], not {value!r}"
        ) from None
    if len(w) != 3:
        raise ValueError(f"weights are [dense, sparse, colbert]; got {len(w)} values")
    if any(not math.isfinite(x) or x < 0 for x in w) or not any(w):
        raise ValueError(f"weights must be finite, >= 0 and not all 0; got {list(w)}")
    return (w[0], w[1], w[2])


@dataclass(frozen=True)
class SearchSettings:
    """The ranking of a hybrid search.

    Attributes:
        fusion: How dense and sparse candidates are combined (``rrf``, ``dbsf`` or ``m3``).
        weights: ``[dense, sparse, colbert]`` of the ``m3`` weighted sum (FlagEmbedding's
            published ``[0.4, 0.2, 0.4]`` by default).
        rerank: Re-score candidates with ColBERT MaxSim (``m3``: include ColBERT in the sum);
            ``None``: when the collection holds ColBERT vectors.
        candidates: Candidates fetched per retriever (dense, sparse) before fusion and rerank;
            ``None``: ``max(4 * k, 50)``. More candidates: better recall, slower queries.

    ``NAMES`` are the settings' names, the arguments every search entry point takes for them:

    >>> from dataclasses import fields
    >>> SearchSettings.NAMES == tuple(f.name for f in fields(SearchSettings))
    True
    """

    NAMES: ClassVar[tuple[str, ...]] = ("fusion", "weights", "rerank", "candidates")

    fusion: Fusion = Fusion.RRF
    weights: tuple[float, float, float] = DEFAULT_M3_WEIGHTS
    rerank: bool | None = None
    candidates: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fusion", Fusion(self.fusion))
        except ValueError:
            raise ValueError(
                f"fusion must be one of {[f.value for f in Fusion]}, not {self.fusion!r}"
            ) from None
        object.__setattr__(self, "weights", check_m3_weights(self.weights))
        if self.rerank is not None and not isinstance(self.rerank, bool):
            raise TypeError(f"rerank must be True, False or None, not {self.rerank!r}")
        check_count("candidates", self.candidates, optional=True)

    def merged(
        self,
        *,
        fusion: Fusion | str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
    ) -> SearchSettings:
        """These settings with the given (non-``None``) values replacing them."""
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("fusion", fusion),
                ("weights", weights),
                ("rerank", rerank),
                ("candidates", candidates),
            )
            if v is not None
        }
        return replace(self, **changes) if changes else self

    def reranks(self, heads: frozenset[Head]) -> bool:
        """Whether a collection holding ``heads`` gets ColBERT (rerank, or in the ``m3`` sum)."""
        return Head.COLBERT in heads and self.rerank is not False

    def m3_weight_total(self, *, dense: bool, sparse: bool, colbert: bool) -> float:
        """Sum of the ``m3`` weights of the heads that score a search (its best possible score).

        An ``m3`` search divides its weights by this sum (:meth:`m3_scoring_weights`), as
        FlagEmbedding's ``compute_score`` does: otherwise a dense-only search would score an
        exact match ``w_dense`` (0.4).

        >>> SearchSettings(fusion="m3").m3_weight_total(dense=True, sparse=False, colbert=False)
        0.4
        """
        wd, ws, wc = self.weights
        return (wd if dense else 0.0) + (ws if sparse else 0.0) + (wc if colbert else 0.0)

    def m3_scoring_weights(
        self, *, dense: bool, sparse: bool, colbert: bool
    ) -> tuple[float, float, float]:
        """The ``m3`` weights of the heads that score a search, divided by their sum.

        A head that does not score gets 0; the others keep their proportions and sum to 1, so
        a search by one head scores that head's own similarity (an exact dense match: 1.0),
        and several heads score FlagEmbedding's renormalised weighted sum.

        >>> s = SearchSettings(fusion="m3")
        >>> s.m3_scoring_weights(dense=True, sparse=False, colbert=False)
        (1.0, 0.0, 0.0)
        >>> [round(w, 3) for w in s.m3_scoring_weights(dense=True, sparse=True, colbert=False)]
        [0.667, 0.333, 0.0]

        Raises:
            ValueError: Every head that scores has weight 0 (every score would be 0).
        """
        total = self.m3_weight_total(dense=dense, sparse=sparse, colbert=colbert)
        if total <= 0:
            flags = (("dense", dense), ("sparse", sparse), ("colbert", colbert))
            used = [name for name, on in flags if on]
            raise ValueError(
                f"m3 weights {list(self.weights)} give every head this search scores with "
                f"({', '.join(used) or 'none'}) weight 0, so every score would be 0: give one "
                "of them a positive weight"
            )
        wd, ws, wc = self.weights
        return (
            wd / total if dense else 0.0,
            ws / total if sparse else 0.0,
            wc / total if colbert else 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion.value,
            "weights": list(self.weights),
            "rerank": self.rerank,
            "candidates": self.candidates,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        unknown = set(data) - {"fusion", "weights", "rerank", "candidates"}
        if unknown:
            raise ValueError(f"unknown search settings {sorted(unknown)}")
        return cls(**dict(data))

    def describe(self) -> str:
        """One line for logs and the CLI."""
        text = self.fusion.value
        if self.fusion is Fusion.M3:
            text += " weights " + "/".join(f"{w:g}" for w in self.weights)
        if self.rerank is not None:
            text += ", rerank " + ("on" if self.rerank else "off")
        if self.candidates is not None:
            text += f", {self.candidates} candidates"
        return text


#: FlagEmbedding's published hybrid ranking for BGE-M3: ``compute_score`` with
#: ``weights_for_different_modes=[0.4, 0.2, 0.4]`` (dense, sparse, ColBERT), the BGE-M3 README.
BGE_M3_PUBLISHED = SearchSettings(fusion=Fusion.M3, weights=DEFAULT_M3_WEIGHTS, rerank=True)


def is_bge_m3_architecture(encoder: Any) -> bool:
    """Whether ``encoder`` is BGE-M3 or a fine-tune of it: an XLM-RoBERTa-large backbone
    (24 layers, hidden 1024, XLM-R's 250,002-token vocabulary) with both M3 heads.

    Such a checkpoint without its own calibration ranks with FlagEmbedding's published
    weights (:data:`BGE_M3_PUBLISHED`): they were fitted to exactly these score scales.
    Other models (e.g. a MiniLM given M3 heads) keep the built-in RRF + ColBERT rerank.
    """
    if encoder.available_heads != frozenset(Head):
        return False
    config = getattr(getattr(getattr(encoder, "model", None), "backbone", None), "config", None)
    if config is None:
        return False
    return (
        getattr(config, "model_type", None) == "xlm-roberta"
        and getattr(config, "num_hidden_layers", None) == 24
        and getattr(config, "hidden_size", None) == 1024
        and getattr(config, "vocab_size", None) == 250_002
    )
