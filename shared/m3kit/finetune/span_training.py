"""Late-chunking-aware fine-tuning ("span pooling"), after the late-chunking paper's remedy.

Instead of encoding each passage alone, every example's document is tokenised whole, a window
of ``passage_max_length`` tokens is cut around the positive span (:func:`centred_window`) and
encoded once; the positive span (and, with ``span_negatives``, other spans of that window as
its negatives) are pooled per head the way :class:`~m3kit.late_chunking.LateChunker` pools a chunk
(:func:`pool_spans`):

- a span owns the document tokens whose start (first non-whitespace character,
  :func:`m3kit.chunking.token_starts`) falls inside it; the window's special tokens belong to
  no span (late chunking gives them to the document's first and last chunk);
- dense: the mean of the span's last hidden states, L2-normalised;
- sparse: the sparse-head weights of the span's tokens, scored per token id with the max
  weight, special tokens dropped (as :meth:`~m3kit.encoder.M3Encoder.sparse_vector`);
- ColBERT: the normalised ColBERT vectors of the span's tokens.

Queries are encoded normally. The loss is :func:`m3kit.finetune.losses.m3_loss` (per-head
InfoNCE, ensemble, self-distillation, symmetric and false-negative options as configured) with
every pooled span of the batch as a candidate: the query's own positive, the other queries'
positives (in-batch) and any in-window negatives. A copy of a query's positive (same
document and span, e.g. from another question about the same paragraph) is never its
negative when ``mask_shared_positives`` is on. Every trained head is span-pooled, so the result
suits ``LateChunker(late_heads=...)`` with those heads.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from m3kit.chunking import special_affixes, token_starts
from m3kit.finetune.losses import LossConfig
from m3kit.finetune.span_data import SpanExample
from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult
from m3kit.finetune.training_loop import (
    Candidates,
    TrainingModule,
    prepare_training,
    run_training,
)
from m3kit.model import M3Forward, M3Model

__all__ = [
    "PooledSpans",
    "SpanCollator",
    "SpanTrainingModule",
    "centred_window",
    "fit_spans",
    "pool_spans",
]

logger = logging.getLogger(__name__)

_CACHE_DOCUMENTS = 1024  # tokenised documents kept by a collator


def centred_window(span: tuple[int, int], n_tokens: int, capacity: int) -> tuple[int, int]:
    """The token window ``[start, end)`` of at most ``capacity`` tokens centred on ``span``.

    The span's tokens ``[a, b)`` sit as near the window's centre as the document allows: equal
    context on both sides, shifted inward at the document's edges (a document of at most
    ``capacity`` tokens is one window). A span longer than ``capacity`` is **truncated**: the
    window holds its first ``capacity`` tokens and no context.

    >>> centred_window((10, 14), 100, 8)
    (8, 16)
    >>> centred_window((1, 3), 100, 8), centred_window((97, 99), 100, 8)
    ((0, 8), (92, 100))
    >>> centred_window((10, 30), 100, 8)
    (10, 18)
    """
    a, b = span
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 token, got {capacity}")
    if not 0 <= a < b <= n_tokens:
        raise ValueError(f"span {span} is not a non-empty token range of 0..{n_tokens}")
    if n_tokens <= capacity:
        return (0, n_tokens)
    if b - a >= capacity:
        return (a, a + capacity)
    start = min(max(a - (capacity - (b - a)) // 2, 0), n_tokens - capacity)
    return (start, start + capacity)


@dataclass(frozen=True)
class _Document:
    ids: npt.NDArray[np.int64]  # text tokens, no specials
    starts: npt.NDArray[np.int64]  # each token's first non-whitespace character

    def token_range(self, span: tuple[int, int]) -> tuple[int, int]:
        """Tokens whose start falls in the character span (possibly empty)."""
        a = int(np.searchsorted(self.starts, span[0], side="left"))
        b = int(np.searchsorted(self.starts, span[1], side="left"))
        return a, b


class SpanCollator:
    """Builds a batch: queries, one window per example, and every span to pool.

    Args:
        tokenizer: The model's (fast) Hugging Face tokenizer.
        config: ``passage_max_length`` (window size, special tokens included),
            ``query_max_length``, ``span_negatives`` (in-window negatives per example),
            ``mask_shared_positives`` and ``seed``.
        query_prefix: Instruction put before every query.

    Returns (per call) a dict of tensors: ``q_ids``/``q_mask`` (queries), ``w_ids``/``w_mask``
    (windows, identical windows encoded once), ``span_row``/``span_start``/``span_end``
    (each candidate span: its window and its token positions in that window sequence),
    ``targets`` (each query's positive column) and ``exclude`` (copies of a query's positive).
    """

    def __init__(self, tokenizer: Any, config: FinetuneConfig, query_prefix: str) -> None:
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("span training needs a fast (tokenizers-backed) tokenizer")
        self.tokenizer = tokenizer
        self.offsets = Tokenizer.from_str(backend.to_str())
        self.offsets.no_truncation()
        self.offsets.no_padding()
        self.prefix_ids, self.suffix_ids = special_affixes(self.offsets)
        if not self.prefix_ids:
            raise ValueError(
                "span training needs a tokenizer that puts a leading special token (CLS / <s>) "
                "before the text: the ColBERT head has no vector for position 0"
            )
        self.capacity = config.passage_max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.capacity < 1:
            raise ValueError(
                f"passage_max_length={config.passage_max_length} leaves no room for text "
                "beside the special tokens"
            )
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("span training needs a tokenizer with a padding token")
        self.pad_id = int(pad)
        self.config = config
        self.prefix = query_prefix
        self.rng = random.Random(config.seed)
        self._documents: dict[str, _Document] = {}

    def document(self, text: str) -> _Document:
        """The document's text tokens and their start characters (cached)."""
        doc = self._documents.get(text)
        if doc is None:
            if len(self._documents) >= _CACHE_DOCUMENTS:
                self._documents.clear()
            enc = self.offsets.encode(text, add_special_tokens=False)
            starts = np.maximum.accumulate(token_starts(text, enc.offsets)) if enc.ids else None
            doc = _Document(
                np.asarray(enc.ids, dtype=np.int64),
                starts if starts is not None else np.zeros(0, dtype=np.int64),
            )
            self._documents[text] = doc
        return doc

    def window(self, example: SpanExample) -> tuple[int, int, tuple[int, int]]:
        """``(window start, window end, positive token range)`` of one example's document.

        Raises:
            ValueError: The positive span holds no token (e.g. only whitespace).
        """
        doc = self.document(example.document)
        a, b = doc.token_range(example.span)
        if a >= b:
            raise ValueError(
                f"span {example.span} of the document of query {example.query[:40]!r} holds no "
                "token (only characters the tokenizer drops)"
            )
        ws, we = centred_window((a, b), int(doc.ids.shape[0]), self.capacity)
        return ws, we, (a, min(b, we))

    def __call__(self, batch: Sequence[SpanExample]) -> dict[str, torch.Tensor]:
        p = len(self.prefix_ids)
        windows: list[list[int]] = []
        window_index: dict[tuple[str, int, int], int] = {}
        spans: list[tuple[int, int, int]] = []  # (window row, start, end) in the window sequence
        span_index: dict[tuple[int, int, int], int] = {}
        keys: list[set[tuple[str, int, int]]] = []  # (document, char span) of each candidate
        targets: list[int] = []

        def slot(row: int, a: int, b: int, key: tuple[str, int, int]) -> int:
            k = (row, p + a, p + b)
            if k not in span_index:
                span_index[k] = len(spans)
                spans.append(k)
                keys.append(set())
            keys[span_index[k]].add(key)
            return span_index[k]

        for ex in batch:
            ws, we, (a, b) = self.window(ex)
            wkey = (ex.document, ws, we)
            if wkey not in window_index:
                window_index[wkey] = len(windows)
                doc = self.document(ex.document)
                body = doc.ids[ws:we].tolist()
                windows.append([*self.prefix_ids, *body, *self.suffix_ids])
            row = window_index[wkey]
            targets.append(slot(row, a - ws, b - ws, (ex.document, *ex.span)))
            inside = []
            doc = self.document(ex.document)
            for neg in ex.negative_spans:
                na, nb = doc.token_range(neg)
                na, nb = max(na, ws), min(nb, we)
                if na < nb:
                    inside.append((na, nb, neg))
            k = min(self.config.span_negatives, len(inside))
            for na, nb, neg in self.rng.sample(inside, k):
                slot(row, na - ws, nb - ws, (ex.document, *neg))
        exclude = torch.zeros(len(batch), len(spans), dtype=torch.bool)
        if self.config.mask_shared_positives:
            for i, ex in enumerate(batch):
                own = (ex.document, *ex.span)
                for col, col_keys in enumerate(keys):
                    if col != targets[i] and own in col_keys:
                        exclude[i, col] = True
        width = max(len(w) for w in windows)
        w_ids = torch.full((len(windows), width), self.pad_id, dtype=torch.long)
        w_mask = torch.zeros((len(windows), width), dtype=torch.long)
        for i, w in enumerate(windows):
            w_ids[i, : len(w)] = torch.tensor(w, dtype=torch.long)
            w_mask[i, : len(w)] = 1
        q = self.tokenizer(
            [self.prefix + ex.query for ex in batch],
            padding=True,
            truncation=True,
            max_length=self.config.query_max_length,
            return_tensors="pt",
        )
        rows, starts, ends = zip(*spans, strict=True)
        return {
            "q_ids": q["input_ids"],
            "q_mask": q["attention_mask"],
            "w_ids": w_ids,
            "w_mask": w_mask,
            "span_row": torch.tensor(rows, dtype=torch.long),
            "span_start": torch.tensor(starts, dtype=torch.long),
            "span_end": torch.tensor(ends, dtype=torch.long),
            "targets": torch.tensor(targets, dtype=torch.long),
            "exclude": exclude,
        }


