"""Whether an encoder still is what its fingerprint named: a cheap check run on every use.

An encoder's fingerprint (:func:`~m3kit.fingerprint.encoder_fingerprint`) is computed once and
cached, but what it names can change in memory afterwards: ``encoder.model`` trained in place
(an optimiser step), given other weights (``load_state_dict``, ``copy_``), cast, its parameters
replaced, or a setting of the encoder reassigned (``max_length``, ``query_instruction``,
``tokenizer``, ``model.pooling``). :class:`EncoderWatch` records, when the fingerprint is taken:

- the encoder's settings that are part of the fingerprint, and the model and tokenizer objects;
- for every parameter and buffer of the model: the tensor object, its storage address, dtype,
  shape and torch's in-place version counter (bumped by every in-place change: optimiser steps
  with ``foreach`` or per-parameter updates, ``copy_``, ``load_state_dict``, ``no_grad`` edits),
  and the id of every packed (quantised) weight;
- a strided sample of every tensor's values (:data:`SAMPLE` per tensor), bytes compared, which
  catches the changes the version counter misses: fused optimisers (``AdamW(fused=True)``) and
  edits through ``.data``. Any training step changes sampled values; an edit of a few values
  through ``.data`` may fall between samples.

:meth:`EncoderWatch.change` compares those with the encoder as it is now, without reading the
weights whole: 0.25 ms on all-MiniLM-L6-v2 (103 tensors) with one CPU thread, against 9.9 ms
to encode one query on that thread (see the README's "Changes").
"""

from __future__ import annotations

from typing import Any

__all__ = ["SAMPLE", "EncoderWatch", "encoder_settings"]

#: Values sampled (strided) per tensor by :class:`EncoderWatch`.
SAMPLE = 64

_BITS = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def encoder_settings(encoder: Any) -> dict[str, Any]:
    """The encoder's settings that its fingerprint names (beyond the weights), as now.

    The tokenizer's length is there so that tokens added in place (``add_tokens``) count.
    """
    model, tokenizer = encoder.model, encoder.tokenizer
    pooling = getattr(model, "pooling", None)
    try:
        vocab: int | None = len(tokenizer)
    except TypeError:
        vocab = None
    return {
        "model": id(model),
        "tokenizer": id(tokenizer),
        "tokenizer length": vocab,
        "max_length": getattr(encoder, "max_length", None),
        "query_instruction": getattr(encoder, "query_instruction", None),
        "pooling": str(getattr(pooling, "value", pooling)),
    }


class EncoderWatch:
    """What an encoder's fingerprint depends on, recorded when it was taken (see the module).

    It holds views of the model's tensors (a strided sample of each, read again by every check),
    so the storages the model had then stay alive as long as the watch does.
    """

    def __init__(self, encoder: Any, *, weights: bool = True) -> None:
        """Record ``encoder`` as it is now.

        Args:
            encoder: The encoder.
            weights: Watch its model's weights too (not when another runtime holds its own
                copy of them, as ONNX Runtime does).
        """
        self.settings = encoder_settings(encoder)
        self.weights = weights
        self.state = _state(encoder.model) if weights else ()
        self.named, tensors = _named_keys(encoder.model) if weights else ({}, {})
        self._views = _sample_views(tensors)
        self.samples = _read(self._views)

    def change(self, encoder: Any) -> str | None:
        """What changed in ``encoder`` since it was recorded (one phrase), or ``None``."""
        settings = encoder_settings(encoder)
        if settings != self.settings:
            names = [k for k in settings if settings[k] != self.settings.get(k)]
            return f"its {', '.join(names)} changed (was reassigned or edited)"
        return self.weights_change(encoder.model)

    def weights_change(self, model: Any) -> str | None:
        """What changed in ``model``'s weights since they were recorded, or ``None``."""
        if not self.weights:
            return None
        if _state(model) != self.state:
            return _describe(self.named, *_named_keys(model))
        # the same tensor objects on the same storages: the views read their values now
        for key, values in _read(self._views).items():
            if not _same_bytes(values, self.samples.get(key)):
                return (
                    f"the values of its {key[1]} weights changed without torch's in-place "
                    "counter seeing it (a fused optimiser step, or an edit through .data)"
                )
        return None


