"""The unified loss equals FlagEmbedding's M3 formulas (scores, InfoNCE, ensemble, distillation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m3kit.finetune.losses import (
    LossConfig,
    colbert_scores,
    false_negative_mask,
    info_nce,
    m3_loss,
    reverse_info_nce,
    sparse_scores,
)
from m3kit.outputs import ALL_HEADS, Head

VOCAB = 40
SPECIAL = [0, 1, 2]


def _flag_sparse(ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FlagEmbedding's training-mode sparse embedding: [b, t, vocab] scatter, max over t."""
    emb = torch.zeros(ids.size(0), ids.size(1), VOCAB, dtype=weights.dtype)
    emb = torch.scatter(emb, dim=-1, index=ids.unsqueeze(-1), src=weights.unsqueeze(-1))
    emb = torch.max(emb, dim=1).values
    keep = torch.ones(VOCAB)
    keep[SPECIAL] = 0
    return emb * keep


def test_sparse_scores_equal_full_vocabulary_scatter_values_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    q_ids = torch.randint(0, 12, (3, 7), generator=gen)  # small id range: many repeats
    p_ids = torch.randint(0, 12, (5, 9), generator=gen)
    q_ids[:, 0] = 0  # CLS
    p_ids[:, -2:] = 1  # padding
    q_w = torch.rand(3, 7, generator=gen, requires_grad=True)
    p_w = torch.rand(5, 9, generator=gen)
    p_w[:, -2:] = 0
    p_w.requires_grad_(True)

    ours = sparse_scores(q_ids, q_w, p_ids, p_w, SPECIAL)
    ref = _flag_sparse(q_ids, q_w) @ _flag_sparse(p_ids, p_w).T
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours.sum(), [q_w, p_w])
    g_ref = torch.autograd.grad(ref.sum(), [q_w, p_w])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_colbert_scores_are_maxsim_over_real_tokens() -> None:
    gen = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(2, 4, 8, generator=gen), dim=-1)
    p = F.normalize(torch.randn(3, 6, 8, generator=gen), dim=-1)
    q_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    p_mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    q = q * q_mask[..., None]
    p = p * p_mask[..., None]
    got = colbert_scores(q, q_mask, p, p_mask)
    for i in range(2):
        for j in range(3):
            qi = q[i, : int(q_mask[i].sum())]
            pj = p[j, : int(p_mask[j].sum())]
            expected = (qi @ pj.T).max(dim=1).values.mean()
            torch.testing.assert_close(got[i, j], expected)


def test_info_nce_excludes_false_negatives() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.3, 0.8]])
    targets = torch.tensor([0, 2])
    plain, _ = info_nce(scores, targets, None, 0.1)
    expected = F.cross_entropy(scores / 0.1, targets)
    torch.testing.assert_close(plain, expected)
    exclude = torch.tensor([[False, True, False], [False, False, False]])
    masked, logits = info_nce(scores, targets, exclude, 0.1)
    manual = F.cross_entropy(torch.tensor([[5.0, -1e4, 1.0], [2.0, 3.0, 8.0]]), targets)
    torch.testing.assert_close(masked, manual)
    assert masked < plain
    assert torch.softmax(logits, -1)[0, 1] == 0


def test_m3_loss_matches_flagembedding_composition() -> None:
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderModel

    gen = torch.Generator().manual_seed(2)
    d, s, c = (torch.randn(4, 12, generator=gen) for _ in range(3))
    targets = torch.arange(4) * 3
    temp = 0.02
    out = m3_loss({Head.DENSE: d, Head.SPARSE: s, Head.COLBERT: c}, targets, None, LossConfig())

    # FlagEmbedding: scores divided by the temperature, ensemble = d + 0.3 s + c (scaled),
    # loss = (L_d + L_ens + 0.1 L_s + L_c) / 4; + (KD_d + 0.1 KD_s + KD_c) / 3; / 2
    ce = torch.nn.CrossEntropyLoss()
    ds, ss, cs = d / temp, s / temp, c / temp
    ens = ds + 0.3 * ss + cs
    loss = (ce(ds, targets) + ce(ens, targets) + 0.1 * ce(ss, targets) + ce(cs, targets)) / 4
    teacher = torch.softmax(ens.detach(), dim=-1)
    kd = AbsEmbedderModel.distill_loss
    loss = (
        loss
        + (kd("kl_div", teacher, ds) + 0.1 * kd("kl_div", teacher, ss) + kd("kl_div", teacher, cs))
        / 3
    )
    loss = loss / 2
    torch.testing.assert_close(out.total, loss)
    assert set(out.terms) == {"dense", "sparse", "colbert", "ensemble", "self_distill", "total"}


def test_m3_loss_head_subsets() -> None:
    scores = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1])
    single = m3_loss(
        {Head.SPARSE: scores}, targets, None, LossConfig(heads=frozenset({Head.SPARSE}))
    )
    torch.testing.assert_close(single.total, F.cross_entropy(scores / 0.02, targets))
    assert set(single.terms) == {"sparse", "total"}
    two = m3_loss(
        {Head.DENSE: scores, Head.COLBERT: scores},
        targets,
        None,
        LossConfig(heads=frozenset({Head.DENSE, Head.COLBERT}), self_distill=False),
    )
    assert set(two.terms) == {"dense", "colbert", "ensemble", "total"}
    with pytest.raises(ValueError, match="scores missing"):
        m3_loss({Head.DENSE: scores}, targets, None, LossConfig(heads=ALL_HEADS))
    with pytest.raises(ValueError, match="temperature"):
        LossConfig(temperature=0)


