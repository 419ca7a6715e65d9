"""``EncoderSpec``: what a worker process or Ray actor needs to load the parent's encoder.

:class:`~m3kit.distributed.EncoderPool` workers and the Ray pipeline's actors
(:mod:`m3kit.distributed.ray_pipeline`) load their own :class:`~m3kit.encoder.M3Encoder`
from it, and refuse to encode when the model they loaded is not the parent's (its
fingerprint identity).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.fingerprint import EncoderFingerprint

__all__ = ["EncoderSpec", "code_digest"]


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to load the same encoder as the parent (picklable, small).

    Attributes:
        path: The checkpoint folder (``M3Encoder.info.path``), absolute and resolved: a
            worker's working directory is not the parent's (a Ray actor on another node, or
            in a ``runtime_env`` ``working_dir``), so a relative folder such as
            ``from_pretrained("models/m3")`` would name another folder there, or none. A hub
            id was resolved by the parent to its local snapshot folder, carried likewise.
        pooling: Dense pooling (``"cls"``, ``"mean"``, ``"max"``).
        dtype: The parent's resolved precision, used by every worker when ``dtype_given``.
        dtype_given: Whether the parent's precision was asked for (``dtype="fp32"``,
            ``m3kit index --dtype fp32``): every worker then loads with it, and a worker whose
            device cannot run it (fp16 on a CPU, int8 on a GPU) refuses to load, naming both.
            ``False`` (``"auto"``): every worker resolves ``"auto"`` for its own hardware
            (bf16 on a CPU is not fp16 on a GPU; a Ray node's CPU or GPU model can differ
            from the driver's: bf16 is native on one, emulated and slow on another).
        device_type: The parent's device type (``"cpu"``, ``"cuda"``).
        max_length: Longest input in tokens.
        query_instruction: Query prefix.
        batch_size: Most texts per forward pass.
        max_batch_tokens: Most padded tokens per forward pass.
        backend: The parent's resolved backend, ``"torch"`` or ``"onnx"``; every worker
            loads with it (``"auto"`` would turn a parent's torch int8 into ONNX Runtime's).
        identity: The parent encoder's fingerprint identity
            (:class:`~m3kit.fingerprint.EncoderFingerprint`); a worker whose loaded model
            differs (the checkpoint changed on disk, or another machine holds another model at
            that path) refuses to encode, so no vectors of another model are stored under the
            collection's fingerprint. ``None``: not checked.
        onnx_cache_dir: The ONNX export folder the parent was given (absolute), which every
            worker loads from, so none exports the model again into its default cache
            (minutes, a copy of the weights, and a failure where home is read-only).
            ``None``: not given, or the parent runs torch; each worker uses its default
            (``$M3KIT_CACHE/onnx`` or ``~/.cache/m3kit/onnx``).
        trust_remote_code: Whether the parent runs the checkpoint's own modelling code
            (``auto_map``, loaded with ``trust_remote_code=True``); every worker then loads
            it too. The same weights and ``config.json`` build transformers' stock class
            without it: another model of the same fingerprint identity.
        int8_reduce_range: With ONNX Runtime int8, the parent's quantisation scheme (7-bit
            weights on a CPU without VNNI, 8-bit with it: ``Int8Scheme``): a worker whose CPU
            quantises the other way refuses to load, as its vectors would differ (cosine
            ~0.97-0.99) under the same identity. ``None``: not int8, not checked.
        code: A digest of the parent's m3kit source (:func:`code_digest`): a worker running
            another m3kit refuses to load, as its chunks could differ under the document
            versions the parent computed (both installs said 0.1.0, one cut 68 chunks where
            the other cut 59, stored as one version and skipped by every re-run). ``None``:
            not checked.
    """

    path: str
    pooling: str
    dtype: str
    device_type: str
    max_length: int
    query_instruction: str | None
    batch_size: int
    max_batch_tokens: int
    backend: str = "torch"
    identity: str | None = None
    dtype_given: bool = False
    onnx_cache_dir: str | None = None
    trust_remote_code: bool = False
    int8_reduce_range: bool | None = None
    code: str | None = None

    @classmethod
    def of(cls, encoder: M3Encoder, fingerprint: EncoderFingerprint | None = None) -> EncoderSpec:
        """The spec of an encoder built by :meth:`M3Encoder.from_pretrained`; ``fingerprint``:
        the encoder's, when the caller has just taken it (taken here otherwise).

        Raises:
            ValueError: The encoder was built from an in-memory model (no checkpoint folder a
                worker could load), or its model no longer holds its folder's weights
                (changed in memory since loading); save it with ``M3Model.save`` and load it
                from there.
        """
        from m3kit.fingerprint import encoder_fingerprint
        from m3kit.precision import Precision

        info = encoder.info
        backend = getattr(getattr(encoder, "backend", None), "value", "torch")
        cache_dir = getattr(encoder, "requested_onnx_cache_dir", None)
        if info is None:
            raise ValueError(
                "this M3Encoder has no checkpoint folder (it was built from an in-memory "
                "model); worker processes load the model from disk: save it and use "
                "M3Encoder.from_pretrained(folder)"
            )
        if fingerprint is None:
            fingerprint = encoder_fingerprint(encoder)
        if fingerprint.weights.startswith("tensors-sha256:"):
            raise ValueError(
                f"this M3Encoder's weights are not the ones in {info.path}: its model changed "
                "in memory since it was loaded (trained in place, given other weights), or "
                "was not loaded from that folder, and worker processes load the folder. Save "
                "the model (M3Model.save) and use M3Encoder.from_pretrained on that folder"
            )
        return cls(
            path=str(Path(info.path).resolve()),
            pooling=encoder.model.pooling.value,
            dtype=encoder.precision.value,
            device_type=encoder.device.type,
            max_length=encoder.max_length,
            query_instruction=encoder.query_instruction,
            batch_size=encoder.batch_size,
            max_batch_tokens=encoder.max_batch_tokens,
            backend=backend,
            identity=fingerprint.identity,
            dtype_given=encoder.requested_precision is not Precision.AUTO,
            # a torch worker given one would refuse it (backend="auto" that resolved to torch)
            onnx_cache_dir=str(cache_dir) if backend == "onnx" and cache_dir is not None else None,
            trust_remote_code=_runs_own_code(encoder),
            int8_reduce_range=_int8_reduce_range(backend, encoder.precision.value),
            code=code_digest(),
        )

    def worker_dtype(self, device: str) -> str:
        """The precision a worker on ``device`` loads with (see ``dtype`` and ``dtype_given``).

        >>> spec = EncoderSpec("m", "cls", "fp32", "cpu", 512, None, 32, 8192)
        >>> spec.worker_dtype("cpu"), spec.worker_dtype("cuda:1")
        ('auto', 'auto')
        >>> import dataclasses
        >>> dataclasses.replace(spec, dtype_given=True).worker_dtype("cuda:1")
        'fp32'

        Raises:
            ValueError: The precision was given and ``device`` cannot run it.
        """
        import torch

        from m3kit.precision import Precision, check_precision_device

        if not self.dtype_given:  # each worker's own hardware decides
            return Precision.AUTO.value
        target = torch.device(device)
        if target.type == self.device_type:
            return self.dtype
        try:
            check_precision_device(Precision(self.dtype), target.type)
        except ValueError as e:
            raise ValueError(
                f"dtype {self.dtype!r} was given for the encoder (on {self.device_type}), and a "
                f"worker on {device} cannot run it ({e}); give a dtype every worker's device "
                "runs (fp32, bf16) or leave it auto so each device picks its own"
            ) from None
        return self.dtype

    def load(self, device: str) -> M3Encoder:
        """Load the encoder on ``device`` (``"cpu"``, ``"cuda:1"``, ...).

        Raises:
            ValueError: The model loaded is not the parent's (see ``identity``), or the
                precision given cannot run on ``device`` (see ``dtype_given``).
        """
        from m3kit.encoder import M3Encoder

        if self.code is not None and (digest := code_digest()) != self.code:
            import m3kit

            raise ValueError(
                f"this worker (on {device}) runs another m3kit than the parent: its source "
                f"({Path(m3kit.__file__).parent}, digest {digest}) differs from the parent's "
                f"(digest {self.code}), so its chunks or vectors could differ under the "
                "document versions the parent computed. Nothing was encoded; install the "
                "same m3kit on every node (a Ray runtime_env, or one image)"
            )
        dtype = self.worker_dtype(device)  # (refused for this device before the folder is)
        if not Path(self.path).is_dir():
            raise ValueError(
                f"a worker (on {device}) has no checkpoint folder {self.path}: workers load "
                "the parent's model from the folder the parent loaded (a model given by hub id "
                "is the parent's local snapshot of it), so every node needs that folder at "
                "that path: a shared filesystem, or the same folder copied to each node, "
                "given as --model / from_pretrained(folder). Nothing was encoded"
            )
        encoder = M3Encoder.from_pretrained(
            self.path,
            device=device,
            dtype=dtype,
            max_length=self.max_length,
            query_instruction=self.query_instruction,
            pooling=self.pooling,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            # the parent's resolved backend, never "auto": int8 on a CPU resolves to ONNX
            # Runtime's int8, not the torch int8 a parent given backend="torch" runs
            backend=self.backend,
            onnx_cache_dir=self.onnx_cache_dir,
            trust_remote_code=self.trust_remote_code,
        )
        # from_pretrained reads None as "the checkpoint's own instruction"; the parent's None
        # (one set after loading a checkpoint that declares one) means no prefix
        encoder.query_instruction = self.query_instruction
        mine = _int8_reduce_range(self.backend, encoder.precision.value)
        if self.int8_reduce_range is not None and mine != self.int8_reduce_range:
            raise ValueError(
                f"a worker on {device} quantises int8 weights with reduce_range={mine}, the "
                f"parent with reduce_range={self.int8_reduce_range} (their CPUs differ in "
                "VNNI): the same text would get other vectors under one model identity. "
                "Nothing was encoded; use fp32 or bf16, or workers of the parent's CPU class"
            )
        if self.identity is not None:
            from m3kit.fingerprint import encoder_fingerprint

            found = encoder_fingerprint(encoder)
            if found.identity != self.identity:
                raise ValueError(
                    f"the model a worker loaded from {self.path} is not the one the parent "
                    f"loaded (fingerprint {found.identity} != {self.identity}): the checkpoint "
                    "changed on disk, or this machine holds another model at that path. "
                    "Nothing was encoded; give every worker the same checkpoint"
                )
        return encoder


