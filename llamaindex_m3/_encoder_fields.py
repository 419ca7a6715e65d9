"""Pydantic fields shared by the LlamaIndex classes that load a checkpoint: which one, how.

:class:`M3CheckpointFields` (checkpoint, device, precision, runtime, token budget) is the one
definition behind :class:`~llamaindex_m3.M3Embedding`, :class:`~llamaindex_m3.M3SparseEmbedding`
(through :class:`M3EncoderFields`), :class:`~llamaindex_m3.M3Reranker` and
:class:`~llamaindex_m3.M3LateChunkingNodeParser`. :class:`M3EncoderSettingsFields` adds the
settings in an encoder's identity (``max_length``, ``query_instruction``), shared by the
embeddings, the reranker and the node parser.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator
from typing_extensions import Self

from m3kit.backends import EncoderBackend, check_onnx_cache_dir
from m3kit.checkpoint import DEFAULT_MODEL
from m3kit.encoder import M3Encoder, Precision
from m3kit.encoder_inputs import check_texts
from m3kit.field_types import WholeNumber
from m3kit.fingerprint import encoder_fingerprint
from m3kit.load_time import LoadTimeFields

__all__ = [
    "ENCODER_KEY",
    "IN_MEMORY",
    "M3CheckpointFields",
    "M3EncoderFields",
    "M3EncoderSettingsFields",
]

logger = logging.getLogger(__name__)

_ENCODER_CONTEXT_KEY = "m3kit_encoder"
_IDENTITY_STATE_KEY = "m3kit_encoder_identity"
#: Fields dropped (as LlamaIndex drops them) when they cannot be pickled: they change no output.
_DROPPABLE_FIELDS = frozenset({"callback_manager"})
IN_MEMORY = "<in-memory>"
"""``model_name`` of an object wrapping an encoder that has no checkpoint folder."""
#: What ``to_dict`` records beyond the fields: the encoder's fingerprint identity. LlamaIndex's
#: ``IngestionPipeline`` keys its cache on ``to_dict``, and the fields alone do not name the
#: weights (a fine-tune saved over ``model_name``, a model trained in memory).
ENCODER_KEY = "encoder_identity"
#: Fields that decide the encoder's identity: given to ``from_dict``, the model it loads is
#: the caller's choice, not checked against the recorded identity.
_IDENTITY_FIELDS = frozenset({"model_name", "max_length", "query_instruction"})


class M3CheckpointFields(LoadTimeFields):
    """Which checkpoint to load and how: mixed in before a LlamaIndex base class.

    Unknown fields are refused (``extra="forbid"``), so a misspelt option is an error. The
    fields read when the model loads are frozen: assigning one raises ``AttributeError`` (build
    a new object instead); see :class:`~m3kit.load_time.LoadTimeFields`.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(
        frozen=True,
        default=DEFAULT_MODEL,
        description="Local checkpoint folder or hub id (BAAI/bge-m3).",
    )
    device: str | None = Field(
        frozen=True,
        default=None,
        description="'cpu', 'cuda', 'cuda:1'...; default CUDA when available.",
    )
    dtype: Precision = Field(
        frozen=True,
        default=Precision.AUTO,
        description="Forward-pass precision: auto, fp32, bf16, bf16-autocast, fp16 (GPU) or "
        "int8 (lossy); backend 'onnx' runs fp32 or int8.",
    )
    max_batch_tokens: WholeNumber = Field(
        frozen=True,
        default=8192,
        ge=1,
        description="Most padded tokens per forward pass (a longer text runs alone).",
    )
    backend: EncoderBackend = Field(
        frozen=True,
        default=EncoderBackend.AUTO,
        description="Forward-pass runtime: 'auto' (torch; ONNX Runtime for dtype 'int8' on "
        "CPU), 'torch' or 'onnx' (ONNX Runtime on CPU, extra m3kit[onnx]).",
    )
    onnx_cache_dir: str | None = Field(
        frozen=True,
        default=None,
        description="Folder of ONNX exports (default ~/.cache/m3kit/onnx or $M3KIT_CACHE/onnx).",
    )

    @field_validator("onnx_cache_dir")
    @classmethod
    def _cache_dir_needs_onnx(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_onnx_cache_dir(value, info.data.get("backend"))
        return value

    def _load_encoder(self, **options: Any) -> M3Encoder:
        """``M3Encoder.from_pretrained`` with these fields plus the subclass's ``options``."""
        if self.model_name == IN_MEMORY:
            raise ValueError(
                f"this {type(self).__name__} wrapped an in-memory encoder and cannot reload "
                "it; build it again with from_encoder()"
            )
        return M3Encoder.from_pretrained(
            self.model_name,
            device=self.device,
            dtype=self.dtype.value,  # str: from_pretrained parses names
            max_batch_tokens=self.max_batch_tokens,
            backend=self.backend.value,
            onnx_cache_dir=self.onnx_cache_dir,
            **options,
        )

    def _held_encoder(self) -> M3Encoder:
        """The loaded encoder this object computes with (each subclass says where it is)."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """What pickle stores: the fields (unpickling loads ``model_name`` from them again)
        and the identity of the encoder, checked when it is loaded.

        Replaces LlamaIndex's ``BaseComponent.__getstate__``, which drops what it cannot
        pickle with a log warning: a dropped setting (a ``splitter`` or ``id_func`` lambda)
        came back as its default. Only ``callback_manager`` (it changes no output) is still
        dropped that way.

        Raises:
            pickle.PicklingError: The encoder cannot be loaded again from ``model_name`` (it
                wraps a model changed in memory since it was loaded, or built in memory), or
                a field cannot be pickled (names it).
        """
        identity = self._pickled_identity(self._held_encoder(), pickle.PicklingError)
        cls = type(self).__name__
        state = BaseModel.__getstate__(self)
        fields = dict(state["__dict__"])
        for name in [n for n, v in fields.items() if not _picklable(v)]:
            if name not in _DROPPABLE_FIELDS:
                raise pickle.PicklingError(
                    f"cannot pickle this {cls}: its {name!r} ({type(fields[name]).__name__}) "
                    "cannot be pickled, and unpickling without it would use the default "
                    f"instead; give a picklable {name} (a module-level function, not a lambda)"
                )
            logger.warning("pickling %s without its unpicklable %s", cls, name)
            del fields[name]
        return {
            **state,
            "__dict__": fields,
            "__pydantic_private__": None,
            _IDENTITY_STATE_KEY: identity,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load the model again from the pickled fields and check it is the one pickled.

        Raises:
            ValueError: The checkpoint at ``model_name`` is another model now.
        """
        self.__init__(**state["__dict__"])  # type: ignore[misc]
        identity = state.get(_IDENTITY_STATE_KEY)
        if identity is not None:
            self._check_unpickled(self._held_encoder(), identity, self.model_name)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy sharing the loaded model (as :meth:`from_encoder` shares one).

        Every field and setting is copied; the encoder (weights, tokenizer, locks) is the
        same object, so the copy computes the same outputs without a second copy in memory.
        """
        memo = {} if memo is None else memo
        encoder = self._held_encoder()
        memo.setdefault(id(encoder), encoder)
        return super().__deepcopy__(memo)

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The fields, ``class_name`` and the encoder's fingerprint identity.

        ``IngestionPipeline`` builds its cache key from this: the identity (a digest of the
        weights, tokenizer and settings) tells apart two models of one ``model_name`` (a
        fine-tune saved over its base, a model trained in memory), so neither is served the
        other's cached vectors; :meth:`from_dict` checks the model it loads is this one.
        """
        data: dict[str, Any] = super().to_dict(**kwargs)  # type: ignore[misc]
        data[ENCODER_KEY] = encoder_fingerprint(self._held_encoder()).identity
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Self:
        """The object :meth:`to_dict` describes (``kwargs`` override its fields).

        Raises:
            ValueError: The model loaded from the fields is another one than :meth:`to_dict`
                recorded: the checkpoint at ``model_name`` changed, or the serialised object
                wrapped an encoder with a setting its fields do not hold (a ``pooling``). Not
                checked when ``kwargs`` give ``model_name``, ``max_length`` or
                ``query_instruction``.
        """
        fields = {k: v for k, v in data.items() if k != ENCODER_KEY}
        built: Self = super().from_dict(fields, **kwargs)  # type: ignore[misc]
        identity = data.get(ENCODER_KEY)
        if identity is None or _IDENTITY_FIELDS & set(kwargs):
            return built
        loaded = encoder_fingerprint(built._held_encoder())
        if not loaded.made(identity):
            raise ValueError(
                f"the serialised {cls.__name__} computed with encoder {identity}, the "
                f"checkpoint at {built.model_name} is another one ({loaded.identity}) when "
                "loaded with these fields (it changed, or that encoder had a setting they do "
                "not hold, e.g. max_length or pooling); point model_name at the model that "
                f"made it, or build the {cls.__name__} with from_encoder() (pass "
                "model_name=... to from_dict to use this one)"
            )
        return built

    @staticmethod
    def _checkpoint_fields(encoder: M3Encoder) -> dict[str, Any]:
        """These fields as the loaded ``encoder`` has them (for ``from_encoder``)."""
        cache = encoder.requested_onnx_cache_dir  # None: each machine's default
        return {
            "model_name": str(encoder.info.path) if encoder.info else IN_MEMORY,
            "device": str(encoder.device),
            # what was asked for: "auto" stays auto, decided again by the hardware it loads on
            "dtype": encoder.requested_precision,
            "max_batch_tokens": encoder.max_batch_tokens,
            "backend": encoder.backend,
            "onnx_cache_dir": None if cache is None else str(cache),
        }


class M3EncoderSettingsFields(M3CheckpointFields):
    """The checkpoint fields plus the encoder settings that are part of its identity.

    A model loaded with another ``max_length`` or ``query_instruction`` is another encoder
    (:class:`~m3kit.fingerprint.EncoderFingerprint`): a store refuses the vectors it made. Shared
    by :class:`M3EncoderFields`, :class:`~llamaindex_m3.M3Reranker` and
    :class:`~llamaindex_m3.M3LateChunkingNodeParser`, so a parser
    can be loaded with the settings of the store's :class:`~llamaindex_m3.M3Embedding`.
    """

    query_instruction: str | None = Field(
        frozen=True,
        default=None,
        description="Prefix for queries; default: what the checkpoint declares (none for M3).",
    )
    max_length: WholeNumber | None = Field(
        frozen=True,
        default=None,
        ge=2,
        description="Longest input in tokens (longer ones are truncated).",
    )

    def _load_with_settings(self, batch_size: int) -> M3Encoder:
        """The checkpoint loaded with these settings and ``batch_size`` texts per pass."""
        return self._load_encoder(
            max_length=self.max_length,
            query_instruction=self.query_instruction,
            batch_size=batch_size,
        )

    @classmethod
    def _settings_fields(cls, encoder: M3Encoder) -> dict[str, Any]:
        """The checkpoint fields and these settings as the loaded ``encoder`` has them."""
        return {
            **cls._checkpoint_fields(encoder),
            # "": none (None would reload the checkpoint's own instruction, if it declares one)
            "query_instruction": encoder.query_instruction or "",
            "max_length": encoder.max_length,
        }


class M3EncoderFields(M3EncoderSettingsFields):
    """The checkpoint fields plus the embedding ones; the live encoder is a private attribute.

    Mixed into :class:`~llamaindex_m3.M3Embedding` and :class:`~llamaindex_m3.M3SparseEmbedding`
    before LlamaIndex's base classes, so these defaults win over theirs.
    """

    text_instruction: str | None = Field(
        default=None, description="Prefix for documents/passages (e.g. 'passage: ')."
    )
    embed_batch_size: WholeNumber = Field(
        frozen=True,
        default=32,
        gt=0,
        le=2048,
        description="Texts per encoder call. Loaded from model_name, also the encoder's "
        "batch_size (texts per forward pass); from_encoder() keeps the encoder's own "
        "batch_size, so a forward pass holds at most that many.",
    )

    _encoder: M3Encoder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Load the checkpoint, or adopt the encoder passed by :meth:`from_encoder`."""
        super().model_post_init(context)
        encoder = context.get(_ENCODER_CONTEXT_KEY) if isinstance(context, dict) else None
        if encoder is None:
            encoder = self._load_with_settings(self.embed_batch_size)
        self._check_encoder(encoder)
        self._encoder = encoder

    @classmethod
    def _check_encoder(cls, encoder: M3Encoder) -> None:
        """Raise when the encoder cannot serve this class (overridden by the sparse one).

        Called before validation by :meth:`from_encoder` (so its error is raised as is) and
        after loading a checkpoint (where pydantic wraps it in a ``ValidationError``).
        """

    @classmethod
    def from_encoder(
        cls,
        encoder: M3Encoder,
        *,
        text_instruction: str | None = None,
        embed_batch_size: int | None = None,
    ) -> Self:
        """Wrap an already loaded :class:`~m3kit.M3Encoder` (no second copy of the model).

        The checkpoint fields (``model_name``, ``device``, ``dtype``, ``max_batch_tokens``,
        ``backend``, ``onnx_cache_dir``, ``query_instruction``, ``max_length``) are read from
        the encoder.

        Args:
            encoder: The loaded encoder.
            text_instruction: Prefix for documents (default none).
            embed_batch_size: Texts per encoder call (default: the encoder's batch size). A
                forward pass still holds at most the encoder's own ``batch_size`` (the
                encoder is shared: its settings are not changed here).
        """
        cls._check_encoder(encoder)
        fields = {
            **cls._settings_fields(encoder),
            "text_instruction": text_instruction,
            "embed_batch_size": (
                encoder.batch_size if embed_batch_size is None else embed_batch_size
            ),
        }
        return cls.model_validate(fields, context={_ENCODER_CONTEXT_KEY: encoder})

    @property
    def encoder(self) -> M3Encoder:
        """The loaded :class:`~m3kit.M3Encoder`."""
        return self._encoder

    def _held_encoder(self) -> M3Encoder:
        return self._encoder

    def _documents(self, texts: list[str]) -> list[str]:
        """Texts with ``text_instruction`` prepended (when one is set).

        Raises:
            TypeError: A text is not a string (named before the prefix is added, which would
                fail with Python's own message).
        """
        texts = check_texts(texts, method="get_text_embedding_batch")
        if not self.text_instruction:
            return texts
        return [self.text_instruction + t for t in texts]


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # whatever pickling raises, the value cannot be pickled
        return False
    return True
