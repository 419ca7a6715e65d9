"""Dropout with 16-bit masks on CPU (m3kit.finetune.cpu_dropout): same dropout, other draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from m3kit.finetune import M3Finetuner, TrainingExample
from m3kit.finetune.cpu_dropout import (
    ATTENTION_NAME,
    MaskDropout,
    attention_with_dropout,
    cpu_dropout,
    keep_mask,
    mask_dropout,
)
from m3kit.finetune.layers import set_attention_dropout
from m3kit.model import M3Model
from tests.finetune.conftest import tiny_finetune_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.0])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((100, 50, 200), p, CPU)
    assert mask.dtype == torch.bool and mask.shape == (100, 50, 200)
    assert abs((1 - mask.float().mean().item()) - p) < 0.003  # 1M draws: ~6 standard errors
    torch.manual_seed(0)
    assert torch.equal(keep_mask((100, 50, 200), p, CPU), mask)  # the seed repeats it
    odd = keep_mask((7, 3), p, CPU)  # a size that is no multiple of the 4 per 64-bit draw
    assert odd.shape == (7, 3)
    if p > 0:
        again = keep_mask((100, 50, 200), p, CPU)
        assert not torch.equal(again, mask)  # each call draws anew
        # neighbours (in one 64-bit word and across words) are independent
        pairs = (mask.flatten()[:-1] & mask.flatten()[1:]).float().mean().item()
        assert abs(pairs - (1 - p) ** 2) < 0.004
        assert abs((mask & again).float().mean().item() - (1 - p) ** 2) < 0.004


def test_mask_dropout_scales_the_kept_and_backpropagates_through_the_same_mask() -> None:
    x = torch.ones(200, 300, requires_grad=True)
    y = mask_dropout(x, 0.2)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.01
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, y.detach())  # d(sum)/dx = mask / 0.8
    assert mask_dropout(x, 0.2, training=False) is x
    assert mask_dropout(x, 0.0) is x
    assert not mask_dropout(x, 1.0).any()  # as torch: everything dropped
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\], got 1.5"):
        mask_dropout(x, 1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_without_dropout_is_pytorch_s_sdpa(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, dtype=dtype) for _ in range(3))
    keep = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    module = nn.Module().eval()
    out, weights = attention_with_dropout(module, q, k, v, additive, scaling=0.3, dropout=0.1)
    expected = nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=keep, scale=0.3
    ).transpose(1, 2)
    assert weights is None and out.dtype == dtype and out.shape == (2, 6, 4, 8)
    assert torch.allclose(out.float(), expected, atol=2e-2 if dtype == torch.bfloat16 else 1e-5)
    boolean, _ = attention_with_dropout(module, q, k, v, keep, scaling=0.3, dropout=0.1)
    assert torch.equal(boolean, out)  # a boolean mask (True: attend) is the same mask
    train, _ = attention_with_dropout(module.train(), q, k, v, additive, scaling=0.3, dropout=0.5)
    assert not torch.allclose(train.float(), out.float())  # training drops probabilities
    with pytest.raises(ValueError, match="no softcap"):
        attention_with_dropout(module, q, k, v, None, softcap=30.0)
    with pytest.raises(ValueError, match="as many key / value heads"):
        attention_with_dropout(module, q, k[:, :2], v[:, :2], None)


def test_half_precision_attention_stays_in_half_precision() -> None:
    """bf16 inputs are multiplied and soft-maxed in bf16 (as transformers' eager attention under
    CPU autocast; the query scaled first), not converted to float32 as PyTorch's plain kernel
    does: at 256 tokens those conversions made attention most of a training step."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    keep = torch.ones(2, 1, 1, 16, dtype=torch.bool)
    keep[1, ..., 12:] = False
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    out, _ = attention_with_dropout(nn.Module().eval(), q, k, v, additive, scaling=0.3)
    mask = additive.clamp(min=torch.finfo(torch.bfloat16).min).to(torch.bfloat16)
    in_bf16 = torch.softmax((q * 0.3) @ k.transpose(-2, -1) + mask, dim=-1) @ v
    assert out.dtype == torch.bfloat16 and torch.equal(out, in_bf16.transpose(1, 2))
    in_fp32 = nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=keep, scale=0.3
    ).transpose(1, 2)
    assert not torch.equal(out.float(), in_fp32)  # not the float32 arithmetic
    assert torch.allclose(out.float(), in_fp32, atol=2e-2)


