"""ONNX Runtime backend: same outputs as torch fp32, int8 guarded, weights digested once
(the export cache's keys: test_onnx_export_keys.py).

No timing here: speed is measured by ``benchmarks/encode.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from m3kit import M3Encoder
from m3kit.backends import EncoderBackend, onnx_backend
from m3kit.late_chunking import LateChunker
from tests.core.onnx_outputs import TEXTS, _assert_outputs_close, _spy


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_m3_path: Path, onnx_cache: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="onnx", onnx_cache_dir=onnx_cache
    )


def test_onnx_equals_torch_fp32_on_tiny_m3(tiny_encoder: M3Encoder, tiny_onnx: M3Encoder) -> None:
    assert tiny_onnx.backend is EncoderBackend.ONNX
    for batch_size in (1, 3, 32):  # different paddings through the exported graph
        tiny_onnx.batch_size = batch_size
        _assert_outputs_close(tiny_encoder.encode(TEXTS), tiny_onnx.encode(TEXTS))
    q_torch = tiny_encoder.encode(TEXTS[:2], query=True)
    q_onnx = tiny_onnx.encode(TEXTS[:2], query=True)
    _assert_outputs_close(q_torch, q_onnx)


def test_onnx_equals_torch_on_minilm(minilm_path: Path, minilm_encoder: M3Encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    enc = M3Encoder.from_pretrained(
        minilm_path, dtype="fp32", backend="onnx", onnx_cache_dir=tmp_path
    )
    np.testing.assert_allclose(
        enc.encode(TEXTS).dense, minilm_encoder.encode(TEXTS).dense, atol=1e-4
    )


def test_int8_keeps_minilm_dense_cosine(
    minilm_path: Path, minilm_encoder: M3Encoder, tmp_path: Path
):  # type: ignore[no-untyped-def]
    enc = M3Encoder.from_pretrained(
        minilm_path, dtype="int8", backend="onnx", onnx_cache_dir=tmp_path
    )
    texts = [t for t in TEXTS if t]
    cos = (enc.encode(texts).dense * minilm_encoder.encode(texts).dense).sum(axis=1)
    # The quality guard on real weights (mean, as benchmarks/encode.py reports it); single
    # very short texts lose most (measured: "short" 0.990, a 13-token question 0.992).
    assert cos.mean() >= 0.99 and cos.min() >= 0.985, cos
    empty = (enc.encode([""]).dense * minilm_encoder.encode([""]).dense).sum()
    assert empty >= 0.98  # two special tokens only: the least robust input


def test_optimiser_fuses_attention_without_shape_inference(
    tiny_m3_path: Path,
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # shape inference copied the whole model per fusion (17.6 GB peak on a BGE-M3-sized graph):
    # it stays off, and attention is still fused into ORT's Attention op
    import onnx
    from onnxruntime.transformers import optimizer

    options = _spy(
        monkeypatch, optimizer, "optimize_model", lambda *a, **k: k["optimization_options"]
    )
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert enc._onnx is not None
    assert [o.enable_shape_inference for o in options] == [False]
    graph = onnx.load(str(enc._onnx.path), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    layers = tiny_encoder.model.backbone.config.num_hidden_layers
    assert ops.count("Attention") == layers and "Softmax" not in ops


def test_an_export_does_not_warn_of_the_shape_inference_it_turned_off(
    tiny_m3_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from m3kit.backends.ort_logging import SHAPE_INFERENCE_NOTICE

    with caplog.at_level(logging.WARNING):
        M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert SHAPE_INFERENCE_NOTICE not in caplog.text
    for name in ("fusion_skiplayernorm", "onnxruntime.transformers.fusion_skiplayernorm"):
        assert not logging.getLogger(name).filters  # removed after the export


@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_weight_range_follows_the_cpu(
    reduce_range: bool,
    tiny_m3_path: Path,
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a VNNI CPU gets 8-bit weights, one without gets 7-bit (int8_scheme): the choice reaches
    # ORT's quantiser, is written into the manifest and keys the cache, so an export made for
    # the other CPU class is never reused
    import onnxruntime.quantization as ort_quant

    seen = _spy(monkeypatch, ort_quant, "quantize_dynamic", lambda *a, **k: k["reduce_range"])
    folders = {}
    for forced in (reduce_range, not reduce_range):
        scheme = onnx_backend.Int8Scheme(forced, "forced by the test")
        monkeypatch.setattr(onnx_backend, "_this_cpu_int8_scheme", lambda s=scheme: s)
        enc = M3Encoder.from_pretrained(
            tiny_m3_path, dtype="int8", backend="onnx", onnx_cache_dir=tmp_path
        )
        assert enc._onnx is not None
        folders[forced] = enc._onnx.path.parent
        manifest = json.loads((folders[forced] / "manifest.json").read_text())
        assert manifest["int8_reduce_range"] is forced
        assert manifest["int8_reason"] == "forced by the test"
        cos = (enc.encode(TEXTS[:4]).dense * tiny_encoder.encode(TEXTS[:4]).dense).sum(axis=1)
        assert cos.min() > 0.9, cos
    assert seen == [reduce_range, not reduce_range]
    assert folders[True] != folders[False]


def test_late_chunking_runs_unchanged_on_onnx(
    tiny_encoder: M3Encoder, tiny_onnx: M3Encoder
) -> None:
    doc = [TEXTS[3] + " " + TEXTS[0]]
    a = LateChunker(tiny_encoder, chunk_size=16).chunk(doc)[0]
    b = LateChunker(tiny_onnx, chunk_size=16).chunk(doc)[0]
    assert [(c.start, c.end) for c in a] == [(c.start, c.end) for c in b]
    for ca, cb in zip(a, b, strict=True):
        np.testing.assert_allclose(ca.vectors.dense, cb.vectors.dense, atol=1e-4)
        np.testing.assert_allclose(ca.vectors.colbert[0], cb.vectors.colbert[0], atol=1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "bf16-autocast"])
def test_onnx_refuses_precisions_it_cannot_run(tiny_m3_path: Path, dtype: str) -> None:
    with pytest.raises(ValueError, match="backend='onnx' runs dtype 'fp32'"):
        M3Encoder.from_pretrained(tiny_m3_path, dtype=dtype, backend="onnx")


def test_onnx_encoder_has_the_torch_fingerprint(
    tiny_encoder: M3Encoder, tiny_onnx: M3Encoder
) -> None:
    # same weights: an ONNX encoder may write to a collection a torch encoder indexed
    from m3kit.fingerprint import encoder_fingerprint

    assert encoder_fingerprint(tiny_onnx).same_encoder(encoder_fingerprint(tiny_encoder))
    assert all(p.device.type == "meta" for p in tiny_onnx.model.parameters())  # released


def test_unknown_backend_is_an_error(tiny_m3_path: Path) -> None:
    with pytest.raises(ValueError, match="tensorrt"):
        M3Encoder.from_pretrained(tiny_m3_path, backend="tensorrt")


def _count_digests(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the weight files read and the tensor digests taken (m3kit.weights)."""
    from m3kit import weights

    counts = {"files": 0, "tensors": 0}
    real_file, real_tensors = weights._file_sha256, weights.tensors_sha256

    def file_spy(path):  # type: ignore[no-untyped-def]
        counts["files"] += 1
        return real_file(path)

    def tensors_spy(model):  # type: ignore[no-untyped-def]
        counts["tensors"] += 1
        return real_tensors(model)

    monkeypatch.setattr(weights, "_file_sha256", file_spy)
    monkeypatch.setattr(weights, "tensors_sha256", tensors_spy)
    return counts


