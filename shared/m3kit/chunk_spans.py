"""Character spans of chunks: a sentence-aware token-budget splitter and splitter adapters.

Late chunking needs every chunk as a character span of its document. This module finds them:

- :func:`sentence_starts` + :func:`pack_sentences`: m3kit's own splitter (whole sentences packed
  up to a token budget; a sentence longer than the budget is cut between words where a word
  starts within half the budget back, else at a token boundary).
- :func:`~m3kit.piece_spans.as_span_splitter` (in :mod:`m3kit.piece_spans`): other splitters'
  chunks as spans.
- :func:`normalize_spans`: validates a splitter's spans and makes them sorted and disjoint.

>>> text = "One two. Three four five! 北京很大。上海也很大。"
>>> [text[s:e] for s, e in zip(sentence_starts(text), [*sentence_starts(text)[1:], len(text)])]
['One two. ', 'Three four five! ', '北京很大。', '上海也很大。']
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLANK_RUN",
    "Span",
    "SpanSplitter",
    "assign_tokens",
    "is_blank",
    "normalize_spans",
    "pack_sentences",
    "sentence_starts",
    "starts_between_tokens",
]

logger = logging.getLogger(__name__)

Span = tuple[int, int]
SpanSplitter = Callable[[str], Sequence[tuple[int, int]]]

# Hand-written on purpose: the core may only use its own dependencies (nltk / llama-index /
# langchain splitters belong to the adapters' extras), and chunking only needs *plausible*
# boundaries - a wrong cut after "Mr." costs nothing because sentences are packed up to a token
# budget anyway. Latin-script terminators need following whitespace; those that are never a
# decimal point or an abbreviation's dot do not: CJK (。！？；｡), Devanagari and Bengali (। ॥),
# Urdu (۔), Arabic (؟), Armenian (։), Ethiopic (።), Myanmar (။), Khmer (។), Tibetan (།); a line
# break always ends a unit. Closing quotes / brackets stay with their sentence.
#: Whitespace, and the zero-width characters SentencePiece's normaliser (XLM-R, so BGE-M3) reads
#: as a space though ``str.isspace`` does not: zero-width space, (non-)joiners, direction marks,
#: byte order mark (``"ab\u200bcd"`` is ``"▁ab" "▁cd"``, ``"▁cd"`` starting at the ``"\u200b"``).
_BLANK = r"[\s\u200b-\u200f\ufeff]"
BLANK_RUN = re.compile(_BLANK + "+")

# (the blanks after a terminator, zero-width ones included, stay with its sentence: a lone
# "\u200b" after a line break was a sentence of its own, so a chunk of nothing visible)
_SENTENCE_END = re.compile(
    r"[.!?…]+[\"'”’)\]»]*" + _BLANK + "+"
    r"|[。！？；｡।॥۔؟։።။។།]+[”’」』）》\"'»)\]]*" + _BLANK + "*"
    r"|\n" + _BLANK + "*"
)


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only :data:`BLANK_RUN` characters.

    >>> is_blank(" \\u200b\\n"), is_blank("\\u200bx")
    (True, False)
    """
    return not text or BLANK_RUN.fullmatch(text) is not None


def sentence_starts(text: str) -> list[int]:
    r"""Character offsets where sentences start: ``0`` then one after each sentence end.

    Trailing whitespace belongs to the sentence before it, so the sentences tile ``text``;
    so do the zero-width characters XLM-R reads as spaces (:data:`BLANK_RUN`), which made a
    sentence, so a chunk, of nothing visible:

    >>> sentence_starts("One.\n\u200bTwo. Three.\n\u200b")
    [0, 6, 11]
    """
    starts = [0]
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if starts[-1] < end < len(text):
            starts.append(end)
    return starts


def starts_between_tokens(
    sent_starts: Sequence[int],
    token_starts: npt.NDArray[np.int64],
    token_ends: npt.NDArray[np.int64],
    text: str,
) -> list[int]:
    """Sentence starts moved out of tokens: a start inside a token goes past its end.

    XLM-R's normaliser folds full-width punctuation into ASCII, so ``"Yes！!Sure"`` has the one
    token ``"!!"`` over the sentence end after ``"！"``; cutting there would give the chunk
    before that token a character of the chunk after it. The start moves after the token (and
    any whitespace following it, which ends the sentence before); starts that meet are merged.

    Args:
        sent_starts: Ascending sentence starts (:func:`sentence_starts`).
        token_starts: Where each token starts (:func:`m3kit.chunk_plan.token_starts`).
        token_ends: Where each token ends (its offsets' end).
        text: The document.

    >>> starts_between_tokens([0, 4, 9], np.array([0, 3, 9]), np.array([3, 5, 12]), "Yes！! Sure")
    [0, 6, 9]
    """
    tok = np.asarray(token_starts, dtype=np.int64)
    if tok.size == 0:
        return list(sent_starts)
    tok = np.maximum.accumulate(tok)  # sorted, for searching
    reach = np.maximum.accumulate(np.asarray(token_ends, dtype=np.int64))
    out: list[int] = []
    for start in sent_starts:
        at = int(start)
        while at > 0:  # the end of the tokens starting before ``at``, while past it
            before = int(np.searchsorted(tok, at, side="left"))
            if before == 0 or int(reach[before - 1]) <= at:
                break
            at = int(reach[before - 1])
            while at < len(text) and text[at].isspace():
                at += 1
        if (not out or at > out[-1]) and (at < len(text) or not out):
            out.append(at)
    return out


