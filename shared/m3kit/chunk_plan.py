"""How a document is cut into chunks, before any model runs: spans, token ranges, capacity.

:class:`SpanPlanner` tokenises a document whole (character offsets included) and cuts it into
chunk spans (built-in sentence packer or a given splitter, :mod:`m3kit.chunk_spans`), giving
every token to exactly one chunk (:class:`ChunkPlan`). Both chunkers,
:class:`m3kit.chunking.NaiveChunker` and :class:`m3kit.late_chunking.LateChunker`, plan with it,
so for the same ``chunk_size`` (or splitter) they cut exactly the same spans.

Also here: the chunk size and window capacity of a model (:func:`default_chunk_size`,
:func:`text_capacity`, :func:`chunks_over`), where tokens start (:func:`token_starts`) and the
untruncated tokenizer copy they are counted with (:func:`offsets_tokenizer`,
:func:`special_affixes`). The public names stay importable from :mod:`m3kit.chunking`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from m3kit.chunk_spans import (
    BLANK_RUN,
    Span,
    SpanSplitter,
    assign_tokens,
    normalize_spans,
    pack_sentences,
    sentence_starts,
    starts_between_tokens,
)
from m3kit.encoder_inputs import whole_number
from m3kit.fingerprint import describe_settings
from m3kit.piece_spans import PIECE_PLACEMENT, as_span_splitter, places_pieces

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkPlan",
    "SpanPlanner",
    "chunks_over",
    "default_chunk_size",
    "offsets_tokenizer",
    "special_affixes",
    "text_capacity",
    "token_starts",
    "whole_tokens",
]

logger = logging.getLogger(__name__)

#: Token budget per chunk when none is given (capped by the model's window, see
#: :func:`default_chunk_size`): FlagEmbedding's passage length for BGE-M3 and the chunk size of
#: this project's late-chunking benchmarks.
DEFAULT_CHUNK_SIZE = 256
_PROBE = "hello world"


def default_chunk_size(encoder: M3Encoder) -> int:
    """:data:`DEFAULT_CHUNK_SIZE`, or fewer when the model's window holds fewer text tokens.

    E.g. 256 for BGE-M3 (``max_length`` 8192), 254 for all-MiniLM-L6-v2 (256 minus CLS and
    SEP), so that a chunk encoded alone is never truncated.
    """
    return min(DEFAULT_CHUNK_SIZE, text_capacity(encoder))


def whole_tokens(name: str, value: object) -> int:
    """A chunker's token setting (``chunk_size``, ``window``, ``overlap``) as an ``int``
    (:func:`~m3kit.encoder_inputs.whole_number`, counted in tokens).

    >>> whole_tokens("overlap", np.int64(4))
    4

    Raises:
        ValueError: ``value`` is not an integer; the message names the setting.
    """
    return whole_number(name, value, "tokens")


def text_capacity(encoder: M3Encoder) -> int:
    """Most text tokens one forward pass holds: ``max_length`` minus the special tokens."""
    prefix, suffix = _affixes(encoder)
    return encoder.max_length - len(prefix) - len(suffix)


@dataclass(frozen=True)
class ChunkPlan:
    """How one document is cut into chunks (no model involved).

    Attributes:
        text: The document.
        ids: Its token ids, special tokens included (never truncated).
        spans: Each chunk's character span.
        token_bounds: Each chunk's token range in ``ids``; the leading special tokens belong to
            the first chunk and the trailing ones to the last.
        content_bounds: Each chunk's range among the text tokens (specials excluded).
    """

    text: str
    ids: npt.NDArray[np.int64]
    spans: list[Span]
    token_bounds: list[tuple[int, int]]
    content_bounds: list[tuple[int, int]]


class SpanPlanner:
    """Chunk spans of documents: built-in sentence packer or a given splitter.

    Args:
        encoder: Whose tokenizer counts the tokens.
        chunk_size: Token budget per chunk of the sentence packer (special tokens not counted).
        splitter: Instead of the packer: a callable ``str -> [(start, end)]`` or anything with
            ``split_text`` (see :func:`~m3kit.piece_spans.as_span_splitter`).
    """

    def __init__(self, encoder: M3Encoder, *, chunk_size: int, splitter: Any = None) -> None:
        chunk_size = whole_tokens("chunk_size", chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 token, got {chunk_size}")
        self.chunk_size = chunk_size
        self.tokenizer = _offsets_tokenizer(encoder)
        self.prefix, self.suffix = _affixes(encoder)
        self.splitter: SpanSplitter | None = (
            as_span_splitter(splitter) if splitter is not None else None
        )
        self._source = splitter
        self._said_overlap = False

    @property
    def splitter_name(self) -> str:
        """``"sentences"`` (the built-in packer), or the splitter's type and *every* setting.

        Read when asked (:func:`m3kit.fingerprint.describe_settings`), so a setting changed
        after the chunker was built still shows: two splitters of one class with different
        settings never share a chunker signature.
        """
        if self._source is None:
            return "sentences"
        name = describe_settings(self._source)
        if places_pieces(self._source):
            # how its pieces are found in the text is part of the chunks: a new placement
            # (PIECE_PLACEMENT) makes documents stored with the old one new versions
            name += f"+{PIECE_PLACEMENT}"
        return name

    def plan(self, text: str) -> ChunkPlan:
        """Tokenise ``text`` whole and cut it into chunks; every token in exactly one chunk."""
        return self._cut(text, self.tokenizer.encode(text, add_special_tokens=False))

    def plan_many(self, texts: Sequence[str]) -> list[ChunkPlan]:
        """:meth:`plan` of each text, tokenised in one batch."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [self._cut(t, e) for t, e in zip(texts, encodings, strict=True)]

    def _cut(self, text: str, enc: Any) -> ChunkPlan:
        content = np.asarray(enc.ids, dtype=np.int64)
        tok_starts = token_starts(text, enc.offsets)
        if self.splitter is None:
            ends = np.asarray([e for _, e in enc.offsets], dtype=np.int64)
            sents = starts_between_tokens(sentence_starts(text), tok_starts, ends, text)
            bounds = pack_sentences(sents, tok_starts, self.chunk_size, text, ends)
            raw: Sequence[Any] = list(zip(bounds, [*bounds[1:], len(text)], strict=True))
        else:
            raw = self.splitter(text)
        # a splitter's span of whitespace only is merged; the packer makes none where its
        # budget allows (and keeps the budget where a whitespace run is longer than it)
        blank = None if self.splitter is None else text
        disjoint = normalize_spans(raw, len(text))
        if not self._said_overlap and _covered(raw) > _covered(disjoint):
            self._said_overlap = True  # once per chunker, not per text
            logger.warning(
                "the splitter's chunks overlap; each is trimmed to start where the one before "
                "ends, so every token belongs to one chunk (late chunking gives it its context "
                "instead): the splitter's overlap is dropped (give it chunk_overlap=0)"
            )
        spans, counts = assign_tokens(disjoint, tok_starts, blank)
        p, n = len(self.prefix), int(content.shape[0])
        ends = np.cumsum(counts).tolist()
        content_bounds = [(e - c, e) for e, c in zip(ends, counts, strict=True)]
        token_bounds = [(p + a, p + b) for a, b in content_bounds]
        token_bounds[0] = (0, token_bounds[0][1])
        token_bounds[-1] = (token_bounds[-1][0], p + n + len(self.suffix))
        ids = np.concatenate(
            [np.asarray(self.prefix, np.int64), content, np.asarray(self.suffix, np.int64)]
        )
        return ChunkPlan(text, ids, spans, token_bounds, content_bounds)


