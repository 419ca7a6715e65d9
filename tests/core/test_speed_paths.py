"""Fast paths of the encoder: precisions stay close to fp32, batch planning, one forward per batch.

No timing here: speed is measured by ``benchmarks/encode.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import m3kit.precision
from m3kit import M3Encoder
from m3kit.encoder import plan_batches
from m3kit.precision import Bf16Support, Precision, precision_from, resolve_precision

TEXTS = [
    "Berlin is the capital and largest city of Germany by both area and population.",
    "What is the capital of Germany?",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Late chunking embeds the whole document once and pools token vectors per chunk. " * 5,
    "short",
    "Qdrant stores named dense vectors, sparse vectors and multivectors for late interaction.",
    "",
    "Emoji 🙂 and symbols ★ ✓ → mixed with 中文 and English.",
]

# dtype -> least dense cosine to fp32 (int8 is lossy by design; tiny weights quantise well)
FAST_PATHS = {"bf16": 0.999, "bf16-autocast": 0.999, "int8": 0.99}


@pytest.fixture(scope="module")
def fp32_out(tiny_encoder: M3Encoder):  # type: ignore[no-untyped-def]
    return tiny_encoder.encode(TEXTS)


@pytest.mark.parametrize("dtype", sorted(FAST_PATHS))
def test_fast_path_close_to_fp32(dtype: str, tiny_m3_path: Path, fp32_out) -> None:  # type: ignore[no-untyped-def]
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype=dtype, device="cpu", backend="torch")
    assert enc.precision is Precision(dtype)
    out = enc.encode(TEXTS)

    assert out.dense.dtype == np.float32 and out.dense.shape == fp32_out.dense.shape
    cosine = np.sum(out.dense * fp32_out.dense, axis=1)
    assert cosine.min() >= FAST_PATHS[dtype], cosine

    for mine, ref in zip(out.colbert, fp32_out.colbert, strict=True):
        assert mine.dtype == np.float32 and mine.shape == ref.shape
        if len(ref):
            assert np.sum(mine * ref, axis=1).min() >= 0.99

    for sv, ref_sv in zip(out.sparse, fp32_out.sparse, strict=True):
        a, b = sv.to_dict(), ref_sv.to_dict()
        # rounding may push a weight near zero across the ReLU; every weight that both keep is
        # close, and the strongest term of the reference survives
        for token in a.keys() & b.keys():
            assert abs(a[token] - b[token]) <= 0.02
        if b:
            assert max(b, key=b.__getitem__) in a


def test_bf16_casts_weights_and_autocast_keeps_them(tiny_m3_path: Path) -> None:
    bf16 = M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16", device="cpu")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    autocast = M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16-autocast", device="cpu")
    assert {p.dtype for p in autocast.model.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (f, t)
        for f in ("bf16", "int8")
        for t in ("fp32", "bf16-autocast", "int8")
        if (f, t) != ("int8", "int8")
    ],
)
def test_a_model_another_encoder_cast_is_refused_where_float32_is_promised(
    tiny_m3_path: Path, first: str, then: str
) -> None:
    """An encoder casts the model it is given in place (bf16) or quantises it (int8): a second
    encoder given that model with ``precision="fp32"`` (or bf16-autocast, or int8) ran the
    cast weights while reporting, and fingerprinting, the precision asked for (dense 2.8e-3 off
    true fp32 on the tiny model). It is refused naming what the model holds, as
    ``backend="onnx"`` refuses it (int8 again on a quantised model changes nothing: kept)."""
    from m3kit.checkpoint import resolve_checkpoint
    from m3kit.encoder_inputs import load_tokenizer
    from m3kit.model import M3Model

    info = resolve_checkpoint(tiny_m3_path)
    tokenizer = load_tokenizer(info, trust_remote_code=False)
    model = M3Model.from_checkpoint(info)
    M3Encoder(model, tokenizer, precision=first, device="cpu", backend="torch")
    held = "torch.bfloat16" if first == "bf16" else "torch int8"
    with pytest.raises(ValueError, match=rf"precision {then!r} needs float32 weights.*{held}"):
        M3Encoder(model, tokenizer, precision=then, device="cpu", backend="torch")


def test_int8_quantises_backbone_linears_only(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="int8", device="cpu", backend="torch")
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert any(isinstance(m, dynamic) for m in enc.model.backbone.modules())
    assert not any(type(m) is torch.nn.Linear for m in enc.model.backbone.modules())
    assert enc.model.heads is not None
    assert type(enc.model.heads.colbert_linear) is torch.nn.Linear  # heads stay float32


def test_int8_asked_for_gets_onnx_runtimes(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Torch's dynamic int8 fails the quality guard, ONNX Runtime's passes: ``dtype="int8"``
    runs ONNX's unless torch is named; without onnxruntime the error says both ways."""
    import importlib.util

    from m3kit.backends import EncoderBackend, resolve_backend
    from m3kit.errors import MissingExtraError

    cpu = torch.device("cpu")
    assert resolve_backend(EncoderBackend.AUTO, Precision.INT8, cpu) is EncoderBackend.ONNX
    assert resolve_backend(EncoderBackend.AUTO, Precision.FP32, cpu) is EncoderBackend.TORCH
    assert resolve_backend(EncoderBackend.TORCH, Precision.INT8, cpu) is EncoderBackend.TORCH
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="int8", onnx_cache_dir=tmp_path)
    assert enc.backend is EncoderBackend.ONNX and enc.precision is Precision.INT8
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(MissingExtraError, match=r"m3kit\[onnx\].*backend='torch'"):
        resolve_backend(EncoderBackend.AUTO, Precision.INT8, cpu)


