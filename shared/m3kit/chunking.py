"""Chunking without losing text: one span planner, two ways to pool (naive and late).

A document longer than the model's ``max_length`` used to be stored as one truncated vector:
everything past the limit was missing from the index. Chunkers cut every document into chunks
that tile it (built-in sentence packer, :mod:`m3kit.chunk_spans`) and give each chunk its own
vectors, so no text is dropped:

- :class:`NaiveChunker`: each chunk encoded alone (its own forward pass), the classic way.
- :class:`m3kit.late_chunking.LateChunker`: the same chunks pooled from the whole-document pass.

Both plan their chunks with :class:`~m3kit.chunk_plan.SpanPlanner` (:mod:`m3kit.chunk_plan`:
spans, token ranges and the model's capacity; its public names are re-exported here), so for
the same ``chunk_size`` (or splitter) they cut exactly the same spans; late chunking is a choice
of pooling on top of them. Both satisfy the :class:`Chunker` protocol that
:meth:`m3kit.store.M3Index.add_texts` takes.

Example::

    from m3kit import M3Encoder
    from m3kit.chunking import NaiveChunker

    chunker = NaiveChunker(M3Encoder.from_pretrained("BAAI/bge-m3"))  # 256-token chunks
    chunks = chunker.chunk([long_text])[0]
    assert "".join(c.text for c in chunks) == long_text
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from m3kit.chunk_plan import (
    DEFAULT_CHUNK_SIZE,
    ChunkPlan,
    SpanPlanner,
    _affixes,
    _offsets_tokenizer,
    chunks_over,
    default_chunk_size,
    text_capacity,
    token_starts,
    whole_tokens,
)
from m3kit.chunk_spans import Span
from m3kit.encoder import M3Encoder, Truncation, check_texts
from m3kit.errors import TruncationError
from m3kit.outputs import Chunk

if TYPE_CHECKING:
    from m3kit.late_chunking import LateChunker

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkPlan",
    "Chunker",
    "NaiveChunker",
    "SpanPlanner",
    "as_chunker",
    "chunks_over",
    "default_chunk_size",
    "document_token_ids",
    "text_capacity",
    "token_starts",
]

logger = logging.getLogger(__name__)

#: Attribute of the log record of a document cut at the model's window (its name): what the
#: Ray pipeline's actors relay to the driver, which refuses it with ``truncation="error"``.
TRUNCATED = "m3kit_truncated"


@runtime_checkable
class Chunker(Protocol):
    """What :meth:`m3kit.store.M3Index.add_texts` takes to cut documents into chunks."""

    @property
    def signature(self) -> str:
        """What decides the chunks and their vectors, as a stable string (change detection)."""
        ...

    def chunk(
        self, texts: Sequence[str], *, show_progress: bool | None = None
    ) -> list[list[Chunk]]:
        """One list of :class:`~m3kit.outputs.Chunk` (with vectors) per text."""
        ...


class NaiveChunker:
    """Cut documents into chunks and encode each chunk alone (all heads the encoder has).

    The chunks are the ones :class:`~m3kit.late_chunking.LateChunker` cuts with the same
    ``chunk_size`` / ``splitter``; each is encoded as its own sequence: its tokens from the
    document between the special tokens (nothing is tokenised twice, and a chunk never
    exceeds the window). Where a chunk starts after whitespace (the sentence packer's cuts in
    spaced scripts) that is what ``encoder.encode([chunk.text])`` gives; a one-chunk
    document gets exactly the vectors of encoding the whole text.

    Args:
        encoder: The encoder.
        chunk_size: Token budget per chunk (default :func:`default_chunk_size`); at most the
            model's ``max_length`` minus its special tokens.
        splitter: Instead of the built-in sentence packer (see :class:`SpanPlanner`); a chunk
            it makes longer than the model's window is an error, never truncated.

    Raises:
        ValueError: ``chunk_size`` does not fit in one forward pass of the model.
    """

    def __init__(
        self, encoder: M3Encoder, *, chunk_size: int | None = None, splitter: Any = None
    ) -> None:
        self.encoder = encoder
        self.capacity = text_capacity(encoder)
        size = (
            default_chunk_size(encoder)
            if chunk_size is None
            else whole_tokens("chunk_size", chunk_size)
        )
        if size > self.capacity:
            raise ValueError(
                f"chunk_size={size} does not fit the model: max_length={encoder.max_length} "
                f"leaves {self.capacity} text tokens per forward pass; use a chunk size of at "
                f"most {self.capacity} (or late chunking, which handles longer chunks)"
            )
        self._planner = SpanPlanner(encoder, chunk_size=size, splitter=splitter)
        self.heads = encoder.available_heads

    @property
    def chunk_size(self) -> int:
        """Token budget per chunk of the built-in splitter."""
        return self._planner.chunk_size

    @property
    def signature(self) -> str:
        """What decides the chunks and their vectors, e.g.
        ``NaiveChunker(splitter=sentences, chunk_size=256)``; a custom splitter appears with
        every setting (:attr:`SpanPlanner.splitter_name`)."""
        return f"NaiveChunker(splitter={self._planner.splitter_name}, chunk_size={self.chunk_size})"

    def __repr__(self) -> str:
        return self.signature

    def spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """The chunk character spans :meth:`chunk` uses, without encoding anything."""
        return [self._planner.plan(t).spans for t in check_texts(texts, method="spans")]

    def oversized(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, ``(chunk index, text tokens)`` of each chunk :meth:`chunk` refuses as
        longer than the model's window; tokenises only (no forward pass)."""
        texts = check_texts(texts, method="oversized")
        plans = self._planner.plan_many(texts)
        return [chunks_over(plan.content_bounds, self.capacity) for plan in plans]

    def refuse_oversized(self, texts: Sequence[str]) -> None:
        """Raise what :meth:`chunk` raises for a chunk longer than the model's window, without
        encoding (tokenises only): a dry run's check.

        Raises:
            ValueError: As :meth:`chunk`.
        """
        for d, over in enumerate(self.oversized(texts)):
            if over:
                raise self._too_long(d, over)

    def _too_long(self, text: int, over: list[tuple[int, int]]) -> ValueError:
        (c, n), *_ = over
        return ValueError(
            f"chunk {c} of text {text} is {n} tokens, more than the model's {self.capacity}; "
            "the splitter must make smaller chunks (or use late chunking) so that no text is "
            "truncated"
        )

    def chunk(
        self, texts: Sequence[str], *, show_progress: bool | None = None
    ) -> list[list[Chunk]]:
        """Chunk documents and encode every chunk alone: one list of chunks per text.

        Raises:
            ValueError: A splitter made a chunk longer than the model's window (it would be
                truncated); the error names the document and the chunk.
        """
        from m3kit.store.records import output_row  # late: the store imports this module

        texts = check_texts(texts, method="chunk")
        plans = self._planner.plan_many(texts)
        p = self._planner
        sequences: list[list[int]] = []
        for d, plan in enumerate(plans):
            over = chunks_over(plan.content_bounds, self.capacity)
            if over:
                raise self._too_long(d, over)
            for a, b in plan.content_bounds:
                body = plan.ids[len(p.prefix) + a : len(p.prefix) + b].tolist()
                sequences.append([*p.prefix, *body, *p.suffix])
        out = self.encoder.encode_tokenized(
            sequences, heads=self.heads, show_progress=show_progress
        )
        result: list[list[Chunk]] = []
        row = 0
        for plan in plans:
            chunks = []
            for index, ((start, end), (ts, te)) in enumerate(
                zip(plan.spans, plan.token_bounds, strict=True)
            ):
                vectors = output_row(out, row)
                chunks.append(Chunk(plan.text[start:end], start, end, index, ts, te, vectors))
                row += 1
            result.append(chunks)
        return result

    async def achunk(
        self, texts: Sequence[str], *, show_progress: bool | None = None
    ) -> list[list[Chunk]]:
        """:meth:`chunk` in a worker thread."""
        return await asyncio.to_thread(self.chunk, texts, show_progress=show_progress)


