"""Late chunking: encode each document once, then pool dense, sparse and ColBERT per chunk.

Every chunk's vectors come from token states computed with the *whole document* as context
(up to the model's window), instead of from the chunk's text alone.

Rules (tested in ``tests/late_chunking``):

- **Spans.** With the built-in splitter, chunks tile the document exactly
  (``"".join(c.text for c in chunks) == text``): whole sentences packed up to ``chunk_size``
  tokens, whitespace after a sentence belonging to the chunk before it. With your own splitter
  each chunk keeps the splitter's span (overlaps trimmed, see
  :func:`~m3kit.chunk_spans.normalize_spans`), and ``chunk.text == text[chunk.start:chunk.end]``.
- **Tokens.** Every token of the document belongs to exactly one chunk: the chunk whose
  region its first non-whitespace character falls in (a chunk's region runs from its start to
  the next chunk's start, so text between splitter chunks goes to the chunk before it; a
  SentencePiece piece such as ``"▁Sent"`` goes with its word, not with the space before it,
  see :func:`m3kit.chunking.token_starts`). The leading
  special token (CLS / ``<s>``) belongs to the first chunk and the trailing one (SEP /
  ``</s>``) to the last, so a one-chunk document gets exactly what ``encoder.encode`` gives a
  mean-pooling model. A chunk that would own no token (only characters the tokenizer drops) is
  merged into the chunk before it (the first such chunk into the one after it).
- **Heads.** dense = mean of the chunk's token states, L2-normalised (or, with
  ``dense_pooling="naive"``, the model's own pooling of the chunk text encoded alone);
  sparse = max sparse weight per token id inside the chunk, special tokens dropped
  (:meth:`~m3kit.encoder.M3Encoder.sparse_vector`); ColBERT = the normalised ColBERT vectors of
  the chunk's tokens (CLS has none; the last chunk keeps ``</s>`` like ``encode``).
- **Windows.** A document longer than ``window`` tokens is encoded in windows of at most
  ``window`` tokens that break only between chunks (:func:`plan_chunk_windows`), so a chunk's
  tokens all come from one forward pass. ``overlap`` adds context at the windows' edges:
  consecutive windows share ``overlap`` tokens, each token's state is still taken once (from
  the window that owns its chunk). The default overlap is 0: every token goes through the model
  once. Memory grows linearly with the document (per-token states), never quadratically.
- **Cost.** The same tokens go through the model as with naive chunking, but each attends to
  its whole window instead of its chunk, so late chunking costs more as the window grows
  (attention is quadratic). ``benchmarks/late_chunking_cost.py`` measures the trade-off;
  ``window`` is the knob (e.g. ``window=2 * chunk_size + 2``: each chunk sees about one
  neighbour, at about 1.1x naive CPU time for a BGE-M3-sized model; whole documents of ~3.5k
  tokens cost about 2.9x).

Example::

    from m3kit import M3Encoder
    from m3kit.late_chunking import LateChunker

    chunker = LateChunker(M3Encoder.from_pretrained("BAAI/bge-m3"), chunk_size=256)
    chunks = chunker.chunk([long_text])[0]
    chunks[0].text, chunks[0].dense.shape, chunks[0].sparse, chunks[0].colbert.shape
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from m3kit.chunk_spans import Span
from m3kit.chunking import SpanPlanner
from m3kit.encoder import M3Encoder, TokenStates, check_texts
from m3kit.outputs import Chunk, FloatArray, Head, M3Output

__all__ = ["ChunkingConfig", "DensePooling", "LateChunker", "as_late_chunker"]

logger = logging.getLogger(__name__)

# Forward passes' worth of windows planned together: the encoder sorts them by length, so more
# windows per group means less padding. 4 keeps a group's float32 states (hidden + ColBERT) at
# ~270 MB for BGE-M3 with the default 8192-token batches.
_GROUP_BATCHES = 4


class DensePooling(str, enum.Enum):
    """How a chunk's dense vector is made."""

    MEAN = "mean"  # mean of the chunk's token states from the document pass (late chunking)
    NAIVE = "naive"  # the model's own pooling of the chunk text encoded alone (for comparison)