@dataclass(frozen=True)
class PooledSpans:
    """Per-head vectors of spans pooled from window passes (padded to the longest span).

    Attributes:
        dense: ``[s, h]`` L2-normalised means of the spans' hidden states.
        ids: ``[s, l]`` the spans' token ids (``pad_id`` beyond a span's end).
        mask: ``[s, l]`` 1 for a span's tokens.
        sparse: ``[s, l]`` sparse-head weights of those tokens (0 beyond a span), or None.
        colbert: ``[s, l, d]`` normalised ColBERT vectors of those tokens, or None.
    """

    dense: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    sparse: torch.Tensor | None
    colbert: torch.Tensor | None


def pool_spans(
    forward: M3Forward,
    input_ids: torch.Tensor,
    span_row: torch.Tensor,
    span_start: torch.Tensor,
    span_end: torch.Tensor,
    pad_id: int,
) -> PooledSpans:
    """Pool spans of window passes per head, as late chunking pools a chunk's tokens.

    Args:
        forward: ``M3Model`` output of the windows (``hidden``, and ``sparse`` / ``colbert``
            when those heads were computed).
        input_ids: ``[w, t]`` the windows' token ids.
        span_row: ``[s]`` window of each span.
        span_start: ``[s]`` first position of each span in its window sequence (>= 1: the
            leading special token belongs to no span).
        span_end: ``[s]`` end position (exclusive), ``> span_start``.
        pad_id: Token id put beyond a span's end (must be one the sparse scores ignore).
    """
    lengths = span_end - span_start
    if bool((lengths < 1).any()) or bool((span_start < 1).any()):
        raise ValueError("every span needs >= 1 token and must start after position 0")
    width = int(lengths.max())
    steps = torch.arange(width, device=span_start.device)
    mask = steps[None, :] < lengths[:, None]
    pos = (span_start[:, None] + steps[None, :]).clamp(max=input_ids.shape[1] - 1)
    rows = span_row[:, None].expand_as(pos)
    hidden = forward.hidden[rows, pos].float() * mask[..., None]
    dense = F.normalize(hidden.sum(dim=1) / lengths[:, None].to(hidden.dtype), dim=-1)
    ids = input_ids[rows, pos].masked_fill(~mask, pad_id)
    sparse = colbert = None
    if forward.sparse is not None:
        sparse = forward.sparse[rows, pos].float() * mask
    if forward.colbert is not None:  # ColBERT row j is window position j + 1
        colbert = forward.colbert[rows, pos - 1].float() * mask[..., None]
    return PooledSpans(dense, ids, mask.long(), sparse, colbert)