def as_chunker(
    encoder: M3Encoder,
    *,
    chunking: bool | Chunker = False,
    late_chunking: bool | LateChunker = False,
) -> Chunker | None:
    """What the adapters' ``chunking=`` / ``late_chunking=`` arguments mean.

    ``chunking=`` decides the chunks, ``late_chunking=`` how they are pooled:

    - ``chunking=True``: a default :class:`NaiveChunker` (sentences packed up to
      :func:`default_chunk_size` tokens, each chunk encoded alone); a chunker object is used
      as given.
    - ``late_chunking=True``: a default :class:`~m3kit.late_chunking.LateChunker`; a
      ``LateChunker`` is used as given.
    - Both: the chunks ``chunking=`` cuts, pooled late. ``True`` or a :class:`NaiveChunker`
      with ``late_chunking=True`` gives a ``LateChunker`` with the same ``chunk_size`` and
      splitter (exactly the same chunks); with a ``LateChunker``, that one, if it cuts those
      chunks; a ``LateChunker`` as ``chunking=`` is used as given.
    - Neither: no chunker (one vector per document, truncated at ``max_length`` with a
      warning naming the document).

    >>> as_chunker(None, chunking=False, late_chunking=False) is None  # type: ignore[arg-type]
    True

    Raises:
        ValueError: Both are given and the late chunker cuts other chunks than ``chunking=``
            (other chunk size or splitter), or ``chunking=`` is a chunker whose chunks cannot
            be pooled late (not a ``NaiveChunker``); the message names both.
        TypeError: ``chunking`` is neither a bool nor a :class:`Chunker`, or
            ``late_chunking`` neither a bool nor a ``LateChunker``.
    """
    from m3kit.late_chunking import LateChunker, as_late_chunker

    if chunking is False:
        return as_late_chunker(encoder, late_chunking)
    if chunking is not True and not isinstance(chunking, Chunker):
        raise TypeError(
            "chunking must be True, False or a chunker (NaiveChunker, LateChunker), "
            f"got {type(chunking).__name__}"
        )
    late = as_late_chunker(encoder, late_chunking) if late_chunking is not True else None
    if late_chunking is False:
        return NaiveChunker(encoder) if chunking is True else chunking
    if isinstance(chunking, LateChunker):  # already pooled late
        if late is None or late is chunking:
            return chunking
        raise ValueError(
            f"chunking={chunking.signature} and late_chunking={late.signature} are two late "
            "chunkers; give one"
        )
    naive = NaiveChunker(encoder) if chunking is True else chunking
    if not isinstance(naive, NaiveChunker):
        raise ValueError(
            f"late_chunking= pools late the chunks that chunking= cuts, but "
            f"{type(naive).__name__} cuts and encodes its own; give chunking=True, a "
            "NaiveChunker or a LateChunker"
        )
    planner = naive._planner
    if late is None:
        return LateChunker(encoder, chunk_size=planner.chunk_size, splitter=planner._source)
    if _same_spans(late._planner, planner):
        return late
    raise ValueError(
        f"late_chunking={late.signature} cuts other chunks than chunking={naive.signature}: "
        "give the LateChunker the same chunk_size and splitter, or pass only one of them"
    )