@dataclass(frozen=True)
class ChunkingConfig:
    """Settings of a :class:`LateChunker`.

    Attributes:
        chunk_size: Token budget per chunk for the built-in sentence splitter (special tokens
            not counted). Ignored when a splitter is given.
        window: Most tokens per forward pass, special tokens included (default: the
            encoder's ``max_length``, 8192 for BGE-M3).
        overlap: Context tokens shared by consecutive windows of a long document (default 0:
            windows break between chunks, every token is computed once). With an overlap,
            the chunks at a window's edge see up to ``overlap // 2`` tokens beyond it.
        dense_pooling: ``"mean"`` (late chunking) or ``"naive"``.
    """

    chunk_size: int = 256
    window: int | None = None
    overlap: int | None = None
    dense_pooling: DensePooling = DensePooling.MEAN

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "dense_pooling", DensePooling(self.dense_pooling))
        except ValueError:
            choices = [m.value for m in DensePooling]
            raise ValueError(
                f"dense_pooling must be one of {choices}, got {self.dense_pooling!r}"
            ) from None
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 token, got {self.chunk_size}")
        if self.window is not None and self.window < 3:
            raise ValueError(f"window must be >= 3 tokens (specials + text), got {self.window}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0 tokens, got {self.overlap}")


@dataclass(frozen=True)
class _Window:
    """Content tokens ``[start, end)`` go in; states of ``[own_start, own_end)`` are kept."""

    start: int
    end: int
    own_start: int
    own_end: int


@dataclass(frozen=True)
class _DocPlan:
    text: str
    ids: npt.NDArray[np.int64]  # document tokens, specials included
    spans: list[Span]  # chunk character spans
    token_bounds: list[tuple[int, int]]  # chunk token ranges (document token indices)
    windows: list[_Window]


