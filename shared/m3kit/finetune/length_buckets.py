"""Encode a training batch's passages in length buckets, each padded to its own longest.

A step of :meth:`M3Finetuner.fit` encodes every passage of the batch (positives and hard
negatives: 64 texts with 16 queries and 3 negatives) in one forward, padded to the longest
of them. On squad_en's training rows cut at 256 tokens that is 64 % real tokens; sorted by
length into four buckets, each padded to its own longest, 90 %. Attention masks padded keys
out, so each text's outputs are the same (up to float summation order) whichever bucket
encodes it: only the padding's work is saved. transformers' ``group_by_length`` sorts whole
batches, not the texts inside one step's forward, hence this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from m3kit.finetune.training_loop import Candidates
from m3kit.model import M3Forward

__all__ = ["MIN_BUCKET_ROWS", "bucket_rows", "candidates_in_buckets"]

#: Fewest texts a bucket holds: smaller forwards cost more per token than padding saves.
MIN_BUCKET_ROWS = 16
_MAX_BUCKETS = 4
#: Buckets are used only when they leave at most this share of one forward's padded tokens
#: (at squad_en's 128-token cut the rows are 98 % real tokens either way, and four smaller
#: forwards only add their overhead).
_WORTH = 0.85


def bucket_rows(lengths: torch.Tensor) -> list[torch.Tensor]:
    """Row indices of each bucket: the rows sorted by length, cut into up to four buckets
    of at least :data:`MIN_BUCKET_ROWS` rows; one bucket for a small batch, or where the
    buckets would save less than 15 % of the padded tokens.

    >>> lengths = torch.tensor([5, 1, 4, 2, 3] * 8)  # 40 rows: two buckets of 20
    >>> [lengths[b].tolist() for b in bucket_rows(lengths)]
    [[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3], \
[3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5]]
    >>> len(bucket_rows(torch.tensor([120, 128, 124, 127] * 16)))  # little to save: one
    1
    """
    count = min(_MAX_BUCKETS, max(1, lengths.shape[0] // MIN_BUCKET_ROWS))
    order = torch.argsort(lengths, stable=True)
    buckets = list(torch.tensor_split(order, count))
    padded = sum(len(b) * int(lengths[b].max()) for b in buckets)
    if padded > _WORTH * lengths.shape[0] * int(lengths.max()):
        return [order]
    return buckets


def candidates_in_buckets(
    forward: Callable[[torch.Tensor, torch.Tensor], M3Forward],
    ids: torch.Tensor,
    mask: torch.Tensor,
) -> Candidates:
    """The :class:`Candidates` of ``forward(ids, mask)``, run per length bucket.

    Each bucket is cut to the columns its rows use (up to the last attended position, so
    left padding is kept whole) and its token outputs are padded back with zeros to the
    batch's width, so the result has the shapes and values one ``forward(ids, mask)`` gives,
    rows in input order.
    """
    buckets = bucket_rows(mask.sum(dim=1))
    if len(buckets) == 1:
        out = forward(ids, mask)
        return Candidates(out.dense, ids, out.sparse, out.colbert, mask[:, 1:])
    width = ids.shape[1]
    positions = torch.arange(1, width + 1, device=mask.device)
    dense: list[torch.Tensor] = []
    sparse: list[torch.Tensor] = []
    colbert: list[torch.Tensor] = []
    for rows in buckets:
        used = int((mask[rows] * positions).max())  # the last attended column, 1-based
        out = forward(ids[rows, :used], mask[rows, :used])
        dense.append(out.dense)
        if out.sparse is not None:
            sparse.append(F.pad(out.sparse, (0, width - used)))
        if out.colbert is not None:  # CLS dropped: width - 1 columns
            colbert.append(F.pad(out.colbert, (0, 0, 0, width - used)))
    inverse = torch.argsort(torch.cat(buckets))
    return Candidates(
        torch.cat(dense)[inverse],
        ids,
        torch.cat(sparse)[inverse] if sparse else None,
        torch.cat(colbert)[inverse] if colbert else None,
        mask[:, 1:],
    )
