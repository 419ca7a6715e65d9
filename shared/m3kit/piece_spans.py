"""Other splitters' chunks as character spans: :func:`as_span_splitter` turns a callable
``str -> [(start, end)]`` or any object with ``split_text(str) -> list[str]`` (LangChain
``TextSplitter``, LlamaIndex ``SentenceSplitter`` / ``TokenTextSplitter``) into a span
function; returned strings are located in the document (:func:`spans_of_pieces`: as
LangChain's ``add_start_index``, and covering the document).

>>> spans_of_pieces("One two. Three four.", ["One two.", "Three four."])
[(0, 8), (9, 20)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from m3kit.chunk_spans import Span, SpanSplitter

__all__ = [
    "PIECE_PLACEMENT",
    "as_span_splitter",
    "piece_overlap",
    "places_pieces",
    "spans_of_pieces",
]


def piece_overlap(splitter: Any) -> int | None:
    """Characters a text splitter's consecutive pieces may share, when it counts in characters.

    A LangChain ``TextSplitter`` measuring with ``len`` gives ``_chunk_overlap`` (what its own
    ``add_start_index`` uses); any other splitter (LlamaIndex's count tokens) gives ``None``.
    """
    overlap = getattr(splitter, "_chunk_overlap", None)
    if isinstance(overlap, int) and getattr(splitter, "_length_function", None) is len:
        return overlap
    return None


def spans_of_pieces(text: str, pieces: Sequence[str], overlap: int | None = None) -> list[Span]:
    """Locate a text splitter's chunk strings in ``text`` so that together they cover it.

    Each piece is first looked for where LangChain's ``add_start_index`` looks: from the
    previous piece's end minus ``overlap`` characters (``None``: unknown, no overlap expected),
    but not before the previous piece's start. In repetitive text that first guess can be a wrong
    copy (one that also occurs inside the previous piece), leaving text in no chunk; so a
    placement must cover every non-whitespace character of ``text``, and when the first guess
    does not, the other occurrences are tried (nearest to the guess first) until one does.
    Empty pieces are skipped.

    Raises:
        ValueError: A piece is not in ``text`` after the previous one (the splitter rewrote
            the text), or no placement covers ``text`` (the splitter dropped text, e.g. a
            separator with ``keep_separator=False``); the message quotes the text concerned.
    """
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        if not isinstance(piece, str):
            raise TypeError(f"splitter returned {type(piece).__name__} at position {i}, not str")
        if piece:
            kept.append(piece)
    starts = _PiecePlacer(text, kept, overlap).place()
    return [(s, s + len(p)) for s, p in zip(starts, kept, strict=True)]


_PLACEMENT_STEPS = 200_000  # occurrences tried before giving up on a (pathological) document


class _PiecePlacer:
    """Depth-first search for piece starts: never decreasing, no uncovered non-whitespace text.

    (A piece may start where the previous one does: LangChain's recursive splitter with
    ``chunk_overlap`` can follow a short piece with a longer one from the same offset.)
    """

    def __init__(self, text: str, pieces: list[str], overlap: int | None) -> None:
        self.text, self.pieces, self.overlap = text, pieces, overlap
        n = len(text)
        solid = [n] * (n + 1)  # solid[k]: first non-whitespace index >= k (n if none)
        for k in range(n - 1, -1, -1):
            solid[k] = solid[k + 1] if text[k].isspace() else k
        self.solid = solid

    def candidates(self, i: int, prev_start: int, prev_end: int, reach: int) -> list[int]:
        """Starts for piece ``i``: none past ``solid[reach]`` (no gap), the guess first."""
        piece, text = self.pieces[i], self.text
        stop = self.solid[reach] + len(piece)
        found = []
        at = text.find(piece, prev_start, stop)
        while at >= 0:
            found.append(at)
            at = text.find(piece, at + 1, stop)
        guess = self.guess(prev_start, prev_end, reach)
        return [a for a in found if a >= guess] + [a for a in reversed(found) if a < guess]

    def guess(self, prev_start: int, prev_end: int, reach: int) -> int:
        expected = reach if self.overlap is None else prev_end - self.overlap
        return max(prev_start, expected)

    def place(self) -> list[int]:
        pieces, n = self.pieces, len(self.text)
        if not pieces:
            return []
        failed: set[tuple[int, int, int, int]] = set()
        frames = [((0, 0, 0), iter(self.candidates(0, 0, 0, 0)))]
        chosen: list[int] = []
        steps = 0
        while frames:
            (prev_start, prev_end, reach), cands = frames[-1]
            i = len(frames) - 1
            start = next(cands, None)
            if start is None:  # no placement of pieces i.. works after this state
                failed.add((i, prev_start, prev_end, reach))
                frames.pop()
                if chosen:
                    chosen.pop()
                continue
            steps += 1
            if steps > _PLACEMENT_STEPS:
                raise ValueError(
                    f"{self.explain()} (no placement covering the document found in "
                    f"{_PLACEMENT_STEPS} tries: very repetitive text)"
                )
            end = start + len(pieces[i])
            state = (start, end, max(reach, end))
            if i + 1 == len(pieces):
                if self.solid[state[2]] == n:
                    return [*chosen, start]
                continue
            if (i + 1, *state) in failed:
                continue
            chosen.append(start)
            frames.append((state, iter(self.candidates(i + 1, *state))))
        raise self.explain()

    def explain(self) -> ValueError:
        """Why no placement covers the document, from the first-guess placement."""
        text, n = self.text, len(self.text)
        prev_start, prev_end, reach = 0, 0, 0
        spans: list[Span] = []
        for i, piece in enumerate(self.pieces):
            guess = self.guess(prev_start, prev_end, reach)
            at = text.find(piece, guess)
            if at < 0:
                at = text.rfind(piece, prev_start, guess + len(piece) - 1)
            if at < 0:
                return ValueError(
                    f"splitter chunk {i} ({piece[:40]!r}...) is not found in the document "
                    f"{_excerpt(text, 0)} from offset {prev_start}: the splitter changed "
                    "the text, so the chunk has no character span; use a splitter that "
                    "returns substrings or pass span boundaries"
                )
            spans.append((at, at + len(piece)))
            prev_start, prev_end, reach = at, at + len(piece), max(reach, at + len(piece))
        covered = 0
        for a, b in sorted(spans):
            if self.solid[covered] < a:
                break
            covered = max(covered, b)
        gap = self.solid[covered]
        if gap == n:  # not reached: the first guess covering the text is the placement found
            return ValueError(f"could not place the splitter's chunks in {_excerpt(text, 0)}")
        gap_end = min([a for a, _ in spans if a > gap] + [n])
        return ValueError(
            f"the splitter's chunks leave characters {gap}-{gap_end} "
            f"({text[gap:gap_end][:60]!r}) of the document {_excerpt(text, 0)} in no chunk "
            "(the splitter dropped text, e.g. a separator with keep_separator=False), so no "
            "chunk would store it; use a splitter that keeps every character, or pass "
            "(start, end) spans"
        )


def _excerpt(text: str, at: int) -> str:
    part = text[at : at + 40]
    return repr(part) + ("..." if len(text) > at + 40 else "")


#: How :func:`spans_of_pieces` places a splitter's pieces (part of a chunker's signature):
#: ``cover`` = as LangChain's ``add_start_index``, covering the document. Before it, each piece
#: was searched from just after the previous piece's start and could leave text in no chunk.
PIECE_PLACEMENT = "pieces=cover"


def places_pieces(splitter: Any) -> bool:
    """Whether ``splitter``'s spans come from placing its pieces (:func:`spans_of_pieces`): a
    text splitter (``split_text``) or a function marked ``places_pieces = True``
    (``llamaindex_m3.node_parser.node_parser_spans``)."""
    return callable(getattr(splitter, "split_text", None)) or (
        getattr(splitter, "places_pieces", False) is True
    )


def as_span_splitter(splitter: Any) -> SpanSplitter:
    """Turn a callable or a text splitter into a function ``text -> [(start, end), ...]``.

    Accepted: an object with ``split_text(str) -> list[str]`` (LangChain ``TextSplitter``,
    LlamaIndex ``TextSplitter``s such as ``SentenceSplitter``), or a callable returning spans.
    LlamaIndex node parsers without ``split_text`` need LlamaIndex documents, which the core
    does not import: wrap them with ``llamaindex_m3.node_parser.node_parser_spans(parser)``.
    """
    split_text = getattr(splitter, "split_text", None)
    if callable(split_text):
        overlap = piece_overlap(splitter)

        def by_pieces(text: str) -> list[Span]:
            return spans_of_pieces(text, split_text(text), overlap)

        return by_pieces
    if hasattr(splitter, "get_nodes_from_documents"):
        raise TypeError(
            f"{type(splitter).__name__} is a LlamaIndex node parser without split_text(); wrap "
            "it with llamaindex_m3.node_parser.node_parser_spans(parser) to give it to the core"
        )
    if callable(splitter):
        return splitter  # type: ignore[no-any-return]
    raise TypeError(
        f"splitter must be a callable str -> [(start, end)], or have split_text(); "
        f"got {type(splitter).__name__}"
    )
