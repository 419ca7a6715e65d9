"""Pydantic fields read once, when an object loads its model: changing them later is refused.

The LangChain and LlamaIndex classes load a checkpoint (and build a chunker or reranker) from
their fields when they are built. Assigning such a field afterwards, or copying the object
with ``model_copy(update=...)``, would leave the loaded model as it was while the field says
otherwise. :class:`LoadTimeFields` refuses both with an error saying to build a new object.
Pickling such an object carries its fields, not the weights, and unpickling loads the model
again from them: :meth:`LoadTimeFields._pickled_identity` and
:meth:`LoadTimeFields._check_unpickled` are the checks both adapters make around it.
A field is load-time when it is frozen (``Field(frozen=True)``, or the whole model is
``frozen``); the other fields stay assignable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from typing_extensions import Self

__all__ = ["LoadTimeFields"]

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder


class LoadTimeFields(BaseModel):
    """Mixin: frozen fields refuse assignment and ``model_copy`` updates with a clear error."""

    @classmethod
    def load_time_fields(cls) -> frozenset[str]:
        """The fields read when the object is built (frozen), in any order."""
        if cls.model_config.get("frozen"):
            return frozenset(cls.model_fields)
        return frozenset(name for name, f in cls.model_fields.items() if f.frozen)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field read on every call; refuse one read when the object was built.

        Raises:
            AttributeError: ``name`` is a load-time field.
        """
        if name in self.load_time_fields():
            cls = type(self).__name__
            raise AttributeError(
                f"{cls}.{name} is read once, when the {cls} is built (its model, chunker or "
                f"reranker keeps the value it was built with), so assigning it would change "
                f"nothing: build a new {cls}(..., {name}=...) instead"
            )
        super().__setattr__(name, value)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy sharing the loaded model; ``update`` may change per-call fields only.

        Raises:
            ValueError: ``update`` names load-time fields (the copy would keep the model
                loaded with the old values).
        """
        loaded = sorted(set(update or {}) & self.load_time_fields())
        if loaded:
            cls = type(self).__name__
            raise ValueError(
                f"model_copy(update=...) cannot change {loaded}: they are read when the {cls} "
                f"is built and the copy shares its loaded model; build a new {cls} with them "
                "instead"
            )
        return super().model_copy(update=update, deep=deep)

    def _pickled_identity(self, encoder: M3Encoder, refuse: type[Exception]) -> str:
        """The fingerprint identity of ``encoder``, the model this object computes with, for
        its pickle: unpickling loads that model again from its checkpoint folder.

        Args:
            encoder: The loaded encoder.
            refuse: The error raised when it cannot be loaded again (what the framework's
                pickling raises).

        Raises:
            refuse: ``encoder`` was built from an in-memory model, or its model changed in
                memory since it was loaded (the check worker processes make,
                :meth:`~m3kit.distributed.EncoderSpec.of`).
        """
        from m3kit.checkpoint import resolve_checkpoint
        from m3kit.distributed.spec import EncoderSpec
        from m3kit.errors import CheckpointError

        cls = type(self).__name__
        try:
            spec = EncoderSpec.of(encoder)
        except ValueError as e:
            raise refuse(
                f"cannot pickle this {cls}: unpickling loads its model again from its "
                f"checkpoint folder, and {e}; then build the {cls} from that folder (within one "
                "process, copy.deepcopy or from_encoder shares the loaded model instead)"
            ) from e
        # what its fields do not hold: unpickled (in a worker), another model would load
        try:
            own = resolve_checkpoint(spec.path).pooling.value
        except (CheckpointError, OSError) as e:  # the folder gone or changed since loading
            raise refuse(
                f"cannot pickle this {cls}: unpickling loads its model again from "
                f"{spec.path}, which cannot be read now ({e})"
            ) from e
        unheld = [f"pooling={spec.pooling!r} (the folder's own is {own!r})"]
        unheld = unheld if spec.pooling != own else []
        unheld += ["trust_remote_code=True"] if spec.trust_remote_code else []
        if unheld:
            raise refuse(
                f"cannot pickle this {cls}: its encoder was loaded with {', '.join(unheld)}, "
                "which its fields do not hold, so unpickling would load another model; save "
                f"the model with those settings (M3Model.save) and build the {cls} from that "
                "folder, or share the encoder within one process (from_encoder, copy.deepcopy)"
            )
        return spec.identity  # type: ignore[return-value]

    def _check_unpickled(self, encoder: M3Encoder, identity: str, source: str) -> None:
        """Check that the model unpickling loaded (``encoder``, from ``source``) is the pickled
        one (:meth:`_pickled_identity`).

        Raises:
            ValueError: It is another model: its checkpoint changed since, or the pickled
                encoder had a setting the fields do not hold.
        """
        from m3kit.fingerprint import encoder_fingerprint

        loaded = encoder_fingerprint(encoder)
        if not loaded.made(identity):
            raise ValueError(
                f"unpickling this {type(self).__name__} loaded another model from {source!r} "
                f"than the one pickled (fingerprint {loaded.identity} instead of {identity}): "
                "its checkpoint changed since, or the pickled encoder had a setting these "
                "fields do not hold (e.g. pooling); load the encoder where that model is and "
                "use from_encoder()"
            )
