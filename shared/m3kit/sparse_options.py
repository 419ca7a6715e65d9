"""The checks of ``sparse_top_k`` / ``sparse_min_weight``, shared by every entry point that
takes them (``encode``, an index's sparse cut, the ``m3kit`` flags, both adapters' sparse
embeddings, ``calibrate_fusion``), so each refuses the same values with the same message.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_sparse_min_weight", "check_sparse_options", "finite_sparse_min_weight"]


def check_sparse_options(top_k: object, min_weight: object) -> None:
    """Refuse a ``sparse_top_k`` / ``sparse_min_weight`` :func:`encode` cannot honour.

    Checked before any forward pass, by :class:`~m3kit.encoder.M3Encoder` and, in the parent
    process, by :class:`~m3kit.distributed.EncoderPool` (same messages).

    >>> check_sparse_options(None, 0.0)
    >>> check_sparse_options(0, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: sparse_top_k must be a positive integer (or None: every weight), got 0

    Raises:
        ValueError: ``top_k`` is not a positive int (or ``None``), or ``min_weight`` is not
            finite (:func:`check_sparse_min_weight`).
        TypeError: ``min_weight`` is not a number.
    """
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or int(top_k) < 1
    ):
        raise ValueError(
            f"sparse_top_k must be a positive integer (or None: every weight), got {top_k!r}"
        )
    check_sparse_min_weight(min_weight)


def check_sparse_min_weight(min_weight: object) -> None:
    """Refuse a ``sparse_min_weight`` that is not a finite number: the one check of every
    entry point that takes it (``encode``, ``M3Index``'s sparse cut, the ``m3kit`` flags, the
    LangChain and LlamaIndex sparse embeddings, ``calibrate_fusion``).

    NaN and ``inf`` would drop every sparse weight (nothing is above them), emptying the sparse
    head silently; ``-inf`` keeps every weight as ``0.0`` does, but is no threshold anyone
    means. A negative finite value keeps every positive weight, as ``0.0`` does (``encode``
    takes it; an index's cut refuses it, :class:`~m3kit.store.sparse_cut.SparseCut`).

    >>> check_sparse_min_weight(0.25)
    >>> try:
    ...     check_sparse_min_weight(float("inf"))
    ... except ValueError as e:
    ...     print(str(e).split(";")[0])
    sparse_min_weight is inf: it would drop every sparse weight

    Raises:
        ValueError: ``min_weight`` is NaN or infinite.
        TypeError: ``min_weight`` is not a number.
    """
    if isinstance(min_weight, bool) or not isinstance(min_weight, numbers.Real):
        raise TypeError(
            "sparse_min_weight must be a number (sparse weights at or below it are dropped), "
            f"got {min_weight!r}"
        )
    value = float(min_weight)
    if not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else repr(value)
        effect = "keeps every weight as 0.0 does" if value < 0 else "would drop every sparse weight"
        raise ValueError(
            f"sparse_min_weight is {shown}: it {effect}; give a finite number (sparse "
            "weights at or below it are dropped; 0.0 keeps every positive one)"
        )


def finite_sparse_min_weight(value: object) -> object:
    """``value`` itself, after :func:`check_sparse_min_weight` when it is a number: the
    (``mode="before"``) pydantic validator of the adapters' ``sparse_min_weight`` fields, so
    they refuse NaN and infinities with the core's message; other input is left to pydantic.

    Raises:
        ValueError: ``value`` is NaN or infinite.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        check_sparse_min_weight(value)
    return value
