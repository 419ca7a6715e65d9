"""Vector stores holding an open collection and a loaded model refuse pickling and deep copies.

LlamaIndex's ``BaseComponent`` pickles a store by dropping what it cannot pickle (the open
index, the sparse functions holding the model) with a log warning, and unpickles it without
them: the copy failed at its first query with an ``AttributeError``. A deep copy raised
``TypeError: cannot pickle '_thread.lock' object``. :class:`OpenStoreCopies` makes both a
clear error saying what to do instead.
"""

from __future__ import annotations

import pickle
from typing import Any, ClassVar, NoReturn

__all__ = ["OpenStoreCopies"]


class OpenStoreCopies:
    """Mixin (before the LlamaIndex store base): pickling and ``copy.deepcopy`` are refused.

    Subclasses set :attr:`copy_hint`: how to get a second store instead.
    """

    copy_hint: ClassVar[str] = "build another store"

    def __getstate__(self) -> NoReturn:
        """Refuse pickling.

        Raises:
            pickle.PicklingError: Always (says what to do instead).
        """
        raise pickle.PicklingError(self._refusal("pickle"))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> NoReturn:
        """Refuse a deep copy.

        Raises:
            TypeError: Always (says what to do instead).
        """
        raise TypeError(self._refusal("deep-copy"))

    def _refusal(self, how: str) -> str:
        cls = type(self).__name__
        return (
            f"cannot {how} a {cls}: it holds an open Qdrant collection and a loaded model, "
            f"which a copy would lose; {self.copy_hint}"
        )
