"""Pydantic fields shared by the LangChain embedding classes: which checkpoint, loaded how."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from typing_extensions import Self

from m3kit.backends import EncoderBackend, check_onnx_cache_dir
from m3kit.checkpoint import DEFAULT_MODEL
from m3kit.encoder import M3Encoder, Precision
from m3kit.errors import M3KitError
from m3kit.field_types import WholeNumber
from m3kit.load_time import LoadTimeFields

__all__ = ["EncoderModel"]

_ENCODER_CONTEXT_KEY = "m3kit_encoder"


class EncoderModel(LoadTimeFields):
    """Fields naming a checkpoint and how to load it; the live encoder is a private attribute.

    Every field is read when the model loads: assigning one raises ``AttributeError`` and
    ``model_copy(update=...)`` naming one raises ``ValueError`` (build a new object instead).

    Subclasses get :meth:`from_encoder` (share one loaded model) and :attr:`encoder`.

    ``pickle`` carries the fields, not the weights: unpickling loads the checkpoint again and
    checks it is the same model; ``copy.deepcopy`` copies the fields and shares the model.
    """

    # frozen: the fields describe the loaded model, so changing one later would be a lie
    # (LoadTimeFields says so when one is assigned or given to model_copy(update=...)).
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)

    model_name_or_path: str = DEFAULT_MODEL
    """Local checkpoint folder or hub id (default ``BAAI/bge-m3``)."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available."""
    dtype: Precision = Precision.AUTO
    """Forward-pass precision: ``auto``, ``fp32``, ``bf16``, ``bf16-autocast``, ``fp16`` (GPU)
    or ``int8`` (lossy; ONNX Runtime's unless ``backend="torch"``); outputs are float32."""
    query_instruction: str | None = None
    """Prefix for queries; default: what the checkpoint declares (none for BGE-M3)."""
    batch_size: WholeNumber = Field(default=32, ge=1)
    """Most texts per forward pass."""
    max_batch_tokens: WholeNumber = Field(default=8192, ge=1)
    """Most padded tokens per forward pass (a longer text runs alone)."""
    backend: EncoderBackend = EncoderBackend.AUTO
    """Forward-pass runtime: ``auto`` (torch; ONNX Runtime for ``dtype`` ``int8`` on CPU),
    ``torch`` or ``onnx`` (ONNX Runtime on CPU, extra ``m3kit[onnx]``; ``dtype`` ``fp32``
    exact, ``int8`` lossy)."""
    onnx_cache_dir: str | None = None
    """Folder of ONNX exports (default ``~/.cache/m3kit/onnx`` or ``$M3KIT_CACHE/onnx``)."""
    max_length: WholeNumber | None = Field(default=None, ge=2)
    """Longest input in tokens (longer texts are truncated with a warning)."""
    show_progress: bool = False
    """Show a tqdm bar while embedding documents."""

    _encoder: M3Encoder = PrivateAttr()

    @field_validator("onnx_cache_dir")
    @classmethod
    def _cache_dir_needs_onnx(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_onnx_cache_dir(value, info.data.get("backend"))
        return value

    def __init__(self, /, **data: Any) -> None:
        self._validate_and_load(data, encoder=None)

    def _validate_and_load(self, data: dict[str, Any], encoder: M3Encoder | None) -> None:
        # What BaseModel.__init__ does, plus a validation context carrying a loaded encoder
        # (model_validate(context=...) would bypass this custom __init__).
        with _m3kit_errors_unwrapped():
            self.__pydantic_validator__.validate_python(
                data,
                self_instance=self,
                context={_ENCODER_CONTEXT_KEY: encoder} if encoder is not None else None,
            )

    def model_post_init(self, context: Any, /) -> None:
        """Load the checkpoint, or adopt the encoder passed by :meth:`from_encoder`."""
        encoder = context.get(_ENCODER_CONTEXT_KEY) if isinstance(context, dict) else None
        if encoder is None:
            encoder = M3Encoder.from_pretrained(
                self.model_name_or_path,
                device=self.device,
                dtype=self.dtype.value,  # str(Precision.X) is 'Precision.X' on py3.11
                max_length=self.max_length,
                query_instruction=self.query_instruction,
                batch_size=self.batch_size,
                max_batch_tokens=self.max_batch_tokens,
                backend=self.backend.value,
                onnx_cache_dir=self.onnx_cache_dir,
            )
        self._check_encoder(encoder)
        self._encoder = encoder

    def _check_encoder(self, encoder: M3Encoder) -> None:
        """Raise when the encoder cannot serve this class (overridden by the sparse one)."""

    @classmethod
    def from_encoder(cls, encoder: M3Encoder, **options: Any) -> Self:
        """Wrap an already loaded :class:`~m3kit.M3Encoder` (no second copy of the model).

        The checkpoint fields are filled from the encoder's own settings.

        Args:
            encoder: The loaded encoder.
            **options: Other fields of the class (e.g. ``show_progress=True``).
        """
        fields = {
            "model_name_or_path": str(encoder.info.path) if encoder.info else "<in-memory>",
            "device": str(encoder.device),
            # what was asked for: "auto" stays auto, decided again by the hardware it loads on
            "dtype": encoder.requested_precision,
            # "": none (None would reload the checkpoint's own instruction, if it declares one)
            "query_instruction": encoder.query_instruction or "",
            "batch_size": encoder.batch_size,
            "max_length": encoder.max_length,
            "max_batch_tokens": encoder.max_batch_tokens,
            "backend": encoder.backend,
            # as asked for: None is each machine's default, not this one's folder
            "onnx_cache_dir": _str_or_none(encoder.requested_onnx_cache_dir),
        }
        clash = sorted(set(options) & set(fields))
        if clash:
            raise ValueError(
                f"{clash} come from the encoder in from_encoder(); "
                "load the encoder with the settings you want instead"
            )
        obj = cls.__new__(cls)
        obj._validate_and_load(fields | options, encoder=encoder)
        return obj

    @property
    def encoder(self) -> M3Encoder:
        """The loaded :class:`~m3kit.M3Encoder`."""
        return self._encoder

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle the fields and the model's identity, not its weights: unpickling loads the
        checkpoint again (as the LlamaIndex classes do).

        Raises:
            TypeError: The model cannot be loaded again from a folder: it was built in memory,
                or changed in memory since it was loaded (``copy.deepcopy`` shares it instead).
        """
        identity = self._pickled_identity(self._encoder, TypeError)
        return {
            "fields": dict(self.__dict__),
            "fields_set": set(self.model_fields_set),
            "identity": identity,
        }

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Load the checkpoint the pickled fields name, checking it is the pickled model.

        Raises:
            ValueError: The checkpoint loads as another model than the pickled one (its files
                changed, or the encoder had a setting these fields do not hold).
        """
        self._validate_and_load(state["fields"], encoder=None)
        object.__setattr__(self, "__pydantic_fields_set__", set(state["fields_set"]))
        self._check_unpickled(self._encoder, state["identity"], str(self.model_name_or_path))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A copy with deep copies of the fields, sharing the loaded model (used read-only, as
        :meth:`from_encoder` shares it), so no weights are loaded or copied."""
        obj = type(self).__new__(type(self))
        obj._validate_and_load(copy.deepcopy(dict(self.__dict__), memo), encoder=self._encoder)
        object.__setattr__(obj, "__pydantic_fields_set__", set(self.model_fields_set))
        return obj


def _str_or_none(path: object | None) -> str | None:
    return None if path is None else str(path)


@contextmanager
def _m3kit_errors_unwrapped() -> Iterator[None]:
    """Re-raise an m3kit error from loading as itself, not wrapped in a pydantic ValidationError.

    Pydantic wraps any ``ValueError`` raised in ``model_post_init`` (``HeadNotAvailableError``
    is one); callers should be able to catch the m3kit type.
    """
    try:
        yield
    except ValidationError as e:
        errors = e.errors()
        cause = errors[0].get("ctx", {}).get("error") if len(errors) == 1 else None
        if isinstance(cause, M3KitError):
            raise cause from None
        raise
