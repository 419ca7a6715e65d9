"""What identifies an encoder and a chunking configuration (checked against collections).

:class:`EncoderFingerprint` names everything that decides the vectors an encoder gives a text:
its weights (a digest of the backbone and head weight files as loaded, or of the tensors of an
in-memory model), the backbone settings in ``config.json`` that change a forward pass (layers,
activation, norm epsilon, position embeddings...), its tokenizer, pooling, ``max_length``, query
instruction, heads and sizes.
A collection records the fingerprint of the encoder that wrote it (see
:mod:`m3kit.store.index`); opening it with another raises
:class:`~m3kit.errors.FingerprintMismatchError`. The model path and the precision are recorded
for messages but are not part of the identity: the same weights in bf16 or fp32 are the same
encoder.

:func:`chunking_signature` and :func:`describe_settings` (how documents are cut into chunks)
live in :mod:`m3kit.chunking_signature` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3kit.chunking_signature import chunking_signature, describe_settings
from m3kit.encoder_watch import EncoderWatch
from m3kit.weights import check_loaded_files, loaded_unchanged, tensors_sha256, weights_digest

__all__ = [
    "ARCHITECTURE_KEYS",
    "EncoderFingerprint",
    "chunking_signature",
    "describe_settings",
    "encoder_fingerprint",
    "fingerprint_change",
    "identity_value",
    "tensors_sha256",
    "weights_digest",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderFingerprint:
    """What decides an encoder's vectors (plus where it came from, for messages).

    Attributes:
        weights: Digest of the weights: ``"files-sha256:<hex>"`` over the checkpoint's
            backbone and head weight files, or ``"tensors-sha256:<hex>"`` over the state dict
            of a model built in memory (its tensors as held, so there a precision change does
            change the digest).
        tokenizer: Tokenizer class and a digest of its vocabulary, normaliser and
            pre-tokeniser (``"XLMRobertaTokenizerFast:sha256:<hex>"``).
        pooling: Dense pooling (``cls`` or ``mean``).
        max_length: Longest input in tokens (longer documents are truncated).
        query_instruction: Prefix added to queries, or ``None``.
        heads: Heads the encoder has, sorted (``dense``, ``sparse``, ``colbert``).
        dense_dim: Dense vector size.
        colbert_dim: ColBERT vector size, or ``None``.
        architecture: The backbone settings that change what a forward pass computes (a
            compact JSON object of :data:`ARCHITECTURE_KEYS` as ``config.json`` gives them),
            so an edited ``config.json`` (fewer layers, another activation) over the same
            weight files is another encoder. ``None`` in a record written before m3kit
            recorded it: such a record matches on the other fields and is updated.
        model: Checkpoint folder (or ``None`` for a model built in memory); not identity.
        precision: Precision of the forward pass; recorded, not identity.
    """

    weights: str
    tokenizer: str
    pooling: str
    max_length: int
    query_instruction: str | None
    heads: tuple[str, ...]
    dense_dim: int
    colbert_dim: int | None
    architecture: str | None = None
    model: str | None = None
    precision: str | None = None

    #: The fields that make two fingerprints the same encoder.
    IDENTITY_FIELDS = (
        "weights",
        "tokenizer",
        "pooling",
        "max_length",
        "query_instruction",
        "heads",
        "dense_dim",
        "colbert_dim",
        "architecture",
    )

    @property
    def identity(self) -> str:
        """A short digest of the identity fields (stored with every point written).

        A fingerprint without ``architecture`` (an older record) keeps the digest it had.
        """
        fields = [f for f in self.IDENTITY_FIELDS if f != "architecture"]
        values = [getattr(self, f) for f in fields]
        if self.architecture is not None:
            values.append(self.architecture)
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @property
    def legacy_identity(self) -> str:
        """The :attr:`identity` an m3kit without ``architecture`` gave this encoder: what its
        points, late-chunked nodes and an unfinished reindex it started carry."""
        return dataclasses.replace(self, architecture=None).identity

    def made(self, identity: str) -> bool:
        """Whether vectors stamped with ``identity`` are this encoder's (its own identity, or
        the one an m3kit before ``architecture`` stamped).

        An encoder without a query instruction also made what one built with ``""`` (the
        same encoder, which an m3kit before the two were one stamped apart).

        >>> fp = EncoderFingerprint("w", "t", "cls", 8, None, ("dense",), 4, None, "{}")
        >>> fp.made(fp.identity), fp.made(fp.legacy_identity), fp.made("other")
        (True, True, False)
        >>> fp.made(dataclasses.replace(fp, query_instruction="").identity)
        True
        """
        if identity in (self.identity, self.legacy_identity):
            return True
        if self.query_instruction is None:
            empty = dataclasses.replace(self, query_instruction="")
            return identity in (empty.identity, empty.legacy_identity)
        return False

    def same_encoder(self, other: EncoderFingerprint) -> bool:
        """Whether both fingerprints name the same encoder (model path and precision aside;
        ``architecture`` too when either lacks it)."""
        return not self.differences(other)

    def differences(self, other: EncoderFingerprint) -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for every identity field that differs
        (``architecture`` only when both have it)."""
        unknown = self.architecture is None or other.architecture is None
        return [
            (f, getattr(self, f), getattr(other, f))
            for f in self.IDENTITY_FIELDS
            if identity_value(f, getattr(self, f)) != identity_value(f, getattr(other, f))
            and not (unknown and f == "architecture")
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (what a collection stores)."""
        out = dataclasses.asdict(self)
        out["heads"] = list(self.heads)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderFingerprint:
        """Read :meth:`to_dict`'s output back.

        Raises:
            ValueError: A field is missing or of the wrong type (names it).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a stored fingerprint must be a JSON object, got {data!r}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.name in ("architecture", "model", "precision"):
                    continue
                raise ValueError(f"stored fingerprint lacks the field {f.name!r}: {dict(data)}")
            kwargs[f.name] = data[f.name]
        kwargs["heads"] = tuple(str(h) for h in kwargs["heads"])
        for name in ("max_length", "dense_dim"):
            if not isinstance(kwargs[name], int):
                raise ValueError(f"stored fingerprint field {name!r} is not an int: {data}")
        return cls(**kwargs)

    def describe(self) -> str:
        """One line for messages: model, sizes and the start of the weights digest."""
        where = self.model or "a model built in memory"
        return (
            f"{where} (weights {self.weights[:28]}…, dense {self.dense_dim}, "
            f"max_length {self.max_length}, precision {self.precision})"
        )


def identity_value(field: str, value: Any) -> Any:
    """``value`` as the encoder's identity reads it: no query instruction and ``""`` are one.

    >>> identity_value("query_instruction", ""), identity_value("max_length", 0)
    (None, 0)
    """
    return None if field == "query_instruction" and value == "" else value


# -- encoders ---------------------------------------------------------------------------------
@dataclass
class _Taken:
    """A fingerprint, what it depends on as it was then, and what made it be taken again."""

    fingerprint: EncoderFingerprint
    watch: EncoderWatch
    change: str | None = None


_cache_lock = threading.Lock()
_by_encoder: weakref.WeakKeyDictionary[Any, _Taken] = weakref.WeakKeyDictionary()
# one per encoder, held while its fingerprint is taken (not while a cached one is checked):
# threads asking for the same new encoder's fingerprint at once (a web app's first requests)
# wait for one digest of its weights instead of each reading and hashing them (2.2 GB for
# BGE-M3), while other encoders' fingerprints are taken meanwhile
_taking: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()


def _taking_lock(encoder: Any) -> threading.RLock:
    """The lock held while ``encoder``'s fingerprint is taken (its own: see ``_taking``)."""
    with _cache_lock:
        try:
            return _taking.setdefault(encoder, threading.RLock())
        except TypeError:  # not weak-referenceable: its fingerprint is not cached either
            return threading.RLock()


def encoder_fingerprint(encoder: Any, *, weights: str | None = None) -> EncoderFingerprint:
    """The fingerprint of an :class:`~m3kit.M3Encoder` as it is now (cached per encoder).

    The weights digest reads the checkpoint's weight files once per process (about 1 s per
    GB on one core; a Hugging Face cache file is named by its sha256, which is used as is).
    Those files, and ``config.json`` (the architecture), must be the ones the encoder loaded
    (:meth:`M3Encoder.from_pretrained` records their identities before reading them): a
    fine-tune saved into the same folder since would give the encoder the new weights'
    fingerprint, which workers loading the new files would then match.

    The files name the encoder only while its model holds what it loaded from them (cast to
    its precision by m3kit): a model changed in memory since (trained in place,
    ``load_state_dict``, its parameters replaced), one built in memory, or one given to
    ``M3Encoder(model, ..., info=...)`` without having been loaded from ``info``'s folder by
    :meth:`M3Encoder.from_pretrained`, is named by its tensors (``"tensors-sha256:..."``).

    Every call checks, cheaply (:class:`~m3kit.encoder_watch.EncoderWatch`: no weight is read
    whole), that the encoder did not change since its fingerprint was taken; when it did (its
    model trained or given other weights, a setting such as ``max_length`` reassigned) the
    fingerprint is taken again, digesting the tensors if the weights changed.

    Args:
        encoder: The encoder.
        weights: Its weights digest when the caller has just computed it (what
            :func:`weights_digest` gives for its model and checkpoint folder), so the weights
            are not read again; used only on the first call for an encoder.

    Raises:
        TypeError: ``encoder`` lacks what an M3Encoder has (model, tokenizer, sizes).
        CheckpointChangedError: The checkpoint's weight files or ``config.json`` changed
            since the encoder loaded them (and its fingerprint was not taken before).
    """
    cached = _cached(encoder)
    if cached is not None:
        return cached
    with _taking_lock(encoder):
        return _take(encoder, weights)


def _cached(encoder: Any) -> EncoderFingerprint | None:
    """The fingerprint taken of ``encoder`` when it has not changed since, else ``None``."""
    with _cache_lock:
        try:
            taken = _by_encoder.get(encoder)
        except TypeError:  # not weak-referenceable
            return None
    if taken is None or taken.watch.change(encoder) is not None:
        return None
    return taken.fingerprint


def _take(encoder: Any, weights: str | None) -> EncoderFingerprint:
    """:func:`encoder_fingerprint` taken now (or by the thread this one waited for)."""
    with _cache_lock:
        try:
            taken = _by_encoder.get(encoder)
        except TypeError:  # not weak-referenceable
            taken = None
    if taken is not None:
        change = taken.watch.change(encoder)
        if change is None:  # taken by another thread meanwhile
            return taken.fingerprint
        logger.info("the encoder changed since its fingerprint was taken (%s): taken again", change)
        if taken.watch.weights_change(encoder.model) is None:
            weights = taken.fingerprint.weights  # the weights are those it had
        else:
            weights = None
    try:
        # taken before the digest, so that a change made while digesting is seen
        watch = EncoderWatch(encoder, weights=not _runs_onnx(encoder))
    except AttributeError as exc:
        raise TypeError(
            f"{type(encoder).__name__} is not an M3Encoder: cannot fingerprint it ({exc})"
        ) from None
    fp = _fingerprint(encoder, weights)
    with _cache_lock, contextlib.suppress(TypeError):  # not weak-referenceable: not cached
        _by_encoder[encoder] = _Taken(fp, watch, None if taken is None else change)
    return fp


def fingerprint_change(encoder: Any) -> str | None:
    """What changed in ``encoder`` that made :func:`encoder_fingerprint` take its fingerprint
    again (the latest time), or ``None``: for messages."""
    with _cache_lock:
        try:
            taken = _by_encoder.get(encoder)
        except TypeError:
            return None
    return None if taken is None else taken.change


def _runs_onnx(encoder: Any) -> bool:
    """Whether ONNX Runtime computes the encoder's vectors: it holds its own copy of the
    weights, fixed at load (``encoder.model`` is then an empty shell on the meta device)."""
    backend = getattr(encoder, "backend", None)
    return str(getattr(backend, "value", backend)) == "onnx"


def _fingerprint(encoder: Any, weights: str | None) -> EncoderFingerprint:
    try:
        model, tokenizer = encoder.model, encoder.tokenizer
        heads = tuple(sorted(h.value for h in encoder.available_heads))
        dense_dim, colbert_dim = int(encoder.dense_dim), encoder.colbert_dim
        max_length = int(encoder.max_length)
    except AttributeError as exc:
        raise TypeError(
            f"{type(encoder).__name__} is not an M3Encoder: cannot fingerprint it ({exc})"
        ) from None
    info = getattr(encoder, "info", None)
    path = getattr(info, "path", None)
    pooling = getattr(model, "pooling", None) or getattr(info, "pooling", "")
    precision = getattr(encoder, "precision", None)
    folder = None if path is None else Path(path)
    # checked before the files are read, and again after (nothing changed while reading)
    checked = folder is not None and check_loaded_files(model, folder)
    if weights is None:
        # the files name the weights only of the model loaded from them, as loaded
        named_by_files = checked and folder is not None and loaded_unchanged(model, folder)
        weights = weights_digest(model, folder if named_by_files else None)
    fp = EncoderFingerprint(
        weights=weights,
        tokenizer=_tokenizer_digest(tokenizer),
        pooling=str(getattr(pooling, "value", pooling)),
        max_length=max_length,
        query_instruction=getattr(encoder, "query_instruction", None),
        heads=heads,
        dense_dim=dense_dim,
        colbert_dim=None if colbert_dim is None else int(colbert_dim),
        architecture=_architecture(model, folder),
        model=str(Path(path).resolve()) if path is not None else None,
        precision=None if precision is None else str(getattr(precision, "value", precision)),
    )
    if checked and folder is not None:
        check_loaded_files(model, folder)
    return fp


#: ``config.json`` keys that change what a transformers encoder computes from the same weight
#: files (BERT, XLM-RoBERTa, and the common keys of newer encoders). An allow-list: keys that
#: do not (dropout, dtype, the transformers version that wrote the file) must not make a
#: collection's encoder "another" one.
ARCHITECTURE_KEYS = (
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "hidden_act",
    "hidden_activation",
    "layer_norm_eps",
    "norm_eps",
    "rms_norm_eps",
    "position_embedding_type",
    "max_position_embeddings",
    "type_vocab_size",
    "vocab_size",
    "pad_token_id",
    "rope_theta",
    "rope_scaling",
    "sliding_window",
    "local_attention",
    "global_attn_every_n_layers",
    "embedding_size",
)


def _architecture(model: Any, folder: Path | None) -> str | None:
    """:data:`ARCHITECTURE_KEYS` as the checkpoint's ``config.json`` gives them (the file, not
    the config as loaded, whose defaults for absent keys can change with the transformers
    version), else as the in-memory backbone's config has them; ``None`` without either."""
    config_file = folder / "config.json" if folder is not None else None
    if config_file is not None and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    else:
        backbone_config = getattr(getattr(model, "backbone", None), "config", None)
        if backbone_config is None or not hasattr(backbone_config, "to_dict"):
            return None
        config = backbone_config.to_dict()
    picked: dict[str, Any] = {k: config[k] for k in ARCHITECTURE_KEYS if k in config}
    code = own_code_id(getattr(model, "backbone", None))
    if code is not None:  # only then: every other encoder keeps the identity it had
        picked["own_code"] = code
    return json.dumps(picked, sort_keys=True, separators=(",", ":"), default=str)


def own_code_id(backbone: Any) -> str | None:
    """The class and code digest of a backbone built from a checkpoint's own modelling code
    (``trust_remote_code=True``: transformers loads it as a ``transformers_modules`` module);
    ``None`` for any other backbone.

    The same weights and ``config.json`` build transformers' own class without
    ``trust_remote_code`` and the checkpoint's with it: two models, other vectors. Its code
    file may also be edited in place, so its digest is part of the id.
    """
    cls = type(backbone)
    if backbone is None or not cls.__module__.startswith("transformers_modules"):
        return None
    name = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}"
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # a class without a source file
        return name
    if source is None:
        return name
    return f"{name}:sha256:{hashlib.sha256(Path(source).read_bytes()).hexdigest()}"


def _tokenizer_digest(tokenizer: Any) -> str:
    """Class name and a digest of what maps text to ids (truncation and padding state aside)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        blob = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    elif hasattr(tokenizer, "get_vocab"):
        blob = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    else:
        raise TypeError(f"cannot fingerprint tokenizer {type(tokenizer).__name__}")
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return f"{type(tokenizer).__name__}:sha256:{digest}"
