"""Encode a retrieval set (passages and queries) as a collection would hold and search it.

The one encode step of :func:`m3kit.finetune.evaluate.evaluate_heads` (exhaustive metrics per
head) and :func:`m3kit.store.calibration_task.calibration_task` (fusion calibration in the
store): both measure passages and queries encoded with the same heads and truncation.
:func:`~m3kit.finetune.evaluate.evaluate_heads` gives the sparse cut here (``sparse_top_k`` /
``sparse_min_weight``, the cut an :class:`~m3kit.store.M3Index` applies to what it stores and
searches with); the calibration encodes uncut and leaves the cut to its store, as an index does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.outputs import Head, M3Output

__all__ = ["encode_corpus_and_queries"]


def encode_corpus_and_queries(
    encoder: M3Encoder,
    passages: Sequence[str],
    queries: Sequence[str],
    *,
    heads: Sequence[Head],
    max_length: int | None,
    show_progress: bool,
    query_progress: bool | None = None,
    sparse_top_k: int | None = None,
    sparse_min_weight: float = 0.0,
) -> tuple[M3Output, M3Output]:
    """``(passages, queries)`` encoded, the queries with the encoder's query instruction.

    Args:
        encoder: The model.
        passages: Passage texts, in the order the first output holds them.
        queries: Query texts, in the order the second output holds them.
        heads: Heads to compute.
        max_length: Truncation of passages and queries (``None``: the encoder's window).
        show_progress: Progress bar while encoding the passages.
        query_progress: Progress bar while encoding the queries (``None``: as
            ``show_progress``).
        sparse_top_k: Keep only the ``k`` highest sparse weights of every passage and query.
        sparse_min_weight: Drop sparse weights at or below this value.

    Returns:
        The passages' and the queries' :class:`~m3kit.outputs.M3Output`.

    Raises:
        ValueError: A sparse cut :meth:`M3Encoder.encode <m3kit.encoder.M3Encoder.encode>`
            refuses (checked before any forward pass), or a ``max_length`` longer than the
            encoder's (``encode`` cuts at the encoder's own: the texts would be scored at a
            shorter length than asked, silently).
    """
    if max_length is not None and max_length > encoder.max_length:
        raise ValueError(
            f"max_length={max_length} is longer than this encoder's {encoder.max_length} "
            f"tokens: load the model with max_length={max_length} (m3kit eval does with "
            f"--max-length; up to its position embeddings), or give at most "
            f"{encoder.max_length}"
        )
    docs = encoder.encode(
        list(passages),
        heads=heads,
        max_length=max_length,
        sparse_top_k=sparse_top_k,
        sparse_min_weight=sparse_min_weight,
        show_progress=show_progress,
    )
    qs = encoder.encode(
        list(queries),
        heads=heads,
        query=True,
        max_length=max_length,
        sparse_top_k=sparse_top_k,
        sparse_min_weight=sparse_min_weight,
        show_progress=show_progress if query_progress is None else query_progress,
    )
    return docs, qs