def pack_sentences(
    sent_starts: Sequence[int],
    token_starts: npt.NDArray[np.int64],
    chunk_size: int,
    text: str | None = None,
    token_ends: npt.NDArray[np.int64] | None = None,
) -> list[int]:
    """Pack whole sentences into chunks of at most ``chunk_size`` tokens.

    Args:
        sent_starts: Ascending sentence start offsets, the first one 0 (:func:`sentence_starts`).
        token_starts: Start character of every (non-special) token of the text, in order.
        chunk_size: Token budget per chunk.
        text: The text; with it no chunk is made of whitespace tokens only where the budget
            allows (SentencePiece's lone ``"▁"`` of a trailing newline, or of the space before
            CJK text, is a token that starts at whitespace): a sentence is never cut so that
            only such tokens follow the cut, and such tokens at the start of the text ride
            along with the sentence after them.
        token_ends: Where each token ends (its offsets' end). With them a sentence is never
            cut inside a token: XLM-R reads ``"Oﬃzier"`` as ``"▁Off" "izi" "er"``, and
            ``"izi"`` starts inside ``"ﬃ"``, before ``"▁Off"`` ends.

    Returns:
        Ascending chunk start offsets, the first one 0. A token belongs to the chunk its first
        character falls in. A sentence longer than the budget is cut at token starts (never
        between two tokens that start at the same character, e.g. the pieces of one emoji,
        nor before the end of a token, given ``token_ends``); given ``text``, between two
        words where a word starts within half the budget back (:func:`_word_cut`).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = np.asarray(sent_starts, dtype=np.int64)
    tok = np.asarray(token_starts, dtype=np.int64)
    if tok.size == 0:
        return [0]
    # how far the tokens up to each one reach (without ends: their starts, no extra limit)
    reach = tok if token_ends is None else np.maximum.accumulate(np.asarray(token_ends, np.int64))
    if text is None:
        solid = np.ones(tok.shape[0], dtype=bool)
    else:  # the token starts at a character other than whitespace (:func:`is_blank`)
        solid = np.asarray([t < len(text) and not is_blank(text[t]) for t in tok.tolist()])
    sent_of = np.maximum.accumulate(
        np.clip(np.searchsorted(starts, tok, side="right") - 1, 0, None)
    )
    counts = np.bincount(sent_of, minlength=starts.shape[0])
    first_tok = np.searchsorted(sent_of, np.arange(starts.shape[0]), side="left")
    bounds = [0]
    used = 0  # tokens in the chunk being filled
    has_solid = False  # whether one of them is solid (else they ride along with what follows)
    for j, count in enumerate(counts.tolist()):
        if count == 0:
            continue  # whitespace-only "sentence": rides along with the current chunk
        first = int(first_tok[j])
        if used and has_solid and used + count > chunk_size:
            bounds.append(int(max(starts[j], bounds[-1])))
            used, has_solid = 0, False
        if used + count <= chunk_size:
            used += count
            has_solid = has_solid or bool(solid[first : first + count].any())
            continue
        pos, end = first - used, first + count
        solid_at = np.flatnonzero(solid[pos:end])
        last = pos + int(solid_at[-1]) if solid_at.size else -1  # the sentence's last solid
        while end - pos > chunk_size:
            cut = _word_cut(tok, reach, text, pos, pos + chunk_size) if text is not None else None
            cut = cut if cut is not None else _cut_point(tok, reach, pos, pos + chunk_size, end)
            if cut is None:
                break  # every remaining token starts at one character: cannot cut
            if cut > last:  # only whitespace tokens after it: cut before its last solid token
                earlier = _cut_point(tok, reach, pos, last, last + 1) if last > pos else None
                if earlier is not None and end - earlier <= chunk_size:
                    cut = earlier
            if tok[cut] > bounds[-1]:
                bounds.append(int(tok[cut]))
            pos = cut
        used = end - pos
        has_solid = bool(solid[pos:end].any())
    return bounds


def _cut_point(
    tok: npt.NDArray[np.int64], reach: npt.NDArray[np.int64], lo: int, want: int, hi: int
) -> int | None:
    """A token index in ``(lo, hi)`` near ``want`` whose start is after its predecessor's and
    no earlier than where the tokens before it end (``reach``: their running end)."""
    for cut in range(want, lo, -1):
        if _cuts_between(tok, reach, cut):
            return cut
    for cut in range(want + 1, hi):
        if _cuts_between(tok, reach, cut):
            return cut
    return None


def _word_cut(
    tok: npt.NDArray[np.int64], reach: npt.NDArray[np.int64], text: str, lo: int, want: int
) -> int | None:
    """The last token index in ``[want - (want - lo) // 2, want]`` (at most half the budget
    back) where a chunk may start (:func:`_cuts_between`) between two words
    (:func:`_joins_word`); ``None`` when there is none (a long URL, Thai or Khmer without
    spaces): the caller then cuts at any token. A sentence over the budget was cut at the
    token the budget reached, in the middle of a word when a word start was 1-6 tokens back
    (``"rain|forest"``, ``"scientist|s"``), as LangChain's and LlamaIndex's splitters never
    cut at the same budget."""
    for cut in range(want, max(lo, want - (want - lo) // 2), -1):
        at = int(tok[cut])
        if _cuts_between(tok, reach, cut) and not _joins_word(text, at):
            return cut
    return None


#: Characters that join what is on either side into one unit: zero-width joiner (emoji
#: sequences such as 👩‍👩‍👧‍👦), variation selectors, emoji skin-tone modifiers.
_JOINERS = re.compile("[\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff]")


def _joins_word(text: str, at: int) -> bool:
    """Whether a cut before ``text[at]`` falls inside a word: a run of characters other than
    whitespace (``"3.|14"``, ``"couldn|'t"``, Korean ``"킬로미터|에"`` too), where Chinese and
    Japanese characters are words of their own; or inside a joined sequence (emoji).

    >>> [_joins_word("rain forest", i) for i in (2, 4, 5)], _joins_word("北京", 1)
    ([True, False, False], False)
    """
    if at <= 0 or at >= len(text):
        return False
    before, after = text[at - 1], text[at]
    if _JOINERS.match(after) or before == "\u200d":
        return True
    if is_blank(before) or is_blank(after):
        return False
    return not (_own_word(before) or _own_word(after))


def _own_word(ch: str) -> bool:
    """A wide character of a script that writes no spaces between words (Han, kana, their
    punctuation); Hangul, though wide, is spaced between words."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and not unicodedata.name(
        ch, ""
    ).startswith("HANGUL")


