"""Stitch late chunking's window states back into one array per document.

A long document is encoded in several windows (:mod:`m3kit.late_windows`); each document
token's state is taken from the one window that owns it. :func:`stitch_states` copies those
owned rows (hidden states, sparse weights, ColBERT vectors) into per-document-token arrays,
the document's leading and trailing special tokens from its first and last windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3kit.encoder_outputs import TokenStates
from m3kit.late_windows import Window
from m3kit.outputs import FloatArray, Head

__all__ = ["stitch_states"]


def stitch_states(
    windows: Sequence[Window],
    states: list[TokenStates],
    *,
    total: int,
    prefix: int,
    suffix: int,
    late_heads: frozenset[Head],
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Per-document-token arrays, each token's state taken from the window that owns it.

    ``total`` is the document's token count, specials included (``prefix`` leading and
    ``suffix`` trailing ones); sparse and ColBERT arrays only for heads in ``late_heads``.
    ColBERT row ``i`` is document token ``i``'s vector (row 0, the CLS, stays unused).
    """
    p, s = prefix, suffix
    n = total - p - s
    hidden = np.empty((total, states[0].hidden.shape[1]), dtype=np.float32)
    sparse = np.empty(total, dtype=np.float32) if Head.SPARSE in late_heads else None
    colbert = None
    if Head.COLBERT in late_heads:
        width = states[0].colbert.shape[1] if states[0].colbert is not None else 0
        colbert = np.zeros((total, width), dtype=np.float32)
    for w, st in zip(windows, states, strict=True):
        length = w.end - w.start
        pieces = [(p + w.own_start - w.start, p + w.own_start, w.own_end - w.own_start)]
        if w.own_start == 0:
            pieces.append((0, 0, p))  # the document's leading specials
        if w.own_end == n:
            pieces.append((p + length, p + n, s))  # the document's trailing specials
        for src, dst, count in pieces:
            if count <= 0:
                continue
            hidden[dst : dst + count] = st.hidden[src : src + count]
            if sparse is not None and st.sparse is not None:
                sparse[dst : dst + count] = st.sparse[src : src + count]
            if colbert is not None and st.colbert is not None:
                lo = max(src, 1)  # window position 0 (CLS) has no ColBERT vector
                colbert[dst + lo - src : dst + count] = st.colbert[lo - 1 : src + count - 1]
    return hidden, sparse, colbert