def plan_windows(n: int, capacity: int, overlap: int) -> list[_Window]:
    """Windows of at most ``capacity`` content tokens over ``n`` tokens, ``overlap`` shared.

    Fixed-stride windows, used inside a chunk longer than a window (see
    :func:`plan_chunk_windows`). Each token is owned once, by the window in which it is farthest
    from the edge (the overlap is split at its midpoint).

    >>> [(w.start, w.end, w.own_start, w.own_end) for w in plan_windows(10, 4, 2)]
    [(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
    """
    if capacity < 1 or not 0 <= overlap < capacity:
        raise ValueError(f"need capacity >= 1 and 0 <= overlap < capacity ({capacity}, {overlap})")
    if n <= capacity:
        return [_Window(0, n, 0, n)]
    starts = [*range(0, n - capacity, capacity - overlap), n - capacity]
    ends = [s + capacity for s in starts]
    cuts = [0, *((starts[j + 1] + ends[j]) // 2 for j in range(len(starts) - 1)), n]
    return [
        _Window(s, e, cuts[j], cuts[j + 1])
        for j, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]


def plan_chunk_windows(
    bounds: Sequence[tuple[int, int]], capacity: int, overlap: int
) -> list[_Window]:
    """Windows that break only between chunks, for a document longer than one window.

    ``bounds`` are the chunks' token ranges, tiling ``[0, n)`` in order. Each window owns whole
    consecutive chunks, as many as fit in ``capacity`` tokens together with their context: up to
    ``overlap // 2`` tokens before and ``overlap - overlap // 2`` after (less at the document's
    edges), so consecutive windows share ``overlap`` tokens. The context tokens are owned by the
    neighbouring windows, so every token's state is taken once and no chunk mixes
    states from two windows. Compared with fixed-stride windows this computes no token twice
    when ``overlap`` is 0, and never cuts a chunk's context in the middle of the chunk. A chunk
    longer than ``capacity`` is split by :func:`plan_windows` inside its own range.

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
        return [_Window(0, n, 0, n)]

    before, after = overlap // 2, overlap - overlap // 2

    def context(a: int, b: int) -> tuple[int, int]:
        want_left, want_right = min(before, a), min(after, n - b)
        room = capacity - (b - a)
        if want_left + want_right <= room:
            return want_left, want_right
        left = min(want_left, max(room // 2, room - want_right))
        return left, min(want_right, room - left)

    windows: list[_Window] = []
    i = 0
    while i < len(bounds):
        a, b = bounds[i]
        if b - a > capacity:
            for w in plan_windows(b - a, capacity, overlap):
                windows.append(_Window(w.start + a, w.end + a, w.own_start + a, w.own_end + a))
            i += 1
            continue
        while i + 1 < len(bounds):
            nb = bounds[i + 1][1]
            if (nb - a) + min(before, a) + min(after, n - nb) > capacity:
                break
            i, b = i + 1, nb
        left, right = context(a, b)
        windows.append(_Window(a - left, b + right, a, b))
        i += 1
    return windows


class LateChunker:
    """Split documents into chunks and give each chunk late-chunked M3 vectors.

    Args:
        encoder: The encoder; chunks get the heads it has (dense only for dense checkpoints).
        chunk_size: Token budget per chunk for the built-in sentence splitter.
        splitter: Instead of the built-in splitter: a callable ``str -> [(start, end)]``, a
            LangChain ``TextSplitter`` or a LlamaIndex text splitter (anything with
            ``split_text``).
        window: Most tokens per forward pass (default and maximum: ``encoder.max_length``).
        overlap: Context tokens shared by consecutive windows (default 0).
        dense_pooling: ``"mean"`` (default) or ``"naive"``.
    """

    def __init__(
        self,
        encoder: M3Encoder,
        *,
        chunk_size: int = 256,
        splitter: Any = None,
        window: int | None = None,
        overlap: int | None = None,
        dense_pooling: DensePooling | str = DensePooling.MEAN,
    ) -> None:
        self.encoder = encoder
        self.config = ChunkingConfig(chunk_size, window, overlap, dense_pooling)  # type: ignore[arg-type]
        # the same spans as NaiveChunker with these settings (m3kit.chunking)
        self._planner = SpanPlanner(encoder, chunk_size=self.config.chunk_size, splitter=splitter)
        self._tokenizer = self._planner.tokenizer
        self._prefix, self._suffix = self._planner.prefix, self._planner.suffix
        self.window = window if window is not None else encoder.max_length
        if self.window > encoder.max_length:
            raise ValueError(
                f"window={self.window} exceeds the encoder's max_length={encoder.max_length}; "
                "load the encoder with a larger max_length (up to what the checkpoint allows)"
            )
        self.capacity = self.window - len(self._prefix) - len(self._suffix)
        if self.capacity < 1:
            raise ValueError(f"window={self.window} leaves no room for text beside specials")
        self.overlap = overlap if overlap is not None else 0
        if self.overlap >= self.capacity:
            raise ValueError(
                f"overlap={self.overlap} must be smaller than the window's text capacity "
                f"({self.capacity} tokens)"
            )
        self.heads = encoder.available_heads
        self._splitter_name = self._planner.splitter_name

    @property
    def chunk_size(self) -> int:
        """Token budget per chunk of the built-in splitter."""
        return self.config.chunk_size

    @property
    def dense_pooling(self) -> DensePooling:
        return self.config.dense_pooling

    @property
    def signature(self) -> str:
        """What decides the chunks and their vectors, as a stable string (for change detection).

        E.g. ``LateChunker(splitter=sentences, chunk_size=256, window=8192, overlap=0,
        windows=chunks, tokens=word-start, dense_pooling=mean)``. A custom splitter appears by
        its qualified name only (not its settings).
        """
        return (
            f"LateChunker(splitter={self._splitter_name}, chunk_size={self.chunk_size}, "
            f"window={self.window}, overlap={self.overlap}, windows=chunks, tokens=word-start, "
            f"dense_pooling={self.dense_pooling.value})"
        )

    # -- public API -------------------------------------------------------------------------
    def spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """The chunk character spans :meth:`chunk` uses, without encoding anything."""
        return [self._plan(t).spans for t in check_texts(texts, method="spans")]

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
                out.extend(self._encode_group(group))
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
        windows = plan_chunk_windows(plan.content_bounds, self.capacity, self.overlap)
        return _DocPlan(plan.text, plan.ids, plan.spans, plan.token_bounds, windows)

    # -- encoding ---------------------------------------------------------------------------
    def _encode_group(self, plans: list[_DocPlan]) -> list[list[Chunk]]:
        p = len(self._prefix)
        window_ids: list[list[int]] = []
        for plan in plans:
            for w in plan.windows:
                body = plan.ids[p + w.start : p + w.end].tolist()
                window_ids.append([*self._prefix, *body, *self._suffix])
        states = self.encoder.token_states(window_ids, heads=self.heads)
        naive = self._naive_dense(plans)
        out: list[list[Chunk]] = []
        at = 0
        for doc, plan in enumerate(plans):
            doc_states = states[at : at + len(plan.windows)]
            at += len(plan.windows)
            dense = naive[doc] if naive is not None else None
            out.append(self._pool(plan, doc_states, dense))
        return out

    def _naive_dense(self, plans: list[_DocPlan]) -> list[FloatArray] | None:
        if self.config.dense_pooling is not DensePooling.NAIVE:
            return None
        texts = [plan.text[s:e] for plan in plans for s, e in plan.spans]
        dense = self.encoder.encode(texts, heads=[Head.DENSE], show_progress=False).dense
        out, at = [], 0
        for plan in plans:
            out.append(dense[at : at + len(plan.spans)])
            at += len(plan.spans)
        return out

    def _pool(
        self, plan: _DocPlan, states: list[TokenStates], naive_dense: FloatArray | None
    ) -> list[Chunk]:
        hidden, sparse, colbert = self._stitch(plan, states)
        chunks: list[Chunk] = []
        for index, ((start, end), (ts, te)) in enumerate(
            zip(plan.spans, plan.token_bounds, strict=True)
        ):
            if naive_dense is not None:
                dense = naive_dense[index][None, :]
            else:
                mean = hidden[ts:te].mean(axis=0, dtype=np.float64)
                dense = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)[None]
            vectors = M3Output(
                heads=self.heads,
                token_counts=(te - ts,),
                _dense=dense,
                _sparse=(self.encoder.sparse_vector(plan.ids[ts:te], sparse[ts:te]),)
                if sparse is not None
                else None,
                _colbert=(np.ascontiguousarray(colbert[max(ts, 1) : te]),)
                if colbert is not None
                else None,
            )
            chunks.append(Chunk(plan.text[start:end], start, end, index, ts, te, vectors))
        return chunks

    def _stitch(
        self, plan: _DocPlan, states: list[TokenStates]
    ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
        """Per-document-token arrays, each token's state taken from the window that owns it.

        ColBERT row ``i`` is document token ``i``'s vector (row 0, the CLS, stays unused).
        """
        p, s = len(self._prefix), len(self._suffix)
        total = int(plan.ids.shape[0])
        n = total - p - s
        hidden = np.empty((total, states[0].hidden.shape[1]), dtype=np.float32)
        sparse = np.empty(total, dtype=np.float32) if Head.SPARSE in self.heads else None
        colbert = None
        if Head.COLBERT in self.heads:
            width = states[0].colbert.shape[1] if states[0].colbert is not None else 0
            colbert = np.zeros((total, width), dtype=np.float32)
        for w, st in zip(plan.windows, states, strict=True):
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
