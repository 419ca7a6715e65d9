"""Digests of a model's weights, computed once: of its checkpoint files, or of its tensors.

Two things key on a model's weights: the collection fingerprint
(:func:`~m3kit.fingerprint.encoder_fingerprint`, which digests the checkpoint's weight files)
and the ONNX export cache (:mod:`m3kit.backends.onnx_backend`). Reading 2.2 GB twice at load
is wasted when the model in memory is exactly what the files hold, so
:func:`model_weights_digest` keys such a model by the file digest (:func:`weights_digest`,
cached per file identity: path, inode, size, mtime and ctime) and falls back to hashing the tensors
(:func:`tensors_sha256`) for a model built in memory or changed after loading.

"Unchanged since loading" is checked without reading every byte: :func:`remember_loaded`
records, per tensor, the tensor object, its storage address and torch's in-place version
counter (bumped by every in-place change: optimiser steps, ``load_state_dict``,
``torch.no_grad()`` edits), plus a digest of a strided sample of its values (about 4096 per
tensor), which also catches changes made through ``.data`` (invisible to the version counter)
that touch more than a few values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import weakref
from pathlib import Path
from typing import Any

__all__ = [
    "model_weights_digest",
    "remember_loaded",
    "tensors_sha256",
    "weights_digest",
]

logger = logging.getLogger(__name__)

_READ_BLOCK = 8 << 20
_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SAMPLE = 4096  # values sampled per tensor by the "unchanged since loading" check

_lock = threading.Lock()
_FilesKey = tuple[tuple[str, int, int, int, int], ...]
_by_files: dict[_FilesKey, str] = {}
# model -> (checkpoint folder, its weight files' key and the model's state token at loading)
_loaded: weakref.WeakKeyDictionary[Any, tuple[Path, _FilesKey, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _weight_files(folder: Path) -> list[Path]:
    """The backbone and head weight files a checkpoint loads (transformers' preference order:
    safetensors before pytorch_model.bin, a single file before a sharded index)."""
    files: list[Path] = []
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / single).is_file():
            files = [folder / single]
            break
        index = folder / index_name
        if index.is_file():
            shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            files = [index, *sorted({folder / str(s) for s in shards.values()})]
            break
    files.extend(folder / h for h in _HEAD_FILES if (folder / h).is_file())
    return files


def _files_key(files: list[Path]) -> _FilesKey:
    """What changes when any of ``files`` is rewritten or replaced: path, inode, size, mtime
    and ctime (``cp -p``, ``rsync -a`` and ``tar x`` restore the mtime, but a write or rename
    always sets the ctime, which ``utime`` cannot)."""
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _file_sha256(path: Path) -> str:
    real = path.resolve()
    # A Hugging Face cache blob is named by the sha256 of its content (LFS files): use it.
    if path.is_symlink() and real.parent.name == "blobs" and _HEX64.fullmatch(real.name):
        return real.name
    h = hashlib.sha256()
    with real.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def weights_digest(model: Any, folder: Path | None) -> str:
    """Digest of a model's weights: of its checkpoint files when they exist, else its tensors.

    ``"files-sha256:<hex>"`` over the backbone and head weight files in ``folder`` (cached per
    file identity, :func:`_files_key`, for the life of the process), or ``"tensors-sha256:<hex>"``
    (:func:`tensors_sha256`) when ``folder`` is None or holds no weight files.
    """
    files = _weight_files(folder) if folder is not None and folder.is_dir() else []
    if files:
        key = _files_key(files)
        with _lock:
            known = _by_files.get(key)
        if known is not None:
            return known
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}:{_file_sha256(f)}\n".encode())
        digest = f"files-sha256:{h.hexdigest()}"
        with _lock:
            _by_files[key] = digest
        return digest
    return f"tensors-sha256:{tensors_sha256(model)}"


def tensors_sha256(model: Any) -> str:
    """sha256 over every tensor of ``model.state_dict()`` (name, dtype, shape, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # packed params of quantised layers
            h.update(type(value).__qualname__.encode())
    return h.hexdigest()


def _state_token(model: Any) -> tuple[Any, ...]:
    """What changes when any tensor of ``model`` is replaced or changed in place (cheap)."""
    import torch

    parts: list[tuple[Any, ...]] = []
    sample = hashlib.sha256()
    for name, value in sorted(model.state_dict(keep_vars=True).items()):
        if not isinstance(value, torch.Tensor):
            parts.append((name, type(value).__qualname__, id(value)))
            continue
        t = value.detach()
        parts.append((name, id(value), t.data_ptr(), value._version, str(t.dtype), t.shape))
        if t.device.type == "meta" or t.numel() == 0:
            continue
        if t.is_quantized:
            t = t.int_repr()
        flat = t.reshape(-1)
        picked = flat[:: max(1, flat.numel() // _SAMPLE)].cpu().contiguous()
        sample.update(picked.view(torch.uint8).numpy().tobytes())
    return (tuple(parts), sample.hexdigest())


def remember_loaded(model: Any, folder: Path) -> None:
    """Record that ``model`` holds exactly the weights of the checkpoint in ``folder``.

    Call it right after loading; :func:`model_weights_digest` then keys the model by its file
    digest for as long as none of its tensors and none of the files changes.
    """
    token = _state_token(model)
    files = _files_key(_weight_files(Path(folder))) if Path(folder).is_dir() else ()
    with _lock, contextlib.suppress(TypeError):  # not weak-referenceable: never remembered
        _loaded[model] = (Path(folder), files, token)


def model_weights_digest(model: Any) -> str:
    """The digest of the weights ``model`` holds, reading as little as is safe.

    A model recorded by :func:`remember_loaded` and unchanged since is keyed by its checkpoint
    files (:func:`weights_digest`: the collection fingerprint's digest, so the files are read
    once for both) while those files are the ones it was loaded from; any other model (built
    in memory, fine-tuned, cast, quantised, or whose files were replaced since) by its tensors
    (``"tensors-sha256:<hex>"``).
    """
    with _lock:
        try:
            loaded = _loaded.get(model)
        except TypeError:
            loaded = None
    if loaded is not None:
        folder, files, token = loaded
        now = _files_key(_weight_files(folder)) if folder.is_dir() else ()
        if now != files:
            logger.info("the weight files in %s changed since loading: digesting tensors", folder)
        elif _state_token(model) == token:
            return weights_digest(model, folder)
        else:
            logger.info("the model changed since it was loaded from %s: digesting tensors", folder)
    return f"tensors-sha256:{tensors_sha256(model)}"
