"""Pydantic fields read once, when an object loads its model: changing them later is refused.

The LangChain and LlamaIndex classes load a checkpoint (and build a chunker or reranker) from
their fields when they are built. Assigning such a field afterwards, or copying the object
with ``model_copy(update=...)``, would leave the loaded model as it was while the field says
otherwise. :class:`LoadTimeFields` refuses both with an error saying to build a new object.
A field is load-time when it is frozen (``Field(frozen=True)``, or the whole model is
``frozen``); the other fields stay assignable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from typing_extensions import Self

__all__ = ["LoadTimeFields"]


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
