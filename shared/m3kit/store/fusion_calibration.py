"""The ranking a checkpoint was calibrated for: :class:`FusionCalibration`.

The best search settings (:class:`~m3kit.store.search_settings.SearchSettings`) measured on a
validation set (see :func:`m3kit.store.calibration.calibrate_fusion`), one for a collection
with ColBERT vectors and one for dense + sparse alone, saved beside the weights as
``m3kit_search.json`` with the digest of the weights it was measured on and the encoder's
other settings that decide its scores (tokenizer, pooling, ``max_length``, query
instruction, heads, sizes and ``config.json``'s architecture,
:data:`CALIBRATED_ENCODER_FIELDS`). A file left beside other weights, or opened with the
same weights loaded otherwise (``pooling="mean"``, another query instruction or
``max_length``), is ignored with a warning naming what differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3kit.checkpoint import SEARCH_FILE
from m3kit.fingerprint import EncoderFingerprint, identity_value
from m3kit.outputs import Head
from m3kit.store.search_settings import SearchSettings
from m3kit.store.sparse_cut import SparseCut

__all__ = [
    "CALIBRATED_ENCODER_FIELDS",
    "SEARCH_FILE",
    "FusionCalibration",
    "calibrated_encoder_identity",
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
    "measured_max_length",
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


def _length(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"measured_max_length {value!r} is not a length in tokens")
    return value


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
            best setting's gain over the uncalibrated default (RRF; FlagEmbedding's published
            weights for a BGE-M3-shaped model), for each group where it was tested (for reports;
            a group is absent when its best gained less than ``min_gain``, or when the test
            was off, ``alpha=1``).
        sparse_cut: The sparse cut of the collection it was measured in (a file written
            before m3kit recorded it: none, as every calibration then was); an index with
            another cut warns (:func:`~m3kit.store.sparse_cut.calibration_cut_warning`).
        measured_max_length: The length the validation texts were cut at, when shorter than
            the encoder's own (``None``: not cut). The calibration is for the encoder as
            recorded in :attr:`encoder_identity`, and also for it loaded at this length (what
            it was measured at); an older file has none.
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
    measured_max_length: int | None = None

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
            if name == "max_length" and now[name] == self.measured_max_length:
                continue  # loaded at the length the texts were cut at: what it measured
            if identity_value(name, then) != identity_value(name, now[name]):
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
            "measured_max_length": self.measured_max_length,
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
                measured_max_length=_length(data.get("measured_max_length")),
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
                "; ".join(
                    _difference(*d)
                    + (
                        f" (measured on texts cut at {calibration.measured_max_length})"
                        if d[0] == "max_length" and calibration.measured_max_length
                        else ""
                    )
                    for d in differences
                ),
            )
            return None
        return calibration