def chunks_over(bounds: Sequence[tuple[int, int]], capacity: int) -> list[tuple[int, int]]:
    """``(chunk index, text tokens)`` of each chunk (``content_bounds`` of a plan) longer than
    ``capacity`` text tokens: what a chunker refuses to encode alone (it would be truncated).

    >>> chunks_over([(0, 3), (3, 9), (9, 10)], 5)
    [(1, 6)]
    """
    return [(i, b - a) for i, (a, b) in enumerate(bounds) if b - a > capacity]


def token_starts(text: str, offsets: Sequence[tuple[int, int]]) -> npt.NDArray[np.int64]:
    """Where each token starts, for giving it to a chunk: its first non-whitespace character
    (zero-width spaces, joiners, direction marks and byte order marks count as whitespace:
    :data:`~m3kit.chunk_spans.BLANK_RUN`).

    SentencePiece tokenizers (XLM-RoBERTa, so BGE-M3) give a word's first piece an offset that
    includes the space before it (``"▁Sent"`` of ``" Sentence"`` starts at the space). That space
    ends the previous sentence, so by its raw offset the piece would go to the previous chunk
    and each chunk would start mid-word. A token made only of whitespace keeps its offset.

    >>> token_starts("Hi. Sentence", [(0, 2), (2, 3), (3, 8), (8, 12)]).tolist()
    [0, 2, 4, 8]
    """
    starts = np.asarray([s for s, _ in offsets], dtype=np.int64)
    ends = np.asarray([e for _, e in offsets], dtype=np.int64)
    if starts.size == 0:
        return starts
    first_letter = np.arange(len(text) + 1, dtype=np.int64)
    for run in BLANK_RUN.finditer(text):
        first_letter[run.start() : run.end()] = run.end()
    moved = first_letter[np.clip(starts, 0, len(text))]
    return np.where(moved < ends, moved, starts)


# -- tokenizer helpers (shared with m3kit.chunking.document_token_ids) ------------------------
_TOKENIZERS: weakref.WeakKeyDictionary[M3Encoder, Any] = weakref.WeakKeyDictionary()
_TOKENIZERS_LOCK = threading.Lock()


def _offsets_tokenizer(encoder: M3Encoder) -> Any:
    """The encoder's fast tokenizer without truncation or padding (one copy per encoder).

    A copy, so that long documents are tokenised whole (character offsets included) without
    touching the truncation settings the encoder's own tokenizer is using in other threads.
    ``tokenizers.Tokenizer.encode`` does not change the tokenizer, so the copy is shared.
    """
    with _TOKENIZERS_LOCK:
        tok = _TOKENIZERS.get(encoder)
        if tok is None:
            tok = offsets_tokenizer(encoder)
            _TOKENIZERS[encoder] = tok
        return tok


def offsets_tokenizer(encoder: M3Encoder) -> Any:
    """A new private copy of the encoder's fast tokenizer, without truncation or padding."""
    from tokenizers import Tokenizer

    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("chunking needs a fast (tokenizers-backed) tokenizer")
    tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _affixes(encoder: M3Encoder) -> tuple[list[int], list[int]]:
    return special_affixes(_offsets_tokenizer(encoder))


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text."""
    plain = tokenizer.encode(_PROBE, add_special_tokens=False).ids
    full = tokenizer.encode(_PROBE, add_special_tokens=True).ids
    for at in range(len(full) - len(plain) + 1):
        if full[at : at + len(plain)] == plain:
            return list(full[:at]), list(full[at + len(plain) :])
    raise ValueError("could not locate the text between the tokenizer's special tokens")


def _covered(spans: Sequence[Any]) -> int:
    """Characters the spans cover, counting overlaps twice (spans checked already)."""
    return sum(int(end) - int(start) for start, end in spans)
