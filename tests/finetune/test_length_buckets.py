"""Passages encoded in length buckets give what one padded forward gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3kit.finetune.length_buckets import MIN_BUCKET_ROWS, candidates_in_buckets
from m3kit.model import M3Forward, M3Model


def _batch(
    vocab: int, rows: int, *, left: bool, shortest: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(shortest, 40, (rows,), generator=gen)
    width = int(lengths.max())
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for r, n in enumerate(lengths.tolist()):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[r, cols] = torch.randint(5, vocab, (n,), generator=gen)
        mask[r, cols] = 1
    return ids, mask


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_buckets_give_one_forwards_candidates(tiny_m3_path: Path, left: bool) -> None:
    model = M3Model.from_pretrained(tiny_m3_path).eval()
    ids, mask = _batch(model.backbone.config.vocab_size, 4 * MIN_BUCKET_ROWS, left=left)
    widths: list[int] = []

    def forward(i: torch.Tensor, m: torch.Tensor) -> M3Forward:
        widths.append(i.shape[1])
        return model(i, m)

    with torch.no_grad():
        whole = model(ids, mask)
        got = candidates_in_buckets(forward, ids, mask)
    assert len(widths) == 4
    if not left:  # the short buckets ran on fewer columns; left padding keeps them whole
        assert min(widths) < ids.shape[1] == max(widths)
    assert got.ids is ids and torch.equal(got.colbert_mask, mask[:, 1:])
    assert whole.sparse is not None and whole.colbert is not None
    assert got.sparse is not None and got.colbert is not None
    torch.testing.assert_close(got.dense, whole.dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sparse, whole.sparse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.colbert, whole.colbert, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("rows", "shortest"),
    [
        (MIN_BUCKET_ROWS + 3, 3),  # too few rows for two buckets
        (4 * MIN_BUCKET_ROWS, 36),  # like lengths: buckets would save under 15 % of the padding
    ],
    ids=["small-batch", "like-lengths"],
)
def test_one_forward_where_buckets_do_not_pay(tiny_m3_path: Path, rows: int, shortest: int) -> None:
    model = M3Model.from_pretrained(tiny_m3_path).eval()
    vocab = model.backbone.config.vocab_size
    ids, mask = _batch(vocab, rows, left=False, shortest=shortest)
    calls: list[int] = []

    def forward(i: torch.Tensor, m: torch.Tensor) -> M3Forward:
        calls.append(i.shape[0])
        return model(i, m)

    with torch.no_grad():
        candidates_in_buckets(forward, ids, mask)
    assert calls == [rows]