def test_fp32_is_exactly_the_reference_path(tiny_m3_path: Path, fp32_out) -> None:  # type: ignore[no-untyped-def]
    again = M3Encoder.from_pretrained(tiny_m3_path, dtype=torch.float32).encode(TEXTS)
    np.testing.assert_array_equal(again.dense, fp32_out.dense)


# -- precision resolution -------------------------------------------------------------------
@pytest.mark.parametrize(("native", "expected"), [(True, Precision.BF16), (False, Precision.FP32)])
def test_auto_precision_follows_cpu_bf16_support(
    native: bool, expected: Precision, monkeypatch: pytest.MonkeyPatch, tiny_m3_path: Path
) -> None:
    probe = Bf16Support(native, "test probe")
    monkeypatch.setattr(m3kit.precision, "probe_bf16", lambda device: probe)
    assert resolve_precision(Precision.AUTO, torch.device("cpu")) is expected
    enc = M3Encoder.from_pretrained(tiny_m3_path, device="cpu")  # dtype defaults to auto
    assert enc.precision is expected
    wanted = torch.bfloat16 if native else torch.float32
    assert {p.dtype for p in enc.model.parameters()} == {wanted}


@pytest.mark.parametrize(
    ("capability", "expected"), [((8, 0), Precision.BF16), ((7, 5), Precision.FP16)]
)
def test_auto_precision_on_gpu(
    capability: tuple[int, int], expected: Precision, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "gpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capability)
    assert resolve_precision(Precision.AUTO, torch.device("cuda")) is expected


def test_explicit_precisions_are_kept_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    emulated = Bf16Support(False, "test probe")
    monkeypatch.setattr(m3kit.precision, "probe_bf16", lambda device: emulated)
    assert resolve_precision(Precision.BF16, cpu) is Precision.BF16  # emulated, but honoured
    assert resolve_precision(Precision.FP32, cpu) is Precision.FP32
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision(Precision.FP16, cpu)
    with pytest.raises(ValueError, match="int8 .* CPU only"):
        resolve_precision(Precision.INT8, torch.device("cuda"))


def test_dtype_spellings() -> None:
    assert precision_from(None) is Precision.AUTO
    assert precision_from("bfloat16") is Precision.BF16
    assert precision_from(torch.float16) is Precision.FP16
    assert precision_from("BF16-AUTOCAST") is Precision.BF16_AUTOCAST
    assert precision_from(Precision.INT8) is Precision.INT8
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*'bf16-autocast'"):
        precision_from("fp8")
    with pytest.raises(ValueError, match="unsupported dtype"):
        precision_from(torch.int32)


def test_load_log_names_the_chosen_defaults(
    tiny_m3_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="m3kit.encoder"):
        M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16", batch_size=7, max_batch_tokens=999)
    line = next(r.getMessage() for r in caplog.records if r.name == "m3kit.encoder")
    assert "precision=bf16 (weights cast to bfloat16" in line
    assert "attention=sdpa" in line
    assert "batch_size=7, max_batch_tokens=999" in line
    assert f"torch threads={torch.get_num_threads()}" in line


# -- batch planning ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=2, max_value=600), max_size=60),
    batch_size=st.integers(min_value=1, max_value=16),
    max_batch_tokens=st.integers(min_value=1, max_value=4000),
)
def test_plan_respects_limits_and_covers_every_text(
    lengths: list[int], batch_size: int, max_batch_tokens: int
) -> None:
    batches = plan_batches(lengths, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        padded = max(lengths[i] for i in batch) * len(batch)
        assert padded <= max_batch_tokens or len(batch) == 1  # an over-long text runs alone
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)  # longest first: little padding


