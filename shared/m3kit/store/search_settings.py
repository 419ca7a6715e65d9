"""How a hybrid search ranks, and the ranking a checkpoint was calibrated for.

:class:`SearchSettings` holds what a user tunes per search: the fusion, the M3 weights, the
ColBERT rerank and the candidate budget. Every search entry point (``M3Index.search``, both
retrievers, both vector stores, ``m3kit search``) takes these; what a call leaves out comes
from the index's defaults, which come from the checkpoint's calibration when it has one.

:class:`FusionCalibration` is that calibration: the best settings measured on a validation
set (see :func:`m3kit.store.calibration.calibrate_fusion`), one for a collection with ColBERT
vectors and one for dense + sparse alone, saved beside the weights as ``m3kit_search.json``
with the digest of the weights it was measured on and the encoder's other settings that
decide its scores (tokenizer, pooling, ``max_length``, query instruction, heads, sizes and
``config.json``'s architecture, :data:`CALIBRATED_ENCODER_FIELDS`). A file left beside other
weights, or opened with the same weights loaded otherwise (``pooling="mean"``, another query
instruction or ``max_length``), is ignored with a warning naming what differs.

>>> s = SearchSettings(fusion="m3", weights=(0.5, 0.2, 0.3))
>>> s.fusion, s.weights
(<Fusion.M3: 'm3'>, (0.5, 0.2, 0.3))
>>> SearchSettings.from_dict(s.to_dict()) == s
True
>>> s.merged(weights=None, rerank=False).rerank
False
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from m3kit.checkpoint import SEARCH_FILE
from m3kit.fingerprint import EncoderFingerprint
from m3kit.outputs import Head
from m3kit.scoring import DEFAULT_M3_WEIGHTS
from m3kit.store.records import Fusion
from m3kit.store.sparse_cut import SparseCut

__all__ = [
    "BGE_M3_PUBLISHED",
    "CALIBRATED_ENCODER_FIELDS",
    "SEARCH_FILE",
    "FusionCalibration",
    "SearchSettings",
    "calibrated_encoder_identity",
    "check_count",
    "check_m3_weights",
    "check_score_threshold",
    "is_bge_m3_architecture",
]

logger = logging.getLogger(__name__)

_FORMAT = 1

#: The settings groups of ``m3kit_search.json`` (always written, ``null`` for none).
_GROUPS = frozenset({"all_heads", "dense_sparse"})
#: Every key ``m3kit_search.json`` has held (some absent from older files).
_FILE_KEYS = _GROUPS | {
    "format_version",
    "weights_digest",
    "metric",
    "queries",
    "scores",
    "p_values",
    "encoder_identity",
    "sparse_cut",
}

#: What besides the weights decides the scores a calibration was measured on: the
#: :class:`~m3kit.fingerprint.EncoderFingerprint` identity fields other than ``weights``.
CALIBRATED_ENCODER_FIELDS = tuple(f for f in EncoderFingerprint.IDENTITY_FIELDS if f != "weights")


def calibrated_encoder_identity(fingerprint: EncoderFingerprint) -> dict[str, Any]:
    """The :data:`CALIBRATED_ENCODER_FIELDS` of ``fingerprint`` as plain JSON values (what a
    calibration records as :attr:`FusionCalibration.encoder_identity`)."""
    return _plain({f: getattr(fingerprint, f) for f in CALIBRATED_ENCODER_FIELDS})


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """JSON types only (tuples as lists), so a recorded identity equals itself once loaded."""
    out: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _difference(name: str, then: Any, now: Any) -> str:
    """One difference for a warning; the architecture (a JSON object) by the keys that differ.

    >>> _difference("pooling", "cls", "mean")
    "pooling 'cls' calibrated, 'mean' now"
    >>> _difference("architecture", '{"a":1,"b":2}', '{"a":1,"b":3}')
    'architecture b 2 calibrated, 3 now'
    """
    if name == "architecture" and isinstance(then, str) and isinstance(now, str):
        try:
            old, new = json.loads(then), json.loads(now)
        except ValueError:
            old = new = None
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            return f"{name} " + ", ".join(
                f"{k} {_short(old.get(k))} calibrated, {_short(new.get(k))} now" for k in keys
            )
    return f"{name} {_short(then)} calibrated, {_short(now)} now"


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


@dataclass(frozen=True)
class FusionCalibration:
    """Search settings measured best for one model on a validation set.

    Attributes:
        all_heads: For a collection with ColBERT vectors.
        dense_sparse: For a collection with dense and sparse vectors only (what the
            frameworks' own Qdrant stores hold), or with ``rerank=False``.
        weights_digest: The encoder's weights digest
            (:attr:`~m3kit.fingerprint.EncoderFingerprint.weights`) it was measured on.
        metric: The metric maximised (``"ndcg@10"``).
        queries: Validation queries it was measured on.
        scores: ``{candidate description: metric}`` of every setting tried (for reports).
        encoder_identity: The encoder's other settings that decide its scores
            (:func:`calibrated_encoder_identity`: tokenizer, pooling, ``max_length``, query
            instruction, heads, sizes, architecture) as it was measured; the calibration is
            used only for an encoder that has them too. ``None`` in a file written before
            m3kit recorded them: matched on the weights alone.
        p_values: ``{"all heads" | "dense+sparse": p}``: the sign-flip test's p-value of the
            best setting's gain over RRF, for each group where it was tested (for reports;
            a group is absent when its best gained less than ``min_gain``, or when the test
            was off, ``alpha=1``).
        sparse_cut: The sparse cut of the collection it was measured in (a file written
            before m3kit recorded it: none, as every calibration then was); an index with
            another cut warns (:func:`~m3kit.store.sparse_cut.calibration_cut_warning`).
    """

    all_heads: SearchSettings | None
    dense_sparse: SearchSettings | None
    weights_digest: str
    metric: str = "ndcg@10"
    queries: int = 0
    scores: Mapping[str, float] = field(default_factory=dict)
    encoder_identity: Mapping[str, Any] | None = None
    p_values: Mapping[str, float] = field(default_factory=dict)
    sparse_cut: SparseCut = field(default_factory=SparseCut)

    def settings_for(self, heads: frozenset[Head], rerank: bool | None = None) -> SearchSettings:
        """The calibrated settings for a collection holding ``heads`` (and a rerank choice).

        A collection without sparse vectors has nothing to fuse: its settings keep only the
        ColBERT rerank choice.
        """
        colbert = Head.COLBERT in heads and rerank is not False
        chosen = self.all_heads if colbert else self.dense_sparse
        if chosen is None:
            chosen = self.dense_sparse if colbert else self.all_heads
        if chosen is None:  # pragma: no cover - __post_init__ forbids both None
            return SearchSettings()
        if Head.SPARSE not in heads:
            return SearchSettings(rerank=chosen.rerank, candidates=chosen.candidates)
        return chosen

    def __post_init__(self) -> None:
        if self.all_heads is None and self.dense_sparse is None:
            raise ValueError("a calibration needs settings for at least one set of heads")
        if self.encoder_identity is not None:
            if not isinstance(self.encoder_identity, Mapping):
                raise TypeError(
                    f"encoder_identity must be a mapping, not {type(self.encoder_identity)}"
                )
            object.__setattr__(self, "encoder_identity", _plain(self.encoder_identity))
        if not isinstance(self.sparse_cut, SparseCut):
            raise TypeError(f"sparse_cut must be a SparseCut, not {type(self.sparse_cut)}")

    def encoder_differences(self, fingerprint: EncoderFingerprint) -> list[tuple[str, Any, Any]]:
        """``(field, value calibrated on, value of fingerprint)`` for every setting in
        :attr:`encoder_identity` that ``fingerprint`` does not share (the weights aside).

        Empty when nothing was recorded (an older file), and ``architecture`` is compared only
        when both have it (as :meth:`EncoderFingerprint.differences` does).
        """
        if self.encoder_identity is None:
            return []
        now = calibrated_encoder_identity(fingerprint)
        out = []
        for name in CALIBRATED_ENCODER_FIELDS:
            if name not in self.encoder_identity:
                continue
            then = self.encoder_identity[name]
            if name == "architecture" and (then is None or now[name] is None):
                continue
            if then != now[name]:
                out.append((name, then, now[name]))
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``m3kit_search.json`` into the checkpoint folder ``folder``."""
        path = Path(folder) / SEARCH_FILE
        data = {
            "format_version": _FORMAT,
            "weights_digest": self.weights_digest,
            "metric": self.metric,
            "queries": self.queries,
            "all_heads": None if self.all_heads is None else self.all_heads.to_dict(),
            "dense_sparse": None if self.dense_sparse is None else self.dense_sparse.to_dict(),
            "scores": dict(self.scores),
            "p_values": dict(self.p_values),
            "encoder_identity": (
                None if self.encoder_identity is None else dict(self.encoder_identity)
            ),
            "sparse_cut": self.sparse_cut.to_dict(),
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FusionCalibration | None:
        """The calibration saved in ``folder``; ``None`` when it has none.

        Raises:
            ValueError: The file exists but is not a calibration this version reads (the
                message names the file).
        """
        path = Path(folder) / SEARCH_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != _FORMAT:
                raise ValueError(f"format_version {data.get('format_version')!r} != {_FORMAT}")
            # every file ever written holds both groups (null where the model has no such
            # heads) and no other keys: a group missing or misspelled was read as "none", so a
            # ColBERT collection fell back to the dense + sparse settings, rerank off
            missing = sorted(_GROUPS - set(data))
            unknown = sorted(set(data) - _FILE_KEYS)
            if missing or unknown:
                raise ValueError(
                    ", ".join(
                        ([f"missing {missing}"] if missing else [])
                        + ([f"unknown keys {unknown}"] if unknown else [])
                    )
                )

            def settings(key: str) -> SearchSettings | None:
                raw = data.get(key)
                return None if raw is None else SearchSettings.from_dict(raw)

            return cls(
                all_heads=settings("all_heads"),
                dense_sparse=settings("dense_sparse"),
                weights_digest=str(data["weights_digest"]),
                metric=str(data.get("metric", "ndcg@10")),
                queries=int(data.get("queries", 0)),
                scores={str(k): float(v) for k, v in dict(data.get("scores", {})).items()},
                encoder_identity=data.get("encoder_identity"),
                p_values={str(k): float(v) for k, v in dict(data.get("p_values", {})).items()},
                sparse_cut=SparseCut.from_record(data.get("sparse_cut", SparseCut().to_dict())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path} is not a search calibration m3kit reads ({exc}); delete it or "
                "calibrate again (m3kit.store.calibration.calibrate_fusion)"
            ) from None

    @classmethod
    def for_encoder(
        cls, folder: str | Path | None, fingerprint: EncoderFingerprint
    ) -> FusionCalibration | None:
        """The calibration of the checkpoint in ``folder`` if it was measured on this encoder:
        the same weights, and the same :attr:`encoder_identity` when the file records one.

        A calibration measured on other weights (a folder whose weights were replaced), or on
        these weights loaded with other settings (another pooling, query instruction,
        ``max_length``, an edited ``config.json``...: other score scales), is ignored with a
        warning naming the file and what differs; the search then has the defaults of a model
        without a calibration.
        """
        if folder is None:
            return None
        calibration = cls.load(folder)
        if calibration is None:
            return None
        if calibration.weights_digest != fingerprint.weights:
            logger.warning(
                "%s was calibrated on other weights (%s, these are %s): ignored; calibrate "
                "again for these weights",
                Path(folder) / SEARCH_FILE,
                calibration.weights_digest[:24],
                fingerprint.weights[:24],
            )
            return None
        differences = calibration.encoder_differences(fingerprint)
        if differences:
            logger.warning(
                "%s was calibrated on these weights loaded with other settings (%s): ignored, "
                "so searches use the defaults of a model without a calibration; load the model "
                "as calibrated, or calibrate again with these settings",
                Path(folder) / SEARCH_FILE,
                "; ".join(_difference(*d) for d in differences),
            )
            return None
        return calibration


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