def test_training_attention_drops_probabilities_with_the_mask_and_scale_of_mask_dropout() -> None:
    """Dropout on the attention probabilities equals :func:`mask_dropout`'s (same draws, same
    1 / (1 - p)), though the scale goes on the smaller product ``probs @ v``; gradients too."""
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    module = nn.Module().train()
    torch.manual_seed(3)
    out, _ = attention_with_dropout(module, q, k, v, None, scaling=0.3, dropout=0.25)
    torch.manual_seed(3)
    probs = torch.softmax(q @ k.transpose(-2, -1) * 0.3, dim=-1)
    expected = (mask_dropout(probs, 0.25) @ v).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize("path", ["tiny_m3_path", "tiny_m3_xlmr_path"])
def test_cpu_dropout_switches_a_backbone_for_the_block_and_restores_it(
    path: str, request: pytest.FixtureRequest
) -> None:
    backbone = M3Model.from_pretrained(request.getfixturevalue(path)).backbone
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    before = backbone.config._attn_implementation
    dropouts = {n: m for n, m in backbone.named_modules() if type(m) is nn.Dropout}
    with torch.no_grad():
        plain = backbone.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    with cpu_dropout(backbone) as switched:
        assert switched and backbone.config._attn_implementation == ATTENTION_NAME
        swapped = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)}
        assert swapped.keys() == dropouts.keys()
        assert all(type(m) is MaskDropout and m.p == dropouts[n].p for n, m in swapped.items())
        with torch.no_grad():
            same = backbone.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
            torch.manual_seed(1)
            dropped = backbone.train()(input_ids=ids, attention_mask=mask).last_hidden_state
            torch.manual_seed(1)
            again = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(same[mask.bool()], plain[mask.bool()], atol=1e-5)
    assert torch.equal(dropped, again) and not torch.allclose(dropped, plain)
    assert backbone.config._attn_implementation == before
    assert {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)} == dropouts


def test_cpu_dropout_leaves_the_attention_when_no_attention_layer_drops(
    tiny_m3_path: Path,
) -> None:
    backbone = M3Model.from_pretrained(tiny_m3_path).backbone
    set_attention_dropout(backbone, 0.0)
    with cpu_dropout(backbone) as switched:
        assert not switched and backbone.config._attn_implementation == "sdpa"
        assert any(type(m) is MaskDropout for m in backbone.modules())  # hidden states still
    assert not any(type(m) is MaskDropout for m in backbone.modules())


def test_training_on_cpu_runs_inside_cpu_dropout_and_saves_the_model_s_own_attention(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m3kit.finetune import training_loop

    entered: list[bool] = []
    real = training_loop.cpu_dropout

    def spy(backbone: nn.Module):  # type: ignore[no-untyped-def]
        entered.append(True)
        return real(backbone)

    monkeypatch.setattr(training_loop, "cpu_dropout", spy)
    result = M3Finetuner(tiny_finetune_config(tiny_m3_path, tmp_path / "ft")).fit(toy_examples)
    assert entered == [True]
    saved = (result.path / "config.json").read_text()
    assert ATTENTION_NAME not in saved
    assert json.loads(saved)["attention_probs_dropout_prob"] == 0.1
    reloaded = M3Model.from_pretrained(result.path).backbone
    assert reloaded.config._attn_implementation == "sdpa"


def test_cpu_dropout_restores_the_backbone_when_training_fails(tiny_m3_path: Path) -> None:
    backbone = M3Model.from_pretrained(tiny_m3_path).backbone
    dropouts = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)}
    with pytest.raises(RuntimeError, match="stopped"), cpu_dropout(backbone):
        raise RuntimeError("stopped")
    assert backbone.config._attn_implementation == "sdpa"
    assert {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)} == dropouts
