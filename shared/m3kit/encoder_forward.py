"""The forward-pass side of :class:`~m3kit.encoder.M3Encoder`: token ids in, head outputs out.

:class:`EncoderForward` is a mixin holding what runs the model on tokenised sequences: the
heads the checkpoint has, length-sorted batching, one padded forward pass (torch or ONNX
Runtime), per-token states and token weights -> sparse vectors. ``M3Encoder`` sets the
attributes it reads in its constructor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from m3kit.backends.torch_backend import torch_forward
from m3kit.checkpoint import CheckpointKind
from m3kit.encoder_inputs import check_heads, check_model_input_ids, pad_batch, plan_batches
from m3kit.encoder_outputs import TokenStates, sparse_vector, token_states
from m3kit.model import M3Model
from m3kit.outputs import ALL_HEADS, Head, SparseVector
from m3kit.precision import Precision

if TYPE_CHECKING:
    from m3kit.backends.onnx_backend import OnnxRunner

__all__ = ["EncoderForward"]


class EncoderForward:
    """Forward passes over token ids (mixed into :class:`~m3kit.encoder.M3Encoder`)."""

    # set by M3Encoder.__init__
    model: M3Model
    device: torch.device
    precision: Precision
    batch_size: int
    max_batch_tokens: int
    _onnx: OnnxRunner | None
    _pad_id: int
    _unused_ids: np.ndarray

    @property
    def available_heads(self) -> frozenset[Head]:
        return ALL_HEADS if self.model.kind is CheckpointKind.M3 else frozenset({Head.DENSE})

    def token_states(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        heads: Sequence[Head | str] | Head | str | frozenset[Head] | None = None,
    ) -> list[TokenStates]:
        """Per-token hidden states and head outputs of tokenised sequences (ids with specials).

        Same batching, device and precision as :meth:`encode_tokenized`; one entry per sequence.

        Raises:
            ValueError: Token ids no forward pass takes (as :meth:`encode_tokenized` refuses).
        """
        check_model_input_ids(self.model, input_ids)
        wanted = self._check_heads(heads)
        lengths = [len(ids) for ids in input_ids]
        out: list[TokenStates | None] = [None] * len(input_ids)
        for batch in self._plan_batches(lengths):
            fwd = self._forward([input_ids[i] for i in batch], wanted, hidden=True)
            for i, states in token_states(batch, fwd, lengths):
                out[i] = states
        return [t for t in out if t is not None]

    def sparse_vector(
        self,
        ids: np.ndarray,
        weights: np.ndarray,
        *,
        top_k: int | None = None,
        min_weight: float = 0.0,
    ) -> SparseVector:
        """Token weights -> sparse vector: max per id; special tokens and weights <= 0 dropped."""
        return sparse_vector(ids, weights, self._unused_ids, top_k=top_k, min_weight=min_weight)

    # -- internals --------------------------------------------------------------------------
    def _check_heads(
        self, heads: Sequence[Head | str] | Head | str | frozenset[Head] | None
    ) -> frozenset[Head]:
        return check_heads(self.available_heads, heads)

    def _plan_batches(self, lengths: list[int]) -> list[list[int]]:
        return plan_batches(
            lengths, batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens
        )

    def _forward(
        self, batch_ids: list[Sequence[int]], wanted: frozenset[Head], *, hidden: bool = False
    ) -> dict[str, np.ndarray]:
        """One padded forward pass: ``ids``, ``mask`` and float32 head outputs (numpy)."""
        ids, mask = pad_batch(batch_ids, self._pad_id)
        if self._onnx is None:
            res = torch_forward(
                self.model, self.device, self.precision, ids, mask, wanted, hidden=hidden
            )
        else:  # the graph computes every head; keep what was asked for
            self._onnx.check_pooling(self.model.pooling.value)
            keep = {Head.DENSE.value, *(h.value for h in wanted)} | (
                {"hidden"} if hidden else set()
            )
            res = {k: v for k, v in self._onnx.run(ids, mask).items() if k in keep}
        return {"ids": ids, "mask": mask, **res}