def test_reverse_info_nce_is_forward_term_on_transposed_scores() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 4, generator=gen)
    targets = torch.arange(4)
    reverse = reverse_info_nce(scores, targets, None, 0.05)
    forward_t, _ = info_nce(scores.T, targets, None, 0.05)
    torch.testing.assert_close(reverse, forward_t)


def test_reverse_info_nce_masks_queries_sharing_the_positive() -> None:
    # queries 0 and 1 share passage 0; query 2's positive is passage 1; passage 2 a negative
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.7, 0.2, 0.1], [0.4, 0.8, 0.6]])
    targets = torch.tensor([0, 0, 1])
    got = reverse_info_nce(scores, targets, None, 0.1)
    logits = scores[:, [0, 0, 1]].T / 0.1  # row i: positive of query i against each query
    logits[0, 1] = logits[1, 0] = -1e4  # the shared positive is not a negative of either
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(3)))
    # a copy of a positive marked in exclude (query 2 also has passage 0 as positive)
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[2, 0] = True
    got = reverse_info_nce(scores, targets, exclude, 0.1)
    logits[0, 2] = logits[1, 2] = -1e4
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(3)))


def test_false_negative_mask_is_exactly_the_candidates_within_the_margin() -> None:
    scores = torch.tensor([[0.80, 0.76, 0.74, 0.90, 0.10], [0.30, 0.50, 0.46, 0.40, 0.60]])
    targets = torch.tensor([0, 1])
    mask = false_negative_mask(scores, targets, 0.05)
    expected = [[False, True, False, True, False], [False, False, True, False, True]]
    assert mask.tolist() == expected
    at_zero = false_negative_mask(scores, targets, 0.0)[0].tolist()  # strictly above only
    assert at_zero == [False, False, False, True, False]
    assert false_negative_mask(scores.requires_grad_(), targets, 0.05).requires_grad is False


def test_m3_loss_with_margin_equals_loss_with_those_candidates_excluded() -> None:
    gen = torch.Generator().manual_seed(4)
    d, c = torch.rand(3, 6, generator=gen), torch.rand(3, 6, generator=gen)
    targets = torch.tensor([0, 2, 4])
    heads = frozenset({Head.DENSE, Head.COLBERT})
    filtered = m3_loss(
        {Head.DENSE: d, Head.COLBERT: c},
        targets,
        None,
        LossConfig(heads=heads, false_negative_margin=0.1),
    )
    mask = false_negative_mask(d, targets, 0.1)
    manual = m3_loss({Head.DENSE: d, Head.COLBERT: c}, targets, mask, LossConfig(heads=heads))
    torch.testing.assert_close(filtered.total, manual.total)
    assert filtered.terms["false_negatives"] == float(mask.sum()) / 3


def test_symmetric_and_per_head_temperatures_compose_per_head_terms() -> None:
    gen = torch.Generator().manual_seed(5)
    d, c = torch.randn(3, 3, generator=gen), torch.randn(3, 3, generator=gen)
    targets = torch.arange(3)
    heads = frozenset({Head.DENSE, Head.COLBERT})
    cfg = LossConfig(
        heads=heads, temperature=0.05, colbert_temperature=0.1, symmetric=True, self_distill=False
    )
    out = m3_loss({Head.DENSE: d, Head.COLBERT: c}, targets, None, cfg)

    def both(s: torch.Tensor, t: float) -> torch.Tensor:
        return (F.cross_entropy(s / t, targets) + F.cross_entropy(s.T / t, targets)) / 2

    ens = F.cross_entropy((d + c) / 0.05, targets)
    expected = (both(d, 0.05) + both(c, 0.1) + ens) / 3
    torch.testing.assert_close(out.total, expected)
    assert cfg.head_temperature(Head.SPARSE) == 0.05
    with pytest.raises(ValueError, match="colbert_temperature"):
        LossConfig(colbert_temperature=0.0)
    with pytest.raises(ValueError, match="false_negative_margin"):
        LossConfig(false_negative_margin=-0.1)


def test_flagembedding_loss_preset() -> None:
    cfg = LossConfig.flagembedding()
    assert cfg == LossConfig(
        heads=ALL_HEADS, temperature=0.02, ensemble_weights=(1.0, 0.3, 1.0), self_distill=True
    )
    assert not cfg.symmetric and cfg.false_negative_margin is None
    assert cfg.sparse_temperature is None and cfg.colbert_temperature is None


def test_a_false_negative_margin_without_the_dense_head_is_refused() -> None:
    """The margin is on the dense score; without the dense head it was read on the first
    trained head's scores (sparse: another scale), silently."""
    with pytest.raises(ValueError, match="margin on the dense head's score"):
        LossConfig(heads=frozenset({Head.SPARSE, Head.COLBERT}), false_negative_margin=0.05)
    LossConfig(heads=frozenset({Head.DENSE, Head.COLBERT}), false_negative_margin=0.05)