def _same_spans(a: SpanPlanner, b: SpanPlanner) -> bool:
    """Whether two planners cut the same chunks (same splitter settings, or packer size)."""
    if a.splitter_name != b.splitter_name:
        return False
    return a.splitter is not None or a.chunk_size == b.chunk_size


def document_token_ids(
    encoder: M3Encoder,
    texts: Sequence[str],
    names: Sequence[str],
    *,
    truncation: Truncation | str = Truncation.WARN,
) -> list[list[int]]:
    """Token ids of whole documents (specials included), cut to ``max_length`` loudly.

    The same ids as ``encoder.tokenize``; a document longer than the model's window is a
    warning naming it and the number of tokens dropped (``truncation="warn"``) or a
    :class:`~m3kit.errors.TruncationError` (``"error"``).

    Args:
        encoder: The encoder.
        texts: The documents.
        names: What to call each document in messages (its id).
        truncation: ``"warn"`` or ``"error"``.
    """
    mode = Truncation(truncation)
    tokenizer = _offsets_tokenizer(encoder)
    prefix, suffix = _affixes(encoder)
    room = text_capacity(encoder)
    texts = check_texts(texts)
    if len(names) != len(texts):
        raise ValueError(f"{len(names)} names for {len(texts)} texts")
    out: list[list[int]] = []
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    for enc, name in zip(encodings, names, strict=True):
        content = enc.ids
        dropped = len(content) - room
        if dropped > 0:
            message = (
                f"document {name!r} is {len(content)} tokens; the model takes {room}, so its "
                f"last {dropped} tokens are not indexed. Pass a chunker (chunking=True, "
                "m3kit.chunking.NaiveChunker or a LateChunker; the m3kit command chunks by "
                "default) to index all of it"
            )
            if mode is Truncation.ERROR:
                raise TruncationError(message)
            logger.warning(message, extra={TRUNCATED: name})
            content = content[:room]
        out.append([*prefix, *content, *suffix])
    return out