def test_onnx_load_digests_the_weights_once(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from m3kit.fingerprint import encoder_fingerprint

    fresh = shutil.copytree(tiny_m3_path, tmp_path / "model")  # no digest cached for it yet
    counts = _count_digests(monkeypatch)
    enc = M3Encoder.from_pretrained(fresh, backend="onnx", onnx_cache_dir=tmp_path / "cache")
    weights = encoder_fingerprint(enc).weights
    # model.safetensors + the two head files, each read once; the tensors never digested
    assert counts == {"files": 3, "tensors": 0}
    assert enc._onnx is not None and enc._onnx.weights == weights
    assert weights.startswith("files-sha256:")


def test_onnx_model_built_in_memory_digests_its_tensors_once(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit.checkpoint import resolve_checkpoint
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.model import M3Model

    torch_enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    model = M3Model.from_checkpoint(resolve_checkpoint(tiny_m3_path))  # not via from_pretrained
    counts = _count_digests(monkeypatch)
    enc = M3Encoder(model, torch_enc.tokenizer, backend="onnx", onnx_cache_dir=tmp_path)
    assert counts == {"files": 0, "tensors": 1}  # the export's digest is the fingerprint's
    assert enc._onnx is not None and enc._onnx.weights.startswith("tensors-sha256:")
    assert encoder_fingerprint(enc).weights == enc._onnx.weights
    _assert_outputs_close(torch_enc.encode(TEXTS), enc.encode(TEXTS))


def test_a_loaded_model_wrapped_for_torch_and_onnx_is_one_encoder_left_in_its_mode(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A model from ``from_pretrained`` given to ``M3Encoder(..., backend="onnx")`` had the
    checkpoint files' digest while ``backend="torch"`` gave its tensors' (a collection one
    wrote refused the other), and the export left a training model in eval mode."""
    from m3kit.fingerprint import encoder_fingerprint

    loaded = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", backend="torch")
    as_torch = M3Encoder(loaded.model, loaded.tokenizer, backend="torch", precision="fp32")
    loaded.model.train()
    as_onnx = M3Encoder(loaded.model, loaded.tokenizer, backend="onnx", onnx_cache_dir=tmp_path)
    assert loaded.model.training and loaded.model.backbone.training
    loaded.model.eval()
    assert encoder_fingerprint(as_onnx).same_encoder(encoder_fingerprint(as_torch))
    _assert_outputs_close(as_torch.encode(TEXTS), as_onnx.encode(TEXTS))


def test_an_onnx_cache_folder_with_the_torch_backend_is_an_error(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="onnx_cache_dir is for backend='onnx'"):
        M3Encoder.from_pretrained(tiny_m3_path, backend="torch", onnx_cache_dir=tmp_path)
    assert M3Encoder.from_pretrained(tiny_m3_path, backend="torch").onnx_cache_dir is None


def test_onnxruntime_without_onnx_names_the_extra_before_exporting(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export needs the onnx package as well as onnxruntime (the onnx extra has both):
    without it the error names the extra before any export work, and leaves no cache files;
    a verified cached export still loads without it (ONNX Runtime alone reads it)."""
    import sys

    from m3kit.errors import MissingExtraError

    cache = tmp_path / "cache"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
        m.setattr(onnx_backend, "_export", _must_not_run)
        with pytest.raises(MissingExtraError, match=r"needs the onnx package.*m3kit\[onnx\]"):
            M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())
    built = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=cache)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnx", None)
        m.setattr(onnx_backend, "_export", _must_not_run)
        again = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=cache)
    np.testing.assert_array_equal(again.encode(["x"]).dense, built.encode(["x"]).dense)


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the export started although onnx is missing")


