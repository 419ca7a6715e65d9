"""Where late chunking's forward passes (windows) sit over a long document.

A document longer than one window is encoded in several windows; every document token's state
is taken from exactly one of them (the window that *owns* it). Two placements:

- :attr:`WindowPlacement.CENTRED` (default): windows of the full width at a fixed stride
  ``capacity - overlap``; each token is owned by the window in which it sits most centrally
  (consecutive windows' shared tokens are split at their midpoint), so every token, and so
  every chunk, sees at least ``overlap // 2`` tokens of context on *both* sides (less only at
  the document's edges). A chunk may take its tokens' states from two windows.
- :attr:`WindowPlacement.CHUNKS`: windows break only between chunks, each owning whole
  chunks plus ``overlap // 2`` context tokens on either side (the placement before issue #19:
  with ``overlap=0`` a chunk at a window's edge sees context on one side only).

All positions here are among the document's *text* tokens (special tokens excluded).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "WindowPlacement",
    "plan_chunk_windows",
    "plan_document_windows",
    "plan_windows",
]


class WindowPlacement(str, enum.Enum):
    """How a long document's windows are laid out (see the module docstring)."""

    CENTRED = "centred"  # fixed stride, each token from the window where it is most central
    CHUNKS = "chunks"  # windows break between chunks, each owns whole chunks


@dataclass(frozen=True)
class Window:
    """Content tokens ``[start, end)`` go in; states of ``[own_start, own_end)`` are kept."""

    start: int
    end: int
    own_start: int
    own_end: int


def plan_windows(n: int, capacity: int, overlap: int) -> list[Window]:
    """Windows of at most ``capacity`` content tokens over ``n`` tokens, ``overlap`` shared.

    Fixed-stride windows (stride ``capacity - overlap``; the last one ends at ``n``). Each
    token is owned once, by the window in which it is farthest from the edge (the tokens two
    windows share are split at their midpoint), so an owned token has at least
    ``overlap // 2`` tokens of context on each side inside its window, or all there is up to
    the document's edge.

    >>> [(w.start, w.end, w.own_start, w.own_end) for w in plan_windows(10, 4, 2)]
    [(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
    """
    if capacity < 1 or not 0 <= overlap < capacity:
        raise ValueError(f"need capacity >= 1 and 0 <= overlap < capacity ({capacity}, {overlap})")
    if n <= capacity:
        return [Window(0, n, 0, n)]
    starts = [*range(0, n - capacity, capacity - overlap), n - capacity]
    ends = [s + capacity for s in starts]
    cuts = [0, *((starts[j + 1] + ends[j]) // 2 for j in range(len(starts) - 1)), n]
    pairs = enumerate(zip(starts, ends, strict=True))
    return [Window(s, e, cuts[j], cuts[j + 1]) for j, (s, e) in pairs]


def plan_chunk_windows(
    bounds: Sequence[tuple[int, int]], capacity: int, overlap: int
) -> list[Window]:
    """Windows that break only between chunks, for a document longer than one window.

    ``bounds`` are the chunks' token ranges, tiling ``[0, n)`` in order. Each window owns whole
    consecutive chunks, as many as fit in ``capacity`` tokens together with their context: up to
    ``overlap // 2`` tokens before and ``overlap - overlap // 2`` after (less at the document's
    edges), so consecutive windows share ``overlap`` tokens. The context tokens are owned by the
    neighbouring windows, so every token's state is taken once and no chunk mixes
    states from two windows. A chunk longer than ``capacity`` is split by :func:`plan_windows`
    inside its own range.

    >>> chunks = [(0, 3), (3, 6), (6, 9), (9, 10)]
    >>> [(w.start, w.end, w.own_start, w.own_end) for w in plan_chunk_windows(chunks, 6, 0)]
    [(0, 6, 0, 6), (6, 10, 6, 10)]
    >>> [(w.start, w.end, w.own_start, w.own_end) for w in plan_chunk_windows(chunks, 6, 2)]
    [(0, 4, 0, 3), (2, 7, 3, 6), (5, 10, 6, 10)]
    """
    if capacity < 1 or not 0 <= overlap < capacity:
        raise ValueError(f"need capacity >= 1 and 0 <= overlap < capacity ({capacity}, {overlap})")
    n = bounds[-1][1] if bounds else 0
    if n <= capacity:
        return [Window(0, n, 0, n)]

    before, after = overlap // 2, overlap - overlap // 2

    def context(a: int, b: int) -> tuple[int, int]:
        want_left, want_right = min(before, a), min(after, n - b)
        room = capacity - (b - a)
        if want_left + want_right <= room:
            return want_left, want_right
        left = min(want_left, max(room // 2, room - want_right))
        return left, min(want_right, room - left)

    windows: list[Window] = []
    i = 0
    while i < len(bounds):
        a, b = bounds[i]
        if b - a > capacity:
            for w in plan_windows(b - a, capacity, overlap):
                windows.append(Window(w.start + a, w.end + a, w.own_start + a, w.own_end + a))
            i += 1
            continue
        while i + 1 < len(bounds):
            nb = bounds[i + 1][1]
            if (nb - a) + min(before, a) + min(after, n - nb) > capacity:
                break
            i, b = i + 1, nb
        left, right = context(a, b)
        windows.append(Window(a - left, b + right, a, b))
        i += 1
    return windows


def plan_document_windows(
    placement: WindowPlacement,
    bounds: Sequence[tuple[int, int]],
    capacity: int,
    overlap: int,
) -> list[Window]:
    """The windows of one document (chunk token ranges ``bounds``) for a placement.

    >>> chunks = [(0, 3), (3, 6), (6, 9), (9, 10)]
    >>> [(w.start, w.end, w.own_start, w.own_end)
    ...  for w in plan_document_windows(WindowPlacement.CENTRED, chunks, 6, 2)]
    [(0, 6, 0, 5), (4, 10, 5, 10)]
    """
    if placement is WindowPlacement.CHUNKS:
        return plan_chunk_windows(bounds, capacity, overlap)
    return plan_windows(bounds[-1][1] if bounds else 0, capacity, overlap)