def test_outputs_in_input_order_across_batches(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", batch_size=3, max_batch_tokens=64)
    together = enc.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = enc.encode([text])
        np.testing.assert_allclose(together.dense[i], alone.dense[0], atol=1e-5)
        np.testing.assert_allclose(together.colbert[i], alone.colbert[0], atol=1e-5)
        assert together.sparse[i].indices.tolist() == alone.sparse[0].indices.tolist()
        np.testing.assert_allclose(together.sparse[i].values, alone.sparse[0].values, atol=1e-5)
    assert together.token_counts == tuple(len(t.input_ids) for t in enc.tokenize(TEXTS))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_one_forward_per_planned_batch(
    dtype: str, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype=dtype, batch_size=3, max_batch_tokens=64)
    shapes: list[tuple[int, int]] = []
    original = enc.model.forward

    def spy(input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw):  # type: ignore[no-untyped-def]
        assert not torch.is_grad_enabled()  # inference mode: no autograd bookkeeping
        shapes.append((int(input_ids.shape[0]), int(input_ids.shape[1])))
        return original(input_ids, attention_mask, **kw)

    monkeypatch.setattr(enc.model, "forward", spy)
    lengths = [len(t.input_ids) for t in enc.tokenize(TEXTS)]
    planned = plan_batches(lengths, batch_size=3, max_batch_tokens=64)
    enc.encode(TEXTS)
    assert len(shapes) == len(planned) > 1
    assert [rows for rows, _ in shapes] == [len(b) for b in planned]
    assert [width for _, width in shapes] == [max(lengths[i] for i in b) for b in planned]


def test_fp16_mean_pooling_sums_in_float32() -> None:
    """A long fp16 sequence's masked sum overflows float16 (65504): mean pooling adds in
    float32, as FlagEmbedding's mean pooling does, instead of returning NaN dense vectors."""
    from torch import nn

    from m3kit.checkpoint import Pooling
    from m3kit.model import M3Model

    model = M3Model(nn.Identity(), Pooling.MEAN, None)
    hidden = torch.full((2, 8192, 4), 12.0, dtype=torch.float16)
    hidden[:, :, 1] = -3.0
    mask = torch.ones(2, 8192, dtype=torch.long)
    mask[1, 4096:] = 0  # padding does not count
    pooled = model.pool(hidden, mask)
    expected = torch.nn.functional.normalize(torch.tensor([12.0, -3.0, 12.0, 12.0]), dim=0)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, expected.expand(2, 4), atol=1e-4, rtol=0)
