"""Late-chunking-aware fine-tuning ("span pooling"), after the late-chunking paper's remedy.

Instead of encoding each passage alone, every example's document is tokenised whole and cut
into the windows :class:`~m3kit.late_chunking.LateChunker` would encode it in
(:func:`m3kit.late_windows.plan_windows`: ``passage_max_length`` tokens per window, fixed
stride, consecutive windows sharing ``span_overlap`` text tokens, each token's state taken from
the window where it sits most centrally). The windows that own the positive span's tokens are
encoded, and the positive (and, with ``span_negatives``, other spans those windows own, as its
negatives) is pooled per head from the owned token states exactly as the chunker pools a chunk
(:func:`pool_spans`), so training optimises the vectors late chunking serves:

- a span owns the document tokens whose start (first non-whitespace character,
  :func:`m3kit.chunk_plan.token_starts`) falls inside it; the window's special tokens belong to
  no span (late chunking gives them to the document's first and last chunk);
- dense: the mean of the span's last hidden states, L2-normalised;
- sparse: the sparse-head weights of the span's tokens, scored per token id with the max
  weight, special tokens dropped (as :meth:`~m3kit.encoder.M3Encoder.sparse_vector`);
- ColBERT: the normalised ColBERT vectors of the span's tokens.

Why the chunker's windows and not one window centred on each span (this trainer's first
design): a span centred in its own window sees context the chunker never gives it, and its
pooled vector differed from the chunker's (cosine 0.89-0.99 on squad_en's long documents,
MiniLM, 194-token windows), so training optimised vectors that inference never produced.

Queries are encoded normally. The loss is :func:`m3kit.finetune.losses.m3_loss` (per-head
InfoNCE, ensemble, self-distillation, symmetric and false-negative options as configured) with
every pooled span of the batch as a candidate: the query's own positive, the other queries'
positives (in-batch) and any in-window negatives. A copy of a query's positive (same
document and span, e.g. from another question about the same paragraph) is never its
negative when ``mask_shared_positives`` is on. Every trained head is span-pooled, so the result
suits ``LateChunker(late_heads=...)`` with those heads and the same window and overlap.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from m3kit.chunk_plan import special_affixes, token_starts
from m3kit.encoder_inputs import pad_batch
from m3kit.finetune.data import DEFAULT_NEGATIVES, text_key
from m3kit.finetune.losses import LossConfig
from m3kit.finetune.span_data import SpanExample
from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult
from m3kit.finetune.training_loop import (
    Candidates,
    TrainingModule,
    prepare_training,
    run_training,
)
from m3kit.late_config import default_overlap
from m3kit.late_windows import Window, plan_windows
from m3kit.model import M3Forward, M3Model

__all__ = [
    "PooledSpans",
    "SpanCollator",
    "SpanTrainingModule",
    "fit_spans",
    "pool_spans",
]

logger = logging.getLogger(__name__)

_CACHE_DOCUMENTS = 1024  # tokenised documents kept by a collator


@dataclass(frozen=True)
class _Document:
    ids: npt.NDArray[np.int64]  # text tokens, no specials
    starts: npt.NDArray[np.int64]  # each token's first non-whitespace character
    windows: list[Window]  # the late chunker's windows over ``ids``

    def token_range(self, span: tuple[int, int]) -> tuple[int, int]:
        """Tokens whose start falls in the character span (possibly empty)."""
        a = int(np.searchsorted(self.starts, span[0], side="left"))
        b = int(np.searchsorted(self.starts, span[1], side="left"))
        return a, b

    @cached_property
    def _own_starts(self) -> npt.NDArray[np.int64]:
        return np.asarray([w.own_start for w in self.windows], dtype=np.int64)

    def owners(self, a: int, b: int) -> list[int]:
        """The window that owns each text token of ``[a, b)``."""
        tokens = np.arange(a, b, dtype=np.int64)
        return (np.searchsorted(self._own_starts, tokens, side="right") - 1).tolist()


# A span as (window row, position in that window's sequence) per token, in document order.
_Cells = tuple[tuple[int, int], ...]


class SpanCollator:
    """Builds a batch: queries, the chunker's windows that hold each positive, every span to pool.

    Args:
        tokenizer: The model's (fast) Hugging Face tokenizer.
        config: ``passage_max_length`` (window size, special tokens included), ``span_overlap``
            (text tokens consecutive windows share), ``query_max_length``, ``span_negatives``
            (in-window negatives per example), ``mask_shared_positives`` and ``seed``.
        query_prefix: Instruction put before every query.

    Returns (per call) a dict of tensors: ``q_ids``/``q_mask`` (queries), ``w_ids``/``w_mask``
    (windows, each encoded once per batch), ``span_rows``/``span_positions`` (``[s, l]``: the
    window row and the position in that window's sequence of each token of each candidate
    span, padded), ``span_lengths`` (``[s]``), ``targets`` (each query's positive column) and
    ``exclude`` (copies of a query's positive: its spans in other rows, and any span with
    its text, whitespace collapsed).
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
        self.overlap = (
            config.span_overlap
            if config.span_overlap is not None
            else default_overlap(self.capacity)
        )
        if self.overlap >= self.capacity:
            raise ValueError(
                f"span_overlap={self.overlap} must be smaller than the window's text capacity "
                f"({self.capacity} tokens of passage_max_length={config.passage_max_length})"
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
        """The document's text tokens, their start characters and its windows (cached)."""
        doc = self._documents.get(text)
        if doc is None:
            if len(self._documents) >= _CACHE_DOCUMENTS:
                self._documents.clear()
            enc = self.offsets.encode(text, add_special_tokens=False)
            starts = np.maximum.accumulate(token_starts(text, enc.offsets)) if enc.ids else None
            doc = _Document(
                np.asarray(enc.ids, dtype=np.int64),
                starts if starts is not None else np.zeros(0, dtype=np.int64),
                plan_windows(len(enc.ids), self.capacity, self.overlap),
            )
            self._documents[text] = doc
        return doc

    def positive_tokens(self, example: SpanExample) -> tuple[int, int]:
        """The positive span's text-token range ``[a, b)`` in its document.

        Raises:
            ValueError: The positive span holds no token (e.g. only whitespace).
        """
        a, b = self.document(example.document).token_range(example.span)
        if a >= b:
            raise ValueError(
                f"span {example.span} of the document of query {example.query[:40]!r} holds no "
                "token (only characters the tokenizer drops)"
            )
        return a, b

    def __call__(self, batch: Sequence[SpanExample]) -> dict[str, torch.Tensor]:
        p = len(self.prefix_ids)
        windows: list[list[int]] = []
        window_index: dict[tuple[str, int], int] = {}  # (document, window) -> row
        spans: list[_Cells] = []
        span_index: dict[_Cells, int] = {}
        keys: list[set[tuple[str, int, int]]] = []  # (document, char span) of each candidate
        texts: list[str] = []  # each candidate's text, whitespace collapsed (text_key)
        targets: list[int] = []

        def row(text: str, doc: _Document, j: int) -> int:
            if (text, j) not in window_index:
                window_index[(text, j)] = len(windows)
                w = doc.windows[j]
                windows.append([*self.prefix_ids, *doc.ids[w.start : w.end], *self.suffix_ids])
            return window_index[(text, j)]

        def cells(text: str, doc: _Document, a: int, b: int, among: set[int] | None) -> _Cells:
            """The span's tokens in their owning windows (only ``among`` ones, if given)."""
            return tuple(
                (row(text, doc, j), p + t - doc.windows[j].start)
                for t, j in zip(range(a, b), doc.owners(a, b), strict=True)
                if among is None or j in among
            )

        def slot(c: _Cells, key: tuple[str, int, int]) -> int:
            if c not in span_index:
                span_index[c] = len(spans)
                spans.append(c)
                keys.append(set())
                texts.append(text_key(key[0][key[1] : key[2]]))
            keys[span_index[c]].add(key)
            return span_index[c]

        for ex in batch:
            doc = self.document(ex.document)
            a, b = self.positive_tokens(ex)
            targets.append(slot(cells(ex.document, doc, a, b, None), (ex.document, *ex.span)))
            owners = set(doc.owners(a, b))
            inside = []
            for neg in ex.negative_spans:  # only the tokens the positive's windows own
                na, nb = doc.token_range(neg)
                if owners.intersection(doc.owners(na, nb)):
                    inside.append((na, nb, neg))
            k = min(self.config.span_negatives, len(inside))
            for na, nb, neg in self.rng.sample(inside, k):
                slot(cells(ex.document, doc, na, nb, owners), (ex.document, *neg))
        exclude = torch.zeros(len(batch), len(spans), dtype=torch.bool)
        # a span with the text of the row's positive (a repeated paragraph, the paragraph in
        # another document) is never its negative, as passage training shares one slot
        for i, target in enumerate(targets):
            for col, text in enumerate(texts):
                if col != target and text == texts[target]:
                    exclude[i, col] = True
        if self.config.mask_shared_positives:
            # the answer spans of every row with the same query text are all its positives
            relevant: dict[str, set[tuple[Any, ...]]] = {}
            same_text: dict[str, set[str]] = {}
            for ex, target in zip(batch, targets, strict=True):
                relevant.setdefault(text_key(ex.query), set()).add((ex.document, *ex.span))
                same_text.setdefault(text_key(ex.query), set()).add(texts[target])
            for i, ex in enumerate(batch):
                own = relevant[text_key(ex.query)]
                own_texts = same_text[text_key(ex.query)]
                for col, col_keys in enumerate(keys):
                    if col != targets[i] and (
                        own.intersection(col_keys) or texts[col] in own_texts
                    ):
                        exclude[i, col] = True
        q = self.tokenizer(
            [self.prefix + ex.query for ex in batch],
            padding=True,
            truncation=True,
            max_length=self.config.query_max_length,
            return_tensors="pt",
        )
        w_ids, w_mask = (torch.from_numpy(x) for x in pad_batch(windows, self.pad_id))
        width = max(len(c) for c in spans)
        rows = torch.zeros((len(spans), width), dtype=torch.long)
        positions = torch.ones((len(spans), width), dtype=torch.long)  # padding: a real position
        for i, c in enumerate(spans):
            rows[i, : len(c)] = torch.tensor([r for r, _ in c], dtype=torch.long)
            positions[i, : len(c)] = torch.tensor([q for _, q in c], dtype=torch.long)
        return {
            "q_ids": q["input_ids"],
            "q_mask": q["attention_mask"],
            "w_ids": w_ids,
            "w_mask": w_mask,
            "span_rows": rows,
            "span_positions": positions,
            "span_lengths": torch.tensor([len(c) for c in spans], dtype=torch.long),
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
    rows: torch.Tensor,
    positions: torch.Tensor,
    lengths: torch.Tensor,
    pad_id: int,
) -> PooledSpans:
    """Pool spans of window passes per head, as late chunking pools a chunk's tokens.

    Args:
        forward: ``M3Model`` output of the windows (``hidden``, and ``sparse`` / ``colbert``
            when those heads were computed).
        input_ids: ``[w, t]`` the windows' token ids.
        rows: ``[s, l]`` window of each token of each span (any value beyond its length).
        positions: ``[s, l]`` position of each such token in its window's sequence (>= 1: the
            leading special token belongs to no span; any position >= 1 beyond its length).
        lengths: ``[s]`` tokens per span, >= 1.
        pad_id: Token id put beyond a span's end (must be one the sparse scores ignore).
    """
    steps = torch.arange(rows.shape[1], device=rows.device)
    mask = steps[None, :] < lengths[:, None]
    if bool((lengths < 1).any()) or bool((positions[mask] < 1).any()):
        raise ValueError("every span needs >= 1 token, each after position 0 of its window")
    hidden = forward.hidden[rows, positions].float() * mask[..., None]
    dense = F.normalize(hidden.sum(dim=1) / lengths[:, None].to(hidden.dtype), dim=-1)
    ids = input_ids[rows, positions].masked_fill(~mask, pad_id)
    sparse = colbert = None
    if forward.sparse is not None:
        sparse = forward.sparse[rows, positions].float() * mask
    if forward.colbert is not None:  # ColBERT row j is window position j + 1
        colbert = forward.colbert[rows, positions - 1].float() * mask[..., None]
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
        span_rows: torch.Tensor,
        span_positions: torch.Tensor,
        span_lengths: torch.Tensor,
        targets: torch.Tensor,
        exclude: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        q = self.forward_heads(q_ids, q_mask)
        w = self.forward_heads(w_ids, w_mask)
        p = pool_spans(w, w_ids, span_rows, span_positions, span_lengths, self.pad_id)
        candidates = Candidates(p.dense, p.ids, p.sparse, p.colbert, p.mask)
        return self.loss(q, q_ids, q_mask, candidates, targets, exclude)


def fit_spans(config: FinetuneConfig, examples: Sequence[SpanExample]) -> FinetuneResult:
    """Train with span pooling (:meth:`m3kit.finetune.M3Finetuner.fit_spans`).

    Args:
        config: A :class:`~m3kit.finetune.FinetuneConfig`; ``passage_max_length`` is the
            window size (use the window your :class:`~m3kit.late_chunking.LateChunker` will
            run), ``span_overlap`` the text tokens consecutive windows share (default: the
            chunker's), ``span_negatives`` the in-window negatives per example (default 0:
            in-batch negatives only); ``num_negatives`` (query / passage rows) must be 0 or
            left at its default.
        examples: :class:`~m3kit.finetune.span_data.SpanExample`\\ s.

    Raises:
        ValueError: No examples, or ``num_negatives`` set (it would be ignored).
        TypeError: An example is not a ``SpanExample``.

    Returns:
        The :class:`~m3kit.finetune.FinetuneResult` of the saved M3-layout checkpoint.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("no span training examples")
    for i, ex in enumerate(examples):
        if not isinstance(ex, SpanExample):
            raise TypeError(f"example {i} is a {type(ex).__name__}, not a SpanExample")
    # 0 (no row negatives) is what span training draws from rows; FinetuneConfig's
    # flagembedding() preset sets 3
    if config.num_negatives not in (0, DEFAULT_NEGATIVES):
        raise ValueError(
            f"num_negatives={config.num_negatives} applies to query / passage rows "
            "(M3Finetuner.fit) only: span training draws span_negatives in-window negatives "
            f"(now {config.span_negatives}); set span_negatives instead, and num_negatives "
            "to 0"
        )
    # the sparse head is fitted to the spans trained on (what the index stores as chunks),
    # not whole documents: a folder of few documents gives few document frequencies
    spans = [ex.document[a:b] for ex in examples for a, b in (ex.span, *ex.negative_spans)]
    setup = prepare_training(config, spans)
    collator = SpanCollator(setup.tokenizer, config, setup.prefix)
    module = SpanTrainingModule(
        setup.model, config.loss_config(), setup.ignore_ids, collator.pad_id
    )
    logger.info(
        "span-pooling fine-tuning: %d examples, windows of %d tokens sharing %d",
        len(examples),
        config.passage_max_length,
        collator.overlap,
    )
    return run_training(config, setup, module, examples, collator)
