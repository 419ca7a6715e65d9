"""ONNX Runtime forward pass: all M3 heads in one exported graph, cached and verified.

:func:`load_onnx_runner` exports an :class:`~m3kit.model.M3Model` (any M3 or dense-only
checkpoint) with ``torch.onnx.export`` into one graph whose outputs are the last hidden states,
the pooled dense vector, the per-token sparse weights and the normalised ColBERT vectors
(dynamic batch and length), lets ONNX Runtime's transformer optimiser fuse attention and layer
norm, and optionally quantises the weights to int8 with ONNX Runtime's dynamic per-channel
quantiser. The result is cached in a folder keyed by a digest of the model's weights, its
pooling, heads, backbone config and backbone class (with the file of a checkpoint's own
modelling code), the export settings and the versions of the code that traced and runs it
(torch, transformers, ONNX Runtime); every file's sha256 is recorded
in ``manifest.json`` and checked at load, so a corrupt, truncated or stale export is rebuilt,
never used; several processes may export the same model at once (the folders' handling,
and the removal of builds a killed process left, is :mod:`m3kit.backends.onnx_cache`). The
exported model must hold float32 weights (:func:`check_exportable`). The weights digest is
:func:`~m3kit.weights.model_weights_digest`: the checkpoint files' digest (the one the
collection fingerprint uses, so the files are read once at load) for a model loaded by
``M3Encoder.from_pretrained`` and unchanged since, else a digest of its tensors (a model built
in memory or changed after loading gets its own export).

Why a hand-written ``torch.onnx.export`` call rather than optimum's exporter: optimum exports a
transformers backbone only; the M3 heads (sparse ReLU-linear, ColBERT linear + normalisation,
masking) would then run outside the graph in numpy. Exporting the one ``M3Model`` module that
the torch path and the trainer already run keeps the maths in one place and gives a single
session with all outputs. Fusion and quantisation use ONNX Runtime's own tooling.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import platform
import shutil
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from m3kit.backends.onnx_cache import (
    MANIFEST,
    building_folder,
    publish,
    sha256_file,
    share_like_new_files,
    verified_export,
)
from m3kit.backends.onnx_graph import check_exportable, graph_digest
from m3kit.backends.ort_logging import ort_logging_kept, shape_inference_notice_dropped
from m3kit.errors import MissingExtraError
from m3kit.machine import read_cpu_flags
from m3kit.model import M3Model
from m3kit.weights import model_weights_digest

__all__ = [
    "EXPORT_VERSION",
    "Int8Scheme",
    "OnnxRunner",
    "OnnxVariant",
    "check_exportable",
    "default_cache_dir",
    "int8_scheme",
    "load_onnx_runner",
]

logger = logging.getLogger(__name__)

# Bump when the exported graph changes (inputs, outputs, maths): old cache entries then miss.
EXPORT_VERSION = 1
#: Serialises torch.onnx.export in this process (:func:`_trace`).
_EXPORT_LOCK = threading.Lock()
_INPUTS = ("input_ids", "attention_mask")
_OUTPUTS = ("hidden", "dense", "sparse", "colbert")


class OnnxVariant(str, enum.Enum):
    """Which graph ONNX Runtime runs."""

    FP32 = "fp32"  # float32 weights, attention / layer norm fused by ORT's optimiser
    INT8 = "int8"  # the fp32 graph with int8 weights (dynamic, per-channel); lossy


#: x86 flags of an int8 dot-product instruction that accumulates without saturating.
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Int8Scheme:
    """How the ``int8`` variant quantises its MatMul weights for the CPU it is built on.

    Attributes:
        reduce_range: Weights on 7 bits instead of 8 (ONNX Runtime's ``reduce_range``).
        reason: Why, in words (logged and written into the export's manifest).
    """

    reduce_range: bool
    reason: str


def int8_scheme(flags: Iterable[str] | None, arch: str = "x86_64") -> Int8Scheme:
    """Pick the int8 weight range for a CPU from its flags (pure; ONNX Runtime's guidance).

    Without VNNI, ORT's x86 kernel multiplies uint8 activations by int8 weights with
    ``vpmaddubsw``, which adds two products into a saturating int16: 8-bit weights can
    overflow it (255 * 127 * 2 > 32767), 7-bit ones cannot. ``quantize_static``'s docstring
    recommends ``reduce_range=True`` there and 8-bit weights where VNNI (or Arm) accumulates in
    int32. Measured on an AVX2-only AMD EPYC (MiniLM real weights, dense cosine to fp32 of a
    text encoded alone): the least robust input (the empty text) 0.9786 with 8-bit weights,
    0.9816 with 7-bit; speed on the BGE-M3-sized model 1.90x vs 1.76x ONNX fp32.

    >>> int8_scheme({"avx2", "fma"}).reduce_range
    True
    >>> int8_scheme({"avx2", "avx512f", "avx512_vnni"}).reduce_range
    False
    >>> int8_scheme({"asimd"}, arch="aarch64").reduce_range
    False
    >>> int8_scheme(None).reduce_range   # unknown x86 CPU: the range that cannot saturate
    True
    """
    if arch.lower() in ("aarch64", "arm64"):
        return Int8Scheme(False, "Arm CPU: int8 dot products accumulate in int32")
    if flags is None:
        return Int8Scheme(True, "CPU flags unreadable: 7-bit weights, which cannot saturate")
    present = frozenset(flags)
    for flag in _VNNI_FLAGS:
        if flag in present:
            return Int8Scheme(False, f"CPU reports {flag}: int8 products accumulate in int32")
    return Int8Scheme(True, "CPU reports no VNNI: 7-bit weights keep vpmaddubsw from saturating")


def _this_cpu_int8_scheme() -> Int8Scheme:
    return int8_scheme(read_cpu_flags().flags, platform.machine() or "x86_64")


def default_cache_dir() -> Path:
    """``$M3KIT_CACHE/onnx`` or ``~/.cache/m3kit/onnx`` (read when called, not at import).

    A leading ``~`` in the variables is the home directory (as in ``HF_HOME``), not a folder
    named ``~`` under the working directory.
    """
    root = os.environ.get("M3KIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "m3kit"
    )
    return Path(root).expanduser() / "onnx"


class _Graph(nn.Module):
    """What gets exported: every head, always (one graph, four outputs)."""

    def __init__(self, model: M3Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        with_heads = self.model.heads is not None
        fwd = self.model(input_ids, attention_mask, sparse=with_heads, colbert=with_heads)
        outs = [fwd.hidden.float(), fwd.dense]
        if with_heads:
            assert fwd.sparse is not None and fwd.colbert is not None
            outs += [fwd.sparse, fwd.colbert]
        return tuple(outs)


@dataclass
class OnnxRunner:
    """An ONNX Runtime session over an exported M3 graph.

    Attributes:
        path: The ``model.onnx`` run.
        variant: fp32 or int8.
        digest: Cache key (weights digest + export settings).
        weights: The weights digest in the key (``"files-sha256:..."`` or
            ``"tensors-sha256:..."``, see :func:`~m3kit.weights.model_weights_digest`).
        pooling: The dense pooling the graph computes (``"cls"``, ``"mean"``, ``"max"``):
            fixed at export, whatever the model's ``pooling`` is set to later.
    """

    session: Any
    path: Path
    variant: OnnxVariant
    digest: str
    output_names: tuple[str, ...]
    weights: str
    pooling: str

    def check_pooling(self, pooling: str) -> None:
        """Refuse to run for a model whose pooling is no longer the one exported.

        Raises:
            ValueError: ``pooling`` is not the graph's (``model.pooling`` was set after the
                export): naming both, and how to load the model with the new pooling.
        """
        if pooling != self.pooling:
            raise ValueError(
                f"this encoder runs an ONNX graph exported with {self.pooling} pooling, and "
                f"its model.pooling now says {pooling}: the graph would still pool with "
                f"{self.pooling} under the new name. Load it again with that pooling "
                f"(M3Encoder.from_pretrained(path, backend='onnx', pooling='{pooling}')) "
                f"or set model.pooling back to {self.pooling!r}"
            )

    def run(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Forward one padded batch; float32 arrays named like :class:`~m3kit.model.M3Forward`."""
        values = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return {
            n: np.asarray(v, dtype=np.float32)
            for n, v in zip(self.output_names, values, strict=True)
        }


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingExtraError(
            "the ONNX backend needs onnxruntime: pip install 'm3kit[onnx]'"
        ) from e
    return onnxruntime


def _require_onnx() -> None:
    """Refuse an export without the ``onnx`` package, naming the extra.

    ONNX Runtime alone reads a cached export, but torch's exporter and the int8 quantiser
    need ``onnx``: without it the export failed partway with torch's "Module onnx is not
    installed!", which names no extra.
    """
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(
            "exporting a model to ONNX needs the onnx package as well as onnxruntime: "
            "pip install 'm3kit[onnx]'"
        ) from e


def _export(model: M3Model, out: Path, *, opset: int) -> tuple[str, ...]:
    graph = _Graph(model).eval()
    names = _OUTPUTS if model.heads is not None else _OUTPUTS[:2]
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # trace the padded path too
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "hidden": {0: "batch", 1: "tokens"},
        "dense": {0: "batch"},
        "sparse": {0: "batch", 1: "tokens"},
        "colbert": {0: "batch", 1: "tokens_minus_cls"},
    }
    backbone = model.backbone
    before = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    # Eager attention exports as the MatMul/Softmax pattern ORT's optimiser fuses into one
    # Attention op (measured on XLM-R / BERT graphs: SDPA's export fuses no attention).
    if before not in (None, "eager") and hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")  # type: ignore[operator]
    try:
        _trace(graph, ids, mask, out, names, axes, opset)
    finally:
        if before not in (None, "eager") and hasattr(backbone, "set_attn_implementation"):
            backbone.set_attn_implementation(before)  # type: ignore[operator]
    return names


def _trace(
    graph: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    out: Path,
    names: tuple[str, ...],
    axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    # torch's TorchScript exporter keeps process-wide state (GLOBALS.in_onnx_export): two
    # encoders loading in two threads at once failed with an AssertionError inside it
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow
        torch.onnx.export(
            graph,
            (ids, mask),
            str(out),
            input_names=list(_INPUTS),
            output_names=list(names),
            dynamic_axes={
                k: v for k, v in axes.items() if k in names or k.startswith(("in", "at"))
            },
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter handles transformers' masking code paths
            external_data=True,
        )


def _optimize(src: Path, dst: Path, model: M3Model) -> None:
    """ORT's transformer optimiser: fused attention / layer norm / GELU where it matches."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # The optimiser's symbolic shape inference copies the whole model, weights included, each
    # time a fusion asks for shapes, and keeps the copies: on a BGE-M3-sized graph (2.2 GB of
    # weights) the build peaked at 17.6 GB of RAM with it and 3.9 GB without, with the same
    # fusions (24 Attention, 48 SkipLayerNormalization, 24 BiasGelu); only two Reshape nodes it
    # would have proven useless stay in the graph.
    options.enable_shape_inference = False
    config = model.backbone.config
    with shape_inference_notice_dropped():  # its warning of the choice above, every export
        optimized = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)),
            opt_level=1,
            optimization_options=options,
        )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    logger.info("ONNX Runtime fused operators: %s", fused or "none")
    optimized.save_model_to_file(str(dst), use_external_data_format=True)


def _quantize(src: Path, dst: Path, scheme: Int8Scheme) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with ort_logging_kept():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,  # per output channel: far less loss than one scale per tensor
            reduce_range=scheme.reduce_range,
            # MatMul only (the fused Attention op keeps float32 Q/K/V projections): on MiniLM's
            # real weights, 82 SQuAD passages and questions, the least dense cosine to fp32 of
            # a non-empty text was 0.9916 this way against 0.983 with Attention quantised too
            op_types_to_quantize=["MatMul"],
            use_external_data_format=True,
            # the fused graph's contrib ops (Attention, SkipLayerNormalization) defeat ONNX
            # shape inference; every float tensor in this graph is float32
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )


def _build(
    model: M3Model,
    folder: Path,
    key: str,
    opset: int,
    weights: str,
    scheme: Int8Scheme | None,
) -> None:
    """Export, fuse and (with an int8 ``scheme``) quantise ``model`` into ``folder``."""
    variant = OnnxVariant.FP32 if scheme is None else OnnxVariant.INT8
    with building_folder(folder.parent) as tmp:
        raw = tmp / "raw" / "model.onnx"
        raw.parent.mkdir()
        names = _export(model, raw, opset=opset)
        fused = tmp / "fused" / "model.onnx"
        fused.parent.mkdir()
        _optimize(raw, fused, model)
        final = tmp / "final"
        final.mkdir()
        if scheme is not None:
            _quantize(fused, final / "model.onnx", scheme)
        else:
            for f in fused.parent.iterdir():
                shutil.move(str(f), final / f.name)
        share_like_new_files(final)  # onnx writes the weights owner-only
        files = {f.name: sha256_file(f) for f in sorted(final.iterdir())}
        manifest = {
            "key": key,
            "weights": weights,
            "graph": graph_digest(model),  # pooling, heads, backbone config
            "variant": variant.value,
            "int8_reduce_range": None if scheme is None else scheme.reduce_range,
            "int8_reason": None if scheme is None else scheme.reason,
            "outputs": list(names),
            "opset": opset,
            "export_version": EXPORT_VERSION,
            "torch": torch.__version__,
            "files": files,
        }
        (final / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        # atomic on one filesystem: a reader never sees half an export; another process's
        # export of the same key, published first, is kept
        publish(final, folder, key)


def load_onnx_runner(
    model: M3Model,
    *,
    variant: OnnxVariant | str = OnnxVariant.FP32,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    opset: int = 17,
) -> OnnxRunner:
    """Export (or reuse a verified cached export of) ``model`` and open an ORT session on it.

    Args:
        model: The loaded model (float32 weights, :func:`check_exportable`; not modified).
        variant: ``"fp32"`` or ``"int8"``.
        cache_dir: Where exports live (default :func:`default_cache_dir`); a leading ``~``
            is the home directory, a relative folder is taken from the working directory now.
        threads: ORT intra-op threads (default: ``torch.get_num_threads()``).
        opset: ONNX opset of the export.

    Raises:
        ValueError: The model's weights are not float32 (:func:`check_exportable`).
        MissingExtraError: onnxruntime is not installed, or ``onnx`` is not and there is no
            cached export to reuse.
    """
    ort = _import_ort()
    variant = OnnxVariant(variant)
    check_exportable(model)
    # the files' digest for a model unchanged since loading (what the collection fingerprint
    # reads anyway), else its tensors': a model changed in memory never gets a stale export
    weights = model_weights_digest(model)
    # the int8 weights depend on the CPU class (int8_scheme); fp32 exports do not
    scheme = _this_cpu_int8_scheme() if variant is OnnxVariant.INT8 else None
    settings = "" if scheme is None else f"|reduce_range{int(scheme.reduce_range)}"
    # the graph also depends on what the weights do not say: pooling (a load-time choice),
    # the heads, and the backbone's config (activation, norm epsilon, ...); and on the code
    # that traced it: torch and transformers (a modelling or masking fix changes the graph)
    import transformers

    key = hashlib.sha256(
        f"{weights}|{graph_digest(model)}|{variant.value}{settings}|opset{opset}"
        f"|v{EXPORT_VERSION}|ort{ort.__version__}|torch{torch.__version__}"
        f"|transformers{transformers.__version__}".encode()
    ).hexdigest()[:32]
    if scheme is not None:
        logger.info("int8 weights: reduce_range=%s (%s)", scheme.reduce_range, scheme.reason)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    # absolute: the encoder reports it (onnx_cache_dir), and the adapters copy it into fields
    # that may be loaded in another working directory
    folder = folder.absolute() / key
    if verified_export(folder, key):
        logger.info("ONNX export reused from %s", folder)
    else:
        _require_onnx()  # before any export work: torch's exporter and the int8 step need it
        logger.info("exporting the model to ONNX (%s) into %s", variant.value, folder)
        _build(model, folder, key, opset, weights, scheme)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    return OnnxRunner(
        session,
        folder / "model.onnx",
        variant,
        key,
        tuple(manifest["outputs"]),
        weights,
        model.pooling.value,
    )
