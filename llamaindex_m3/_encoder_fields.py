"""Pydantic fields shared by the LlamaIndex embedding classes: which checkpoint, loaded how."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from typing_extensions import Self

from m3kit.checkpoint import DEFAULT_MODEL
from m3kit.encoder import M3Encoder, Precision

__all__ = ["M3EncoderFields"]

_ENCODER_CONTEXT_KEY = "m3kit_encoder"
_IN_MEMORY = "<in-memory>"


class M3EncoderFields(BaseModel):
    """Fields naming a checkpoint and how to load it; the live encoder is a private attribute.

    Mixed into :class:`~llamaindex_m3.M3Embedding` and :class:`~llamaindex_m3.M3SparseEmbedding`
    before LlamaIndex's base classes, so these defaults win over theirs.
    """

    model_config = ConfigDict(protected_namespaces=())

    model_name: str = Field(
        default=DEFAULT_MODEL, description="Local checkpoint folder or hub id (BAAI/bge-m3)."
    )
    device: str | None = Field(
        default=None, description="'cpu', 'cuda', 'cuda:1'...; default CUDA when available."
    )
    dtype: Precision = Field(
        default=Precision.AUTO, description="Forward-pass precision: auto, fp32, bf16 or fp16."
    )
    query_instruction: str | None = Field(
        default=None,
        description="Prefix for queries; default: what the checkpoint declares (none for M3).",
    )
    text_instruction: str | None = Field(
        default=None, description="Prefix for documents/passages (e.g. 'passage: ')."
    )
    max_length: int | None = Field(
        default=None, ge=2, description="Longest input in tokens (longer ones are truncated)."
    )
    embed_batch_size: int = Field(
        default=32, gt=0, le=2048, description="Texts per encoder call (and per forward pass)."
    )

    _encoder: M3Encoder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Load the checkpoint, or adopt the encoder passed by :meth:`from_encoder`."""
        super().model_post_init(context)
        encoder = context.get(_ENCODER_CONTEXT_KEY) if isinstance(context, dict) else None
        if encoder is None:
            if self.model_name == _IN_MEMORY:
                raise ValueError(
                    "this object wrapped an in-memory encoder and cannot reload it; "
                    "build it again with from_encoder()"
                )
            encoder = M3Encoder.from_pretrained(
                self.model_name,
                device=self.device,
                dtype=self.dtype.value,  # str: from_pretrained parses names
                max_length=self.max_length,
                query_instruction=self.query_instruction,
                batch_size=self.embed_batch_size,
            )
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

        The checkpoint fields (``model_name``, ``device``, ``dtype``, ``query_instruction``,
        ``max_length``) are read from the encoder.

        Args:
            encoder: The loaded encoder.
            text_instruction: Prefix for documents (default none).
            embed_batch_size: Texts per encoder call (default: the encoder's batch size).
        """
        cls._check_encoder(encoder)
        fields = {
            "model_name": str(encoder.info.path) if encoder.info else _IN_MEMORY,
            "device": str(encoder.device),
            "dtype": encoder.precision,
            "query_instruction": encoder.query_instruction,
            "text_instruction": text_instruction,
            "max_length": encoder.max_length,
            "embed_batch_size": embed_batch_size or encoder.batch_size,
        }
        return cls.model_validate(fields, context={_ENCODER_CONTEXT_KEY: encoder})

    @property
    def encoder(self) -> M3Encoder:
        """The loaded :class:`~m3kit.M3Encoder`."""
        return self._encoder

    def _documents(self, texts: list[str]) -> list[str]:
        """Texts with ``text_instruction`` prepended (when one is set)."""
        if not self.text_instruction:
            return texts
        return [self.text_instruction + t for t in texts]
