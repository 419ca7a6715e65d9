"""What decides an ONNX export's graph besides the weights (:func:`graph_digest`, part of the
export's cache key), and whether a model can be exported at all (:func:`check_exportable`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from m3kit.model import M3Model

__all__ = ["check_exportable", "code_id", "graph_digest"]


def graph_digest(model: M3Model) -> str:
    """Digest of what decides the exported graph besides the weights: the pooling, the heads,
    the backbone's full config (``config.json`` as loaded) and its code (:func:`code_id`)."""
    heads = model.heads
    colbert = None if heads is None else heads.colbert_dim
    backbone: Any = model.backbone
    # the config as loaded, less where it was loaded from and the transformers version that
    # wrote it: the same model copied to another folder reuses its export
    config = backbone.config.to_dict()
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    text = json.dumps(config, sort_keys=True, default=str)
    blob = (
        f"{model.pooling.value}|heads:{heads is not None}|colbert:{colbert}|{text}"
        f"|code:{code_id(backbone)}"
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def code_id(backbone: nn.Module) -> str:
    """The backbone's class, with the digest of a checkpoint's own modelling code
    (:func:`~m3kit.fingerprint.own_code_id`: loaded with ``trust_remote_code=True``).

    The same weights and ``config.json`` build transformers' class without
    ``trust_remote_code`` and the checkpoint's own with it: two graphs. The code of a
    transformers class is keyed by the transformers version (in the export key); a
    checkpoint's code file may be edited in place.
    """
    from m3kit.fingerprint import own_code_id

    cls = type(backbone)
    return own_code_id(backbone) or f"{cls.__module__}.{cls.__qualname__}"


def check_exportable(model: M3Model) -> None:
    """Refuse a model whose weights are not float32 (the export's ONNX Runtime graph is).

    A model cast in place by an encoder with ``dtype="bf16"`` (what ``"auto"`` picks on CPUs
    with AVX-512 BF16 or AMX) or ``"fp16"``, or quantised by torch's int8, traces into a graph
    ONNX Runtime's CPU kernels cannot run, after the whole export.

    Raises:
        ValueError: Naming what the model holds, and how to get float32 weights.
    """
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    quantised = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    if not dtypes and not quantised:
        return
    held = ", ".join(dtypes) + (" weights" if dtypes else "")
    if quantised:
        held += (" and " if dtypes else "") + "torch int8 (quantised) layers"
    raise ValueError(
        f"backend='onnx' exports float32 models; this one holds {held} (an encoder with "
        "dtype 'bf16', 'fp16' or 'int8' changes the model it is given in place, and 'auto' "
        "picks bf16 on CPUs with native bf16). Load it again for ONNX, e.g. "
        "M3Encoder.from_pretrained(path, backend='onnx') (dtype 'int8' there quantises the "
        "export), or give a float32 model"
    )