@functools.cache
def code_digest() -> str:
    """A digest of this process's m3kit source files (their paths in the package and their
    bytes): two installs of one version string can cut and encode differently (a commit
    between releases, a local patch), which the version alone does not tell. Read once per
    process (the code it runs; every pickled ``M3Embeddings`` takes a spec)."""
    import hashlib

    import m3kit

    root = Path(m3kit.__file__).parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        name = file.relative_to(root)
        # source files only: not an editor's lock or backup (".#chunk_spans.py", a dangling
        # link), nor what sits in hidden folders
        if any(part.startswith(".") for part in name.parts) or not file.is_file():
            continue
        try:
            data = file.read_bytes()
        except OSError:  # unreadable: not part of what this process imported
            continue
        digest.update(name.as_posix().encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16]


def _int8_reduce_range(backend: str, precision: str) -> bool | None:
    """This CPU's ONNX Runtime int8 scheme (``None``: not ONNX int8)."""
    if backend != "onnx" or precision != "int8":
        return None
    from m3kit.backends.onnx_backend import _this_cpu_int8_scheme

    return _this_cpu_int8_scheme().reduce_range


def _runs_own_code(encoder: M3Encoder) -> bool:
    """Whether ``encoder``'s backbone is a checkpoint's own class (``trust_remote_code``),
    not one of transformers' (its dynamic modules are ``transformers_modules.*``)."""
    return not type(encoder.model.backbone).__module__.startswith("transformers.")
