"""A spy standing in for :func:`m3kit.heap.keep_freed_memory`: the settings asked for, and
whether code runs inside the block (tests of the fine-tuning loop and ``m3kit index``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest


class KeepFreedMemorySpy:
    """Calls the real context manager and records each call's ``enabled`` in ``asked``;
    ``inside`` is True while a block runs; ``on_exit`` runs as a block ends (still inside)."""

    def __init__(
        self,
        real: Callable[[bool], AbstractContextManager[bool]],
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.real = real
        self.on_exit = on_exit
        self.asked: list[bool] = []
        self.inside = False

    @contextlib.contextmanager
    def __call__(self, enabled: bool = True) -> Iterator[bool]:
        self.asked.append(enabled)
        with self.real(enabled) as kept:
            self.inside = True
            try:
                yield kept
            finally:
                if self.on_exit is not None:
                    self.on_exit()
                self.inside = False

    def calls_inside(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[bool]:
        """Wrap method ``owner.name`` (for the test) to record, at each call, whether it ran
        inside a block; returns that list."""
        inside: list[bool] = []
        real = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            inside.append(self.inside)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
        return inside