class SpanTrainingModule(TrainingModule):
    """Queries encoded normally, windows encoded once, spans pooled, then ``m3_loss``."""

    def __init__(
        self, model: M3Model, loss: LossConfig, ignore_ids: Sequence[int], pad_id: int
    ) -> None:
        super().__init__(model, loss, ignore_ids)
        if pad_id not in self.ignore_ids:
            raise ValueError(f"pad id {pad_id} must be among the ignored ids {self.ignore_ids}")
        self.pad_id = pad_id

    def forward(
        self,
        q_ids: torch.Tensor,
        q_mask: torch.Tensor,
        w_ids: torch.Tensor,
        w_mask: torch.Tensor,
        span_row: torch.Tensor,
        span_start: torch.Tensor,
        span_end: torch.Tensor,
        targets: torch.Tensor,
        exclude: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        q = self.forward_heads(q_ids, q_mask)
        w = self.forward_heads(w_ids, w_mask)
        p = pool_spans(w, w_ids, span_row, span_start, span_end, self.pad_id)
        candidates = Candidates(p.dense, p.ids, p.sparse, p.colbert, p.mask)
        return self.loss(q, q_ids, q_mask, candidates, targets, exclude)


def fit_spans(config: FinetuneConfig, examples: Sequence[SpanExample]) -> FinetuneResult:
    """Train with span pooling (:meth:`m3kit.finetune.M3Finetuner.fit_spans`).

    Args:
        config: A :class:`~m3kit.finetune.FinetuneConfig`; ``passage_max_length`` is the
            window size, ``span_negatives`` the in-window negatives per example (default 0:
            in-batch negatives only).
        examples: :class:`~m3kit.finetune.span_data.SpanExample`\\ s.

    Returns:
        The :class:`~m3kit.finetune.FinetuneResult` of the saved M3-layout checkpoint.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("no span training examples")
    for i, ex in enumerate(examples):
        if not isinstance(ex, SpanExample):
            raise TypeError(f"example {i} is a {type(ex).__name__}, not a SpanExample")
    setup = prepare_training(config)
    collator = SpanCollator(setup.tokenizer, config, setup.prefix)
    module = SpanTrainingModule(
        setup.model, config.loss_config(), setup.ignore_ids, collator.pad_id
    )
    logger.info(
        "span-pooling fine-tuning: %d examples, windows of %d tokens",
        len(examples),
        config.passage_max_length,
    )
    return run_training(config, setup, module, examples, collator)
