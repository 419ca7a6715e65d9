"""Pydantic field types the adapters share (imported by them only: the core uses no pydantic).

A plain ``int`` field in pydantic's default (lax) mode reads ``"12"`` and ``12.0`` as 12 and
``True`` as 1, silently; the core refuses them (:func:`~m3kit.encoder_inputs.whole_number`),
and so do the adapters' fields typed :data:`WholeNumber`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from m3kit.encoder_inputs import whole_number

__all__ = ["WholeNumber"]


def _whole(value: Any) -> Any:
    return value if value is None else whole_number("the value", value)


#: An ``int`` field that refuses a bool, float or str (a numpy integer is taken as its value).
WholeNumber = Annotated[int, BeforeValidator(_whole)]
