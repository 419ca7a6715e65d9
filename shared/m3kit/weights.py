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

The files are digested lazily (a plain load reads no byte twice), so what an encoder loaded
is pinned by the files' identities instead: :func:`checkpoint_state` (taken before loading,
and recorded by :func:`remember_loaded`) covers the weight files and ``config.json``, and
:func:`check_loaded_files` refuses to name a model by files that changed since
(:class:`~m3kit.errors.CheckpointChangedError`): a fine-tune saved into the folder an encoder
was loaded from would otherwise give that encoder the new weights' fingerprint.
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

from m3kit.errors import CheckpointChangedError

__all__ = [
    "check_loaded_files",
    "checkpoint_state",
    "loaded_unchanged",
    "model_weights_digest",
    "remember_loaded",
    "remember_placed",
    "shard_names",
    "tensors_sha256",
    "weight_files",
    "weights_digest",
]

logger = logging.getLogger(__name__)

_READ_BLOCK = 8 << 20
_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SAMPLE = 4096  # values sampled per tensor by the "unchanged since loading" check

_lock = threading.Lock()
_FilesKey = tuple[tuple[str, int, int, int, int], ...]
_MISSING = (-1, -1, -1, -1)
_by_files: dict[_FilesKey, str] = {}
#: File states whose digest is kept (a service loading many checkpoints grew it without end).
_FILES_KEPT = 64
# model -> (checkpoint folder, its checkpoint_state and the model's state token at loading)
_loaded: weakref.WeakKeyDictionary[Any, tuple[Path, _FilesKey, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def weight_files(folder: Path) -> list[Path]:
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
            files = [index, *(folder / s for s in shard_names(index))]
            break
    files.extend(folder / h for h in _HEAD_FILES if (folder / h).is_file())
    return files


def shard_names(index: Path) -> list[str]:
    """The weight files a sharded checkpoint's index (``*.index.json``) names, sorted.

    Raises:
        CheckpointError: The index is a Git LFS pointer, not JSON, or has no ``weight_map``
            of file names (the message names the file).
    """
    from m3kit.errors import CheckpointError
    from m3kit.heads import refuse_git_lfs_pointer

    refuse_git_lfs_pointer(index)
    try:
        shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(
            f"{index} is not a sharded checkpoint's index (JSON with a weight_map): {exc}; "
            "the file is damaged or incomplete: download the checkpoint again"
        ) from None
    if not isinstance(shards, dict) or not all(isinstance(v, str) for v in shards.values()):
        raise CheckpointError(
            f"{index} has no weight_map of tensor names to file names; the file is damaged "
            "or incomplete: download the checkpoint again"
        )
    return sorted(set(shards.values()))


def _files_key(files: list[Path]) -> _FilesKey:
    """What changes when any of ``files`` is rewritten or replaced: path, inode, size, mtime
    and ctime (``cp -p``, ``rsync -a`` and ``tar x`` restore the mtime, but a write or rename
    always sets the ctime, which ``utime`` cannot)."""
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def checkpoint_state(folder: Path) -> _FilesKey:
    """The identities of the files that decide what a checkpoint in ``folder`` computes: its
    weight files and ``config.json``, each as path, inode, size, mtime and ctime (of the file
    a link points to; :func:`_files_key`), a file removed since it was listed as such. Cheap:
    one ``stat`` per file, no byte read."""
    folder = Path(folder)
    if not folder.is_dir():
        return ()
    files = weight_files(folder)
    if (folder / "config.json").is_file():
        files.append(folder / "config.json")
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            out.append((str(f.absolute()), *_MISSING))
        else:
            out.append((str(f.absolute()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
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
    files = weight_files(folder) if folder is not None and folder.is_dir() else []
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
        if _files_key(files) == key:  # (a file replaced while hashing: its key names others)
            with _lock:
                _by_files[key] = digest
                while len(_by_files) > _FILES_KEPT:  # the oldest first (insertion order)
                    del _by_files[next(iter(_by_files))]
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
    held = {id(t) for t in (*model.parameters(), *model.buffers())}
    for name, value in sorted(model.state_dict(keep_vars=True).items()):
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if id(value) in held:
                parts.append((name, id(value), t.data_ptr(), value._version, str(t.dtype)))
            else:  # made afresh by every state_dict() (a quantised layer's scale): values
                parts.append((name, str(t.dtype)))
            parts[-1] += (t.shape,)
            _add_sample(sample, t)
            continue
        # packed (quantised) weights come unpacked afresh from every state_dict(): their
        # values, not their ids, say whether they changed
        inner = [v for v in value if isinstance(v, torch.Tensor)] if _is_tuple(value) else []
        parts.append((name, type(value).__qualname__, "" if inner else repr(value)))
        for t in inner:
            parts.append((name, str(t.dtype), t.shape))
            _add_sample(sample, t.detach())
    return (tuple(parts), sample.hexdigest())


def _is_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def _add_sample(sample: Any, t: Any) -> None:
    """Add a strided sample of ``t``'s values (:data:`_SAMPLE` of them) to ``sample``."""
    import torch

    if t.device.type == "meta" or t.numel() == 0:
        return
    if t.is_quantized:
        t = t.int_repr()
    flat = t.reshape(-1)
    picked = flat[:: max(1, flat.numel() // _SAMPLE)].cpu().contiguous()
    sample.update(picked.view(torch.uint8).numpy().tobytes())


def _loaded_from(model: Any, folder: Path) -> Any:
    """What :func:`remember_loaded` recorded for ``model`` if it was loaded from ``folder``."""
    with _lock:
        try:
            loaded = _loaded.get(model)
        except TypeError:  # not weak-referenceable: never remembered
            return None
    if loaded is None or loaded[0].resolve() != Path(folder).resolve():
        return None
    return loaded


def loaded_unchanged(model: Any, folder: Path) -> bool:
    """Whether ``model`` was loaded from the checkpoint in ``folder`` (:func:`remember_loaded`)
    and none of its tensors changed since (or since m3kit placed it, :func:`remember_placed`).
    """
    loaded = _loaded_from(model, folder)
    return loaded is not None and _state_token(model) == loaded[2]


def remember_placed(model: Any) -> None:
    """Record that ``model``, loaded and unchanged (:func:`loaded_unchanged`), was then moved,
    cast or quantised by m3kit (:class:`~m3kit.M3Encoder`'s precision): it still holds its
    checkpoint's weights, which name it (the precision is not part of an encoder's identity).
    """
    with _lock:
        try:
            loaded = _loaded.get(model)
        except TypeError:
            return
    if loaded is not None:
        token = _state_token(model)
        with _lock:
            _loaded[model] = (loaded[0], loaded[1], token)


def remember_loaded(model: Any, folder: Path, state: _FilesKey | None = None) -> None:
    """Record that ``model`` holds exactly the weights of the checkpoint in ``folder``.

    Call it right after loading, with the :func:`checkpoint_state` taken just before (default:
    taken now); :func:`model_weights_digest` then keys the model by its file digest for as
    long as none of its tensors and none of the files changes, and :func:`check_loaded_files`
    refuses files changed since.
    """
    token = _state_token(model)
    files = checkpoint_state(Path(folder)) if state is None else state
    with _lock, contextlib.suppress(TypeError):  # not weak-referenceable: never remembered
        _loaded[model] = (Path(folder), files, token)


def check_loaded_files(model: Any, folder: Path) -> bool:
    """Whether ``model`` was loaded from ``folder`` (:func:`remember_loaded`), after checking
    that the files there are still the ones it loaded.

    Returns:
        ``True`` when checked; ``False`` when ``model`` was not recorded as loaded from
        ``folder`` (nothing to check against).

    Raises:
        CheckpointChangedError: A weight file or ``config.json`` was rewritten, replaced,
            added, removed or touched since ``model`` was loaded (names the folder and files).
    """
    loaded = _loaded_from(model, folder)
    if loaded is None:
        return False
    then, now = dict(_by_path(loaded[1])), dict(_by_path(checkpoint_state(loaded[0])))
    changed = sorted(Path(p).name for p in then.keys() | now.keys() if then.get(p) != now.get(p))
    if changed:
        raise CheckpointChangedError(
            f"the checkpoint files in {loaded[0]} changed since this encoder loaded them "
            f"({', '.join(changed)}: rewritten, replaced, added, removed or touched), so they "
            "no longer show which weights it holds, and its collection fingerprint would name "
            "the new files over vectors of the old weights. Load the encoder again "
            f"(M3Encoder.from_pretrained('{loaded[0]}')) to use the files as they are now, or "
            "put back the files it loaded"
        )
    return True


def _by_path(state: _FilesKey) -> list[tuple[str, tuple[int, int, int, int]]]:
    return [(path, (ino, size, mtime, ctime)) for path, ino, size, mtime, ctime in state]


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
        if checkpoint_state(folder) != files:
            logger.info("the weight files in %s changed since loading: digesting tensors", folder)
        elif _state_token(model) == token:
            digest = weights_digest(model, folder)
            # a save swapped in while the files were read (seconds for BGE-M3) digested the
            # new files, not the ones this model holds: an ONNX export keyed so was served to
            # every later load of the new checkpoint
            if checkpoint_state(folder) == files:
                return digest
            logger.info("the weight files in %s changed while read: digesting tensors", folder)
        else:
            logger.info("the model changed since it was loaded from %s: digesting tensors", folder)
    return f"tensors-sha256:{tensors_sha256(model)}"
