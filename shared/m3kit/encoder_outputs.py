"""What comes out of an encoder's forward passes: rows of padded batches back in input order.

A forward pass (torch or ONNX) gives float32 arrays per padded batch, named like
:class:`~m3kit.model.M3Forward` (``dense``, ``sparse``, ``colbert``, ``hidden``) plus the
batch's ``ids`` and ``mask``. :class:`OutputCollector` cuts each row to its length and puts it
at its text's position; :func:`sparse_vector` turns token weights into a
:class:`~m3kit.outputs.SparseVector`.

>>> import numpy as np
>>> v = sparse_vector(np.array([0, 7, 9, 7]), np.array([0.9, 0.2, 0.0, 0.5]), np.array([0]))
>>> v.indices.tolist(), v.values.tolist()
([7], [0.5])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from m3kit.outputs import FloatArray, Head, M3Output, SparseVector

__all__ = ["OutputCollector", "TokenStates", "sparse_vector", "token_states"]


@dataclass(frozen=True)
class TokenStates:
    """Per-token outputs of one sequence, float32 (what late chunking pools per chunk).

    Attributes:
        hidden: Last hidden states ``[t, h]``.
        sparse: Sparse-head weights ``[t]`` (ReLU applied), or None when not asked for.
        colbert: Normalised ColBERT vectors ``[t - 1, d]`` of tokens 1..t-1 (CLS has none), or
            None when not asked for.
    """

    hidden: FloatArray
    sparse: FloatArray | None
    colbert: FloatArray | None


def sparse_vector(
    ids: np.ndarray,
    weights: np.ndarray,
    unused_ids: np.ndarray,
    *,
    top_k: int | None = None,
    min_weight: float = 0.0,
) -> SparseVector:
    """Token weights -> sparse vector: max per id; ``unused_ids`` and weights <= 0 dropped.

    Args:
        ids: Token ids ``[t]``.
        weights: Their sparse-head weights ``[t]``.
        unused_ids: Ids never kept (the special tokens).
        top_k: Keep only the k highest weights (ids stay sorted).
        min_weight: Drop weights at or below this value.
    """
    ids = np.asarray(ids, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    if np.isinf(weights).any():  # (NaN is dropped below, as relu(NaN) <= 0 is for the store)
        raise ValueError(
            "the sparse head gave infinite weights: the encoder gave non-finite output (a "
            "checkpoint with NaN / inf weights, or an fp16 overflow: load the encoder with "
            "dtype='fp32' or 'bf16')"
        )
    keep = (weights > max(min_weight, 0.0)) & ~np.isin(ids, unused_ids)
    ids, weights = ids[keep], weights[keep]
    if ids.size == 0:
        return SparseVector.empty()
    uniq, inverse = np.unique(ids, return_inverse=True)
    best = np.zeros(uniq.shape[0], dtype=np.float32)
    np.maximum.at(best, inverse, weights)
    if top_k is not None and 0 < top_k < uniq.shape[0]:
        order = np.sort(np.argsort(-best, kind="stable")[:top_k])
        uniq, best = uniq[order], best[order]
    return SparseVector(uniq, best)


class OutputCollector:
    """Collects rows of forward passes into one :class:`M3Output`, in input order.

    Args:
        heads: The heads computed.
        dense_dim: Dense vector size.
        token_counts: Tokens per text (special tokens included), in input order.
    """

    def __init__(self, heads: frozenset[Head], dense_dim: int, token_counts: Sequence[int]):
        n = len(token_counts)
        self.heads = heads
        self.token_counts = tuple(int(c) for c in token_counts)
        self._dense = np.zeros((n, dense_dim), dtype=np.float32) if Head.DENSE in heads else None
        self._sparse: list[SparseVector] = [SparseVector.empty()] * n
        self._colbert: list[FloatArray] = [np.zeros((0, 0), dtype=np.float32)] * n

    def add_forward(
        self,
        batch: Sequence[int],
        fwd: Mapping[str, np.ndarray],
        unused_ids: np.ndarray,
        *,
        sparse_top_k: int | None,
        sparse_min_weight: float,
    ) -> None:
        """Take the rows of one padded forward pass; ``batch[row]`` is row's text position."""
        ids, mask = fwd["ids"], fwd["mask"]
        for row, i in enumerate(batch):
            length = int(mask[row].sum())
            if self._dense is not None:
                self._dense[i] = fwd["dense"][row]
            if Head.SPARSE in self.heads:
                self._sparse[i] = sparse_vector(
                    ids[row, :length],
                    fwd["sparse"][row, :length],
                    unused_ids,
                    top_k=sparse_top_k,
                    min_weight=sparse_min_weight,
                )
            if Head.COLBERT in self.heads:
                self._colbert[i] = np.ascontiguousarray(fwd["colbert"][row, : length - 1])

    def add_output(self, batch: Sequence[int], out: M3Output) -> None:
        """Take an already assembled batch (one worker's :class:`M3Output` for ``batch``)."""
        for row, i in enumerate(batch):
            if self._dense is not None:
                self._dense[i] = out.dense[row]
            if Head.SPARSE in self.heads:
                self._sparse[i] = out.sparse[row]
            if Head.COLBERT in self.heads:
                self._colbert[i] = out.colbert[row]

    def result(self) -> M3Output:
        """The batch output (rows never added keep zero vectors)."""
        return M3Output(
            heads=self.heads,
            token_counts=self.token_counts,
            _dense=self._dense,
            _sparse=tuple(self._sparse) if Head.SPARSE in self.heads else None,
            _colbert=tuple(self._colbert) if Head.COLBERT in self.heads else None,
        )


def token_states(
    batch: Sequence[int], fwd: Mapping[str, np.ndarray], lengths: Sequence[int]
) -> list[tuple[int, TokenStates]]:
    """``(text position, its states)`` for each row of one padded forward pass with hidden."""
    out: list[tuple[int, TokenStates]] = []
    for row, i in enumerate(batch):
        length = lengths[i]
        out.append(
            (
                i,
                TokenStates(
                    hidden=np.ascontiguousarray(fwd["hidden"][row, :length]),
                    sparse=fwd["sparse"][row, :length].copy() if "sparse" in fwd else None,
                    colbert=np.ascontiguousarray(fwd["colbert"][row, : length - 1])
                    if "colbert" in fwd
                    else None,
                ),
            )
        )
    return out