def test_a_pooling_set_after_the_export_is_refused_not_ignored(
    tiny_m3_path: Path, onnx_cache: Path
) -> None:
    """The exported graph pools as it was built: ``model.pooling`` set afterwards was ignored
    (CLS vectors) while the encoder's fingerprint named the new pooling, so a collection
    recorded mean pooling over CLS-pooled vectors. Encoding is now refused, naming both."""
    from m3kit.checkpoint import Pooling

    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=onnx_cache)
    enc.encode(TEXTS[:2])
    enc.model.pooling = Pooling.MEAN
    with pytest.raises(ValueError, match="exported with cls pooling.*now says mean"):
        enc.encode(TEXTS[:2])
    with pytest.raises(ValueError, match="exported with cls pooling"):
        enc.token_states([[0, 5, 2]])
    mean = M3Encoder.from_pretrained(
        tiny_m3_path, backend="onnx", onnx_cache_dir=onnx_cache, pooling="mean"
    )
    want = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", pooling="mean")
    _assert_outputs_close(want.encode(TEXTS), mean.encode(TEXTS))


@pytest.mark.parametrize("given", ["env", "argument"])
def test_a_cache_folder_under_the_home_directory_is_found_there(
    given: str, tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``M3KIT_CACHE=~/m3c`` (a literal ``~``, as a Dockerfile ``ENV`` or a systemd unit
    gives it) or ``onnx_cache_dir="~/m3c"`` exported into a folder named ``~`` under the
    working directory: a new, cwd-dependent cache for each place a process started. The
    ``~`` now means the home directory, as in ``HF_HOME``."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    kwargs: dict[str, str] = {}
    if given == "env":
        monkeypatch.setenv("M3KIT_CACHE", "~/m3c")
    else:
        kwargs["onnx_cache_dir"] = "~/m3c/onnx"
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", **kwargs)  # type: ignore[arg-type]
    assert enc.onnx_cache_dir == home / "m3c" / "onnx"
    assert not (cwd / "~").exists()
    if given == "argument":  # what worker processes are given
        from m3kit.distributed import EncoderSpec

        assert EncoderSpec.of(enc).onnx_cache_dir == str(home / "m3c" / "onnx")


def test_onnx_runtime_takes_torchs_threads_when_loaded(
    tiny_m3_path: Path, onnx_cache: Path
) -> None:
    """What the README says of threads: ONNX Runtime's intra-op threads are torch's when the
    encoder is loaded, and stay so (an ORT session cannot change them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=onnx_cache)
        assert enc._onnx is not None
        options = enc._onnx.session.get_session_options()
        assert options.intra_op_num_threads == 1
        torch.set_num_threads(2)
        assert enc._onnx.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def test_a_relative_cache_folder_is_reported_absolute(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``onnx_cache_dir="rel"`` gave ``encoder.onnx_cache_dir == Path("rel")``, which the
    adapters' ``from_encoder`` copy into their fields: serialised and loaded in another
    working directory (a worker, a pipeline cache), they exported the model again elsewhere.
    The folder is now the absolute one the export is in."""
    monkeypatch.chdir(tmp_path)
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir="rel")
    assert enc.onnx_cache_dir == tmp_path / "rel"
    assert enc._onnx is not None and enc._onnx.path.is_absolute()
