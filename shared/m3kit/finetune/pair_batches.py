"""Batches of query / passage rows for :meth:`~m3kit.finetune.trainer.M3Finetuner.fit`: the
collator (one positive and the hard negatives per query, passages shared across the batch as
in-batch negatives, the targets and the masked shared positives) and the module whose forward
turns such a batch into the loss.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from m3kit.finetune.data import TrainingExample, text_key
from m3kit.finetune.length_buckets import candidates_in_buckets
from m3kit.finetune.positives import query_positives
from m3kit.finetune.training_loop import TrainingModule

if TYPE_CHECKING:
    from m3kit.finetune.trainer import FinetuneConfig

__all__ = ["PairCollator", "PairTrainingModule", "warn_truncated"]

logger = logging.getLogger(__name__)

#: Texts tokenised at once by :func:`warn_truncated` (bounds its memory on large data sets).
_LENGTH_BATCH = 1024


def warn_truncated(
    examples: Sequence[TrainingExample], tokenizer: Any, config: FinetuneConfig, query_prefix: str
) -> None:
    """Warn, before training, how many distinct queries and passages are longer than
    ``query_max_length`` / ``passage_max_length`` tokens: the collator cuts them, and
    training sees only their first tokens (a positive whose answer is past the cut teaches
    the query to match text without it). The cut was silent, while ``M3Index`` warns of every
    text it cuts, and LlamaIndex's engine trains on up to the model's own length.
    """
    checks = (
        ("queries", {query_prefix + ex.query for ex in examples}, "query_max_length"),
        ("passages", {p for ex in examples for p in (*ex.pos, *ex.neg)}, "passage_max_length"),
    )
    for what, texts, setting in checks:
        limit = int(getattr(config, setting))
        ordered = sorted(texts)
        lengths: list[int] = []
        for start in range(0, len(ordered), _LENGTH_BATCH):
            got = tokenizer(ordered[start : start + _LENGTH_BATCH], verbose=False)
            lengths.extend(len(ids) for ids in got["input_ids"])
        cut = [n for n in lengths if n > limit]
        if cut:
            logger.warning(
                "%d of %d training %s are longer than %s=%d tokens (the longest: %d): training "
                "sees only their first %d tokens; raise %s or split them to train on them whole",
                len(cut),
                len(lengths),
                what,
                setting,
                limit,
                max(cut),
                limit,
                setting,
            )


class PairCollator:
    """Samples one positive + negatives per query, tokenises, and builds the loss targets.

    Passages are deduplicated inside a batch by their text with whitespace collapsed
    (:func:`~m3kit.finetune.data.text_key`; each is encoded once, in the form first met);
    every query scores all of them (in-batch negatives). ``exclude`` marks candidates equal
    to one of the query's positives other than its target (those of every row with the same
    query text included), so a shared positive is never a negative.

    Args:
        tokenizer: The start model's tokenizer.
        config: The run's settings.
        query_prefix: Prepended to every query.
        positives: Every positive of each query over the whole training set
            (:func:`~m3kit.finetune.positives.query_positives`), so a passage relevant to a query
            through a row outside the batch is masked too; ``None``: the batch's rows only.
    """

    def __init__(
        self,
        tokenizer: Any,
        config: FinetuneConfig,
        query_prefix: str,
        positives: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.prefix = query_prefix
        self.positives = positives
        self.rng = random.Random(config.seed)

    def __call__(self, batch: Sequence[TrainingExample]) -> dict[str, torch.Tensor]:
        passages: list[str] = []
        index: dict[str, int] = {}

        def slot(text: str) -> int:
            key = text_key(text)
            if key not in index:
                index[key] = len(passages)
                passages.append(text)
            return index[key]

        targets = []
        for ex in batch:
            targets.append(slot(self.rng.choice(ex.pos)))
            k = min(self.config.num_negatives, len(ex.neg))
            for neg in self.rng.sample(ex.neg, k):
                slot(neg)
        exclude = torch.zeros(len(batch), len(passages), dtype=torch.bool)
        if self.config.mask_shared_positives:
            # a query given in several rows (one per relevant passage) has all their positives:
            # none is a negative of another copy of it
            relevant = query_positives(batch) if self.positives is None else self.positives
            for row, ex in enumerate(batch):
                for key in relevant[text_key(ex.query)]:
                    col = index.get(key)
                    if col is not None and col != targets[row]:
                        exclude[row, col] = True
        q = self._tokenize([self.prefix + ex.query for ex in batch], self.config.query_max_length)
        p = self._tokenize(passages, self.config.passage_max_length)
        return {
            "q_ids": q["input_ids"],
            "q_mask": q["attention_mask"],
            "p_ids": p["input_ids"],
            "p_mask": p["attention_mask"],
            "targets": torch.tensor(targets, dtype=torch.long),
            "exclude": exclude,
        }

    def _tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(  # type: ignore[no-any-return]
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )


class PairTrainingModule(TrainingModule):
    """``M3Model`` forward for queries and passages + the loss."""

    def forward(
        self,
        q_ids: torch.Tensor,
        q_mask: torch.Tensor,
        p_ids: torch.Tensor,
        p_mask: torch.Tensor,
        targets: torch.Tensor,
        exclude: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        q = self.forward_heads(q_ids, q_mask)
        candidates = candidates_in_buckets(self.forward_heads, p_ids, p_mask)
        return self.loss(q, q_ids, q_mask, candidates, targets, exclude)