def _state(model: Any) -> tuple[int, ...]:
    """Ids of every module, tensor and packed weight of ``model``, with each tensor's storage
    address and in-place version: one walk, no names (the per-use check)."""
    out: list[int] = []
    add = out.append
    stack = [model]
    while stack:
        module = stack.pop()
        add(id(module))
        for owned in (module._parameters, module._buffers):
            for t in owned.values():
                if t is not None:
                    add(id(t))
                    add(t.data_ptr())
                    add(t._version)
        packed = module.__dict__.get("_packed_params")  # a quantised layer's packed weights
        if packed is not None:
            add(id(packed))
        stack.extend(child for child in module._modules.values() if child is not None)
    return tuple(out)


# (name, id, storage address, version) per tensor; (name, id) per packed (quantised) weight
_Key = tuple[Any, ...]


def _named_keys(model: Any) -> tuple[dict[str, _Key], dict[str, Any]]:
    """The keys of every parameter, buffer, packed weight and module of ``model``, and its
    tensors, by name (what a change message names)."""
    keys: dict[str, _Key] = {}
    tensors: dict[str, Any] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        keys[f"module {prefix or '(root)'}"] = (id(module),)
        for kind, owned in (("parameter", module._parameters), ("buffer", module._buffers)):
            for name, t in owned.items():
                if t is not None:
                    keys[f"{kind} {dot}{name}"] = (id(t), t.data_ptr(), t._version)
                    tensors[f"{kind} {dot}{name}"] = t
        packed = module.__dict__.get("_packed_params")
        if packed is not None:
            keys[f"packed weights {dot}_packed_params"] = (id(packed),)
    return keys, tensors


def _sample_views(tensors: dict[str, Any]) -> dict[tuple[str, str], list[Any]]:
    """Strided views (:data:`SAMPLE` values) of every tensor, grouped per (device, dtype)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    seen: set[int] = set()
    for t in tensors.values():
        if id(t) in seen or t.device.type == "meta" or t.numel() == 0:
            continue
        if t.is_quantized or t.is_sparse or not t.is_contiguous():
            continue
        seen.add(id(t))
        flat = t.detach().view(-1)
        groups.setdefault((str(t.device), str(t.dtype)), []).append(
            flat[:: max(1, flat.numel() // SAMPLE)]
        )
    return groups


def _read(views: dict[tuple[str, str], list[Any]]) -> dict[tuple[str, str], Any]:
    """The sampled values now: one new tensor per (device, dtype)."""
    import torch

    return {key: torch.cat(group) for key, group in views.items()}


def _same_bytes(a: Any, b: Any) -> bool:
    """Equal bytes (NaN equals itself, -0.0 differs from 0.0: a change is a change)."""
    import torch

    if b is None or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.is_floating_point or a.dtype.is_complex:
        bits = getattr(torch, _BITS[a.element_size()]) if a.element_size() in _BITS else None
        if bits is None:
            return bool(torch.equal(a, b))
        return bool(torch.equal(a.view(bits), b.view(bits)))
    return bool(torch.equal(a, b))


def _describe(then: dict[str, _Key], now: dict[str, _Key], tensors: dict[str, Any]) -> str:
    """One phrase naming the first tensor (or module) that changed, and how many did."""
    changed = [n for n in now if then.get(n) != now[n]] + [n for n in then if n not in now]
    if not changed:  # a module moved within the tree
        return "its model's modules were rearranged"
    first = changed[0]
    old, new = then.get(first), now.get(first)
    if old is None:
        how = "was added"
    elif new is None:
        how = "was removed"
    elif old[0] != new[0]:
        how = "was replaced by another one"
    elif old[1] != new[1]:
        t = tensors[first]
        how = f"was given new storage (now {t.dtype} on {t.device}: moved, cast, or .data set)"
    else:
        how = "was changed in place (an optimiser step, copy_, load_state_dict...)"
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    return f"its model's {first} {how}{more}"