def _cuts_between(tok: npt.NDArray[np.int64], reach: npt.NDArray[np.int64], cut: int) -> bool:
    """Whether a chunk may start at token ``cut``: no token before it shares a character."""
    return bool(tok[cut] > tok[cut - 1] and tok[cut] >= reach[cut - 1])


def normalize_spans(spans: Sequence[Any], text_len: int) -> list[Span]:
    """Validate spans and make them sorted, disjoint and non-empty.

    Overlapping spans are trimmed so each starts where the previous one ended (late chunking
    gives every token its context already, so overlap only duplicates text). No span at all
    (e.g. a whitespace-only text) gives one span over the whole text.

    Raises:
        ValueError: A span is not a pair of ints with ``0 <= start <= end <= text_len``.
    """
    checked: list[Span] = []
    for i, span in enumerate(spans):
        try:
            start, end = span
        except (TypeError, ValueError):
            raise ValueError(f"span {i} is {span!r}, not a (start, end) pair") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in span):
            raise ValueError(f"span {i} is {span!r}: offsets must be ints")
        if not 0 <= start <= end <= text_len:
            raise ValueError(
                f"span {i} = ({start}, {end}) is outside the document of {text_len} characters "
                "(need 0 <= start <= end <= len(text))"
            )
        checked.append((int(start), int(end)))
    checked.sort()
    out: list[Span] = []
    for start, end in checked:
        if out and start < out[-1][1]:
            logger.debug(
                "trimming overlapping span (%d, %d) to start at %d", start, end, out[-1][1]
            )
            start = out[-1][1]
        if end > start:
            out.append((start, end))
    return out or [(0, text_len)]


def assign_tokens(
    spans: list[Span], tok_starts: npt.NDArray[np.int64], text: str | None = None
) -> tuple[list[Span], list[int]]:
    """Give each token to the chunk its start falls in; merge chunks left without tokens.

    With ``text``, a chunk of whitespace only (:func:`is_blank`) is merged too (a splitter's
    span of spaces can own SentencePiece's lone ``"▁"`` token of the space before CJK text:
    stored, it would be a hit with no text). A merged chunk joins the chunk before it (the
    first such chunk the one after it).

    Returns the final spans and the number of (non-special) tokens of each, in order.
    """
    starts = np.asarray([a for a, _ in spans], dtype=np.int64)
    if tok_starts.size:
        owner = np.clip(np.searchsorted(starts, tok_starts, side="right") - 1, 0, None)
        owner = np.maximum.accumulate(owner)
        counts = np.bincount(owner, minlength=len(spans)).tolist()
    else:
        counts = [0] * len(spans)
    merged: list[Span] = []
    merged_counts: list[int] = []
    merged_empty: list[bool] = []
    for (start, end), count in zip(spans, counts, strict=True):
        empty = count == 0 or (text is not None and is_blank(text[start:end]))
        if merged and (empty or merged_empty[-1]):
            merged[-1] = (merged[-1][0], end)
            merged_counts[-1] += count
            merged_empty[-1] = merged_empty[-1] and empty
        else:
            merged.append((start, end))
            merged_counts.append(count)
            merged_empty.append(empty)
    return merged, merged_counts
