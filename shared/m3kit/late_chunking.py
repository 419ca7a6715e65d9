"""Late chunking: encode each document once, then pool dense, sparse and ColBERT per chunk.

Every chunk's vectors come from token states computed with the *whole document* as context
(up to the model's window), instead of from the chunk's text alone.

Rules (tested in ``tests/late_chunking``):

- **Spans.** With the built-in splitter, chunks tile the document exactly
  (``"".join(c.text for c in chunks) == text``): whole sentences packed up to ``chunk_size``
  tokens, whitespace after a sentence belonging to the chunk before it, never cutting through
  a token (:func:`~m3kit.chunk_spans.starts_between_tokens`). With your own splitter
  each chunk keeps the splitter's span (overlaps trimmed, see
  :func:`~m3kit.chunk_spans.normalize_spans`), and ``chunk.text == text[chunk.start:chunk.end]``;
  a text splitter's pieces are placed so that they cover the document, or it is an error
  naming the text they leave out (:func:`~m3kit.piece_spans.spans_of_pieces`).
- **Tokens.** Every token of the document belongs to exactly one chunk: the chunk whose
  region its first non-whitespace character falls in (a chunk's region runs from its start to
  the next chunk's start, so text between splitter chunks goes to the chunk before it; a
  SentencePiece piece such as ``"▁Sent"`` goes with its word, not with the space before it,
  see :func:`m3kit.chunk_plan.token_starts`). The leading
  special token (CLS / ``<s>``) belongs to the first chunk and the trailing one (SEP /
  ``</s>``) to the last, so a one-chunk document gets exactly what ``encoder.encode`` gives a
  mean-pooling model. A chunk that would own no token (only characters the tokenizer drops),
  or a splitter's span of whitespace only, is merged into the chunk before it (the first such
  chunk into the one after it); the built-in splitter makes no chunk of whitespace only (such
  as XLM-R's lone ``"▁"`` of a trailing newline) unless a whitespace run exceeds its budget.
- **Heads.** Each head is pooled *late* (from the document pass) or *naive* (the chunk text
  encoded alone, exactly what :class:`~m3kit.chunking.NaiveChunker` gives), chosen per head
  with ``late_heads``. Late: dense = mean of the chunk's token states, L2-normalised; sparse =
  max sparse weight per token id inside the chunk, special tokens dropped
  (:meth:`~m3kit.encoder.M3Encoder.sparse_vector`); ColBERT = the normalised ColBERT vectors
  of the chunk's tokens (CLS has none; the last chunk keeps ``</s>`` like ``encode``). Default
  (:func:`default_late_heads`, measured): every head of a multi-head model late (one document
  pass; the fused score beat naive chunking on fine-tuned three-head models), nothing late for
  a dense-only model (MiniLM's late dense retrieved worse than naive in every setting tried, so
  its default late chunks are its naive chunks, no document pass). Mixing late and naive heads
  costs a naive pass on top of the document pass.
- **Windows.** A document longer than ``window`` text tokens is encoded in several windows
  (:mod:`m3kit.late_windows`); each token's state is taken from exactly one window. Default
  placement ``"centred"``: windows at a fixed stride ``capacity - overlap``, each token taken
  from the window where it sits most centrally, so every chunk sees at least ``overlap // 2``
  tokens of context on both sides (``"chunks"``: windows that break only between chunks, the
  placement before). Default ``window = min(max_length, 2 * chunk_size + specials)`` and
  ``overlap = capacity // 8`` (:func:`default_window`, :func:`default_overlap`): every chunk
  sees at least ``overlap // 2`` tokens on both sides at an estimated 1.29x naive CPU time for
  BGE-M3 with every head late (``benchmarks/late_chunking_cost.py --count-only``). Memory grows
  linearly with the document.
- **Cost.** Each token attends to its whole window instead of its chunk, and the overlap is
  computed twice, so late chunking costs more than naive chunking, more as the window grows
  (attention is quadratic). ``benchmarks/late_chunking_cost.py`` measures it (and estimates
  it from padded-token and attention counts with ``--count-only``).

Example::

    from m3kit import M3Encoder
    from m3kit.late_chunking import LateChunker

    chunker = LateChunker(M3Encoder.from_pretrained("BAAI/bge-m3"), chunk_size=256)
    chunks = chunker.chunk([long_text])[0]
    chunks[0].text, chunks[0].dense.shape, chunks[0].sparse, chunks[0].colbert.shape
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from m3kit.chunk_plan import (
    SpanPlanner,
    chunks_over,
    default_chunk_size,
    text_capacity,
    whole_tokens,
)
from m3kit.chunk_spans import Span
from m3kit.encoder import M3Encoder, TokenStates, check_texts
from m3kit.late_config import (
    ChunkingConfig,
    DensePooling,
    default_late_heads,
    default_overlap,
    default_window,
    parse_heads,
)
from m3kit.late_stitch import stitch_states
from m3kit.late_windows import (
    Window,
    WindowPlacement,
    plan_chunk_windows,
    plan_document_windows,
    plan_windows,
)
from m3kit.outputs import Chunk, FloatArray, Head, M3Output, SparseVector

__all__ = [
    "ChunkingConfig",
    "DensePooling",
    "LateChunker",
    "WindowPlacement",
    "as_late_chunker",
    "default_late_heads",
    "default_overlap",
    "default_window",
    "plan_chunk_windows",
    "plan_windows",
]

logger = logging.getLogger(__name__)

# Forward passes' worth of windows planned together: the encoder sorts them by length, so more
# windows per group means less padding. 4 keeps a group's float32 states (hidden + ColBERT) at
# ~270 MB for BGE-M3 with the default 8192-token batches.
_GROUP_BATCHES = 4


@dataclass(frozen=True)
class _DocPlan:
    text: str
    ids: npt.NDArray[np.int64]  # document tokens, specials included
    spans: list[Span]  # chunk character spans
    token_bounds: list[tuple[int, int]]  # chunk token ranges (document token indices)
    content_bounds: list[tuple[int, int]]  # chunk ranges among the text tokens
    windows: list[Window]


class LateChunker:
    """Split documents into chunks and give each chunk late-chunked M3 vectors.

    Args:
        encoder: The encoder; chunks get the heads it has (dense only for dense checkpoints).
        chunk_size: Token budget per chunk for the built-in sentence splitter (default
            :func:`~m3kit.chunk_plan.default_chunk_size`: 256, or fewer when the model's window
            holds fewer text tokens, e.g. 254 for all-MiniLM-L6-v2).
        splitter: Instead of the built-in splitter: a callable ``str -> [(start, end)]``, a
            LangChain ``TextSplitter`` or a LlamaIndex text splitter (anything with
            ``split_text``).
        window: Most tokens per forward pass (default :func:`default_window`: two chunks'
            worth; at most ``encoder.max_length``).
        overlap: Text tokens shared by consecutive windows (default :func:`default_overlap`).
        dense_pooling: Older spelling for dense in or out of ``late_heads``: ``"mean"`` (late)
            or ``"naive"``.
        placement: ``"centred"`` (default) or ``"chunks"``, see :mod:`m3kit.late_windows`.
        late_heads: Heads pooled late, the others encoded from the chunk alone (default
            :func:`default_late_heads`); heads the encoder lacks are ignored.
    """

    def __init__(
        self,
        encoder: M3Encoder,
        *,
        chunk_size: int | None = None,
        splitter: Any = None,
        window: int | None = None,
        overlap: int | None = None,
        dense_pooling: DensePooling | str | None = None,
        placement: WindowPlacement | str = WindowPlacement.CENTRED,
        late_heads: Sequence[Head | str] | frozenset[Head] | None = None,
    ) -> None:
        self.encoder = encoder
        size = (
            default_chunk_size(encoder)
            if chunk_size is None
            else whole_tokens("chunk_size", chunk_size)
        )
        self.config = ChunkingConfig(
            size,
            window,
            overlap,
            dense_pooling,  # type: ignore[arg-type]
            placement,  # type: ignore[arg-type]
            None if late_heads is None else parse_heads(late_heads),
        )
        # the same spans as NaiveChunker with these settings (m3kit.chunking)
        self._planner = SpanPlanner(encoder, chunk_size=size, splitter=splitter)
        self._tokenizer = self._planner.tokenizer
        self._prefix, self._suffix = self._planner.prefix, self._planner.suffix
        specials = len(self._prefix) + len(self._suffix)
        window = self.config.window  # checked: an int or None
        self.window = (
            window if window is not None else default_window(size, encoder.max_length, specials)
        )
        if self.window > encoder.max_length:
            raise ValueError(
                f"window={self.window} exceeds the encoder's max_length={encoder.max_length}; "
                "load the encoder with a larger max_length (up to what the checkpoint allows)"
            )
        self.capacity = self.window - specials
        if self.capacity < 1:
            raise ValueError(f"window={self.window} leaves no room for text beside specials")
        overlap = self.config.overlap
        self.overlap = overlap if overlap is not None else default_overlap(self.capacity)
        if self.overlap >= self.capacity:
            raise ValueError(
                f"overlap={self.overlap} must be smaller than the window's text capacity "
                f"({self.capacity} tokens)"
            )
        self.placement: WindowPlacement = self.config.placement
        self.heads = encoder.available_heads
        late = self.config.late_heads
        if late is None:
            late = default_late_heads(encoder)
            if self.config.dense_pooling is DensePooling.MEAN:
                late = late | {Head.DENSE}
            elif self.config.dense_pooling is DensePooling.NAIVE:
                late = late - {Head.DENSE}
        #: Heads pooled from the document pass; the rest are encoded from the chunk alone.
        self.late_heads: frozenset[Head] = late & self.heads
        if not self.late_heads:
            logger.info(
                "LateChunker: no head is pooled late (late_heads=%s, encoder heads %s): every "
                "chunk is encoded alone, as NaiveChunker does",
                sorted(h.value for h in late),
                sorted(h.value for h in self.heads),
            )

    @property
    def chunk_size(self) -> int:
        """Token budget per chunk of the built-in splitter (the default resolved)."""
        return self._planner.chunk_size

    @property
    def dense_pooling(self) -> DensePooling:
        """``"mean"`` when dense is pooled late, else ``"naive"``."""
        return DensePooling.MEAN if Head.DENSE in self.late_heads else DensePooling.NAIVE

    @property
    def naive_heads(self) -> frozenset[Head]:
        """Heads encoded from each chunk's text alone."""
        return self.heads - self.late_heads

    @property
    def signature(self) -> str:
        """What decides the chunks and their vectors, as a stable string (for change detection).

        E.g. ``LateChunker(splitter=sentences, chunk_size=256, window=514, overlap=128,
        windows=centred, tokens=word-start, late_heads=colbert+dense+sparse)``. A custom splitter
        appears with its type and every setting (:func:`m3kit.fingerprint.describe_settings`),
        so changing one of them changes the signature.
        """
        late = "+".join(sorted(h.value for h in self.late_heads)) or "none"
        return (
            f"LateChunker(splitter={self._planner.splitter_name}, chunk_size={self.chunk_size}, "
            f"window={self.window}, overlap={self.overlap}, windows={self.placement.value}, "
            f"tokens=word-start, late_heads={late})"
        )

    # -- public API -------------------------------------------------------------------------
    def spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """The chunk character spans :meth:`chunk` uses, without encoding anything."""
        return [self._plan(t).spans for t in check_texts(texts, method="spans")]

    def oversized(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, ``(chunk index, text tokens)`` of each chunk :meth:`chunk` refuses: longer
        than the model's window while a head is encoded from the chunk alone (none when every
        head is late: windows hold any chunk). Tokenises only (no forward pass)."""
        texts = check_texts(texts, method="oversized")
        if not self.naive_heads:
            return [[] for _ in texts]
        capacity = text_capacity(self.encoder)
        plans = self._planner.plan_many(texts)
        return [chunks_over(plan.content_bounds, capacity) for plan in plans]

    def refuse_oversized(self, texts: Sequence[str]) -> None:
        """Raise what :meth:`chunk` raises for a chunk longer than the model's window (while
        a head is encoded from the chunk alone), without encoding (tokenises only).

        Raises:
            ValueError: As :meth:`chunk`.
        """
        capacity = text_capacity(self.encoder)
        for d, over in enumerate(self.oversized(texts)):
            if over:
                raise self._too_long(d, over, capacity)

    def _too_long(self, text: int, over: list[tuple[int, int]], capacity: int) -> ValueError:
        (i, n), *_ = over
        return ValueError(
            f"chunk {i} of text {text} is {n} tokens, more than the model's {capacity}, and "
            f"its {', '.join(sorted(h.value for h in self.naive_heads))} "
            "vectors are encoded from the chunk alone (late_heads="
            f"{sorted(h.value for h in self.late_heads)}): use smaller chunks or "
            "pool every head late (late_heads=['dense', 'sparse', 'colbert'])"
        )

    def chunk(
        self, texts: Sequence[str], *, show_progress: bool | None = None
    ) -> list[list[Chunk]]:
        """Chunk and encode documents: one list of :class:`~m3kit.outputs.Chunk` per text.

        Each document is run through the model once (in windows when longer than ``window``);
        Documents are planned in groups of about ``_GROUP_BATCHES`` forward passes, so that
        windows of similar length from many documents share a batch (little padding) while
        the per-token states held at once stay bounded.
        """
        texts = check_texts(texts, method="chunk")
        out: list[list[Chunk]] = []
        budget = _GROUP_BATCHES * max(self.encoder.max_batch_tokens, self.window)
        bar = tqdm(
            total=len(texts),
            desc="late chunking",
            unit="doc",
            disable=not (show_progress if show_progress is not None else len(texts) > 8),
        )
        with bar:
            for group in self._groups(texts, budget):
                out.extend(self._encode_group(group, first=len(out)))
                bar.update(len(group))
        return out

    async def achunk(
        self, texts: Sequence[str], *, show_progress: bool | None = None
    ) -> list[list[Chunk]]:
        """:meth:`chunk` in a worker thread."""
        return await asyncio.to_thread(self.chunk, texts, show_progress=show_progress)

    # -- planning ---------------------------------------------------------------------------
    def _groups(self, texts: list[str], budget: int) -> Iterator[list[_DocPlan]]:
        group: list[_DocPlan] = []
        tokens = 0
        for text in texts:
            plan = self._plan(text)
            group.append(plan)
            tokens += sum(
                w.end - w.start + len(self._prefix) + len(self._suffix) for w in plan.windows
            )
            if tokens >= budget:
                yield group
                group, tokens = [], 0
        if group:
            yield group

    def _plan(self, text: str) -> _DocPlan:
        plan = self._planner.plan(text)
        windows = plan_document_windows(
            self.placement, plan.content_bounds, self.capacity, self.overlap
        )
        return _DocPlan(
            plan.text, plan.ids, plan.spans, plan.token_bounds, plan.content_bounds, windows
        )

    # -- encoding ---------------------------------------------------------------------------
    def _encode_group(self, plans: list[_DocPlan], *, first: int) -> list[list[Chunk]]:
        """Chunks of a group of documents, the first of them text ``first`` of the call."""
        states: list[TokenStates] = []
        if self.late_heads:
            p = len(self._prefix)
            window_ids: list[list[int]] = []
            for plan in plans:
                for w in plan.windows:
                    body = plan.ids[p + w.start : p + w.end].tolist()
                    window_ids.append([*self._prefix, *body, *self._suffix])
            states = self.encoder.token_states(window_ids, heads=self.late_heads)
        naive = self._naive(plans, first=first)
        out: list[list[Chunk]] = []
        at = row = 0
        for plan in plans:
            doc_states = states[at : at + len(plan.windows)] if self.late_heads else []
            at += len(plan.windows)
            out.append(self._pool(plan, doc_states, naive, row))
            row += len(plan.spans)
        return out

    def _naive(self, plans: list[_DocPlan], *, first: int) -> M3Output | None:
        """The naive heads of every chunk of the group, each chunk encoded alone.

        Like :class:`~m3kit.chunking.NaiveChunker`: the chunk's own document tokens between the
        special tokens (nothing tokenised twice).

        Raises:
            ValueError: A chunk is longer than one forward pass (it would be truncated); the
                message names it and its text (``first`` is the group's first text).
        """
        if not self.naive_heads:
            return None
        p, capacity = len(self._prefix), text_capacity(self.encoder)
        sequences: list[list[int]] = []
        for d, plan in enumerate(plans, start=first):
            over = chunks_over(plan.content_bounds, capacity)
            if over:
                raise self._too_long(d, over, capacity)
            for a, b in plan.content_bounds:
                body = plan.ids[p + a : p + b].tolist()
                sequences.append([*self._prefix, *body, *self._suffix])
        heads = sorted(self.naive_heads, key=lambda h: h.value)
        return self.encoder.encode_tokenized(sequences, heads=heads, show_progress=False)

    def _pool(
        self, plan: _DocPlan, states: list[TokenStates], naive: M3Output | None, row: int
    ) -> list[Chunk]:
        """Chunks of one document; ``naive`` rows ``row...`` are its chunks encoded alone."""
        hidden, sparse, colbert = (
            stitch_states(
                plan.windows,
                states,
                total=int(plan.ids.shape[0]),
                prefix=len(self._prefix),
                suffix=len(self._suffix),
                late_heads=self.late_heads,
            )
            if states
            else (None, None, None)
        )
        chunks: list[Chunk] = []
        for index, ((start, end), (ts, te)) in enumerate(
            zip(plan.spans, plan.token_bounds, strict=True)
        ):
            dense: FloatArray | None = None
            if hidden is not None and Head.DENSE in self.late_heads:
                mean = hidden[ts:te].mean(axis=0, dtype=np.float64)
                dense = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)[None]
            elif naive is not None and Head.DENSE in self.heads:
                dense = naive.dense[row + index][None, :]
            sparse_vec: tuple[SparseVector, ...] | None = None
            if sparse is not None:
                sparse_vec = (self.encoder.sparse_vector(plan.ids[ts:te], sparse[ts:te]),)
            elif naive is not None and Head.SPARSE in self.naive_heads:
                sparse_vec = (naive.sparse[row + index],)
            colbert_vec: tuple[FloatArray, ...] | None = None
            if colbert is not None:
                colbert_vec = (np.ascontiguousarray(colbert[max(ts, 1) : te]),)
            elif naive is not None and Head.COLBERT in self.naive_heads:
                colbert_vec = (naive.colbert[row + index],)
            vectors = M3Output(
                heads=self.heads,
                token_counts=(te - ts,),
                _dense=dense,
                _sparse=sparse_vec,
                _colbert=colbert_vec,
            )
            chunks.append(Chunk(plan.text[start:end], start, end, index, ts, te, vectors))
        return chunks


def as_late_chunker(encoder: M3Encoder, late_chunking: bool | LateChunker) -> LateChunker | None:
    """What a ``late_chunking=`` argument means: ``False`` none, ``True`` a default chunker.

    >>> as_late_chunker(None, False) is None  # type: ignore[arg-type]
    True
    """
    if late_chunking is False:
        return None
    if late_chunking is True:
        return LateChunker(encoder)
    if not isinstance(late_chunking, LateChunker):
        raise TypeError(
            "late_chunking must be True, False or a LateChunker, "
            f"got {type(late_chunking).__name__}"
        )
    return late_chunking
