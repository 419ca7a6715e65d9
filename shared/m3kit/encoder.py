"""``M3Encoder``: load a checkpoint and encode text with the dense, sparse and ColBERT heads.

Example::

    from m3kit import M3Encoder

    enc = M3Encoder.from_pretrained("/models/bge-m3")   # or "BAAI/bge-m3" when online
    out = enc.encode(["Late chunking keeps context."])
    out.dense.shape, len(out.sparse), out.colbert[0].shape   # ((1, 1024), 1, (9, 1024))
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from m3kit.backends import (
    EncoderBackend,
    check_onnx_cache_dir,
    open_onnx_runner,
    resolve_backend,
)
from m3kit.checkpoint import (
    DEFAULT_MODEL,
    CheckpointInfo,
    Pooling,
    position_limit,
    resolve_checkpoint,
)
from m3kit.encoder_forward import EncoderForward
from m3kit.encoder_inputs import (
    TokenizedText,
    Truncation,
    check_model_input_ids,
    check_texts,
    checked_sizes,
    load_tokenizer,
    plan_batches,
    special_token_ids,
    texts_to_input_ids,
    tokenize_texts,
    whole_number,
)
from m3kit.encoder_outputs import OutputCollector, TokenStates
from m3kit.machine import checked_device
from m3kit.model import M3Model
from m3kit.outputs import Head, M3Output
from m3kit.precision import (
    Precision,
    describe_precision,
    precision_from,
    prepare_model,
    resolve_precision,
)
from m3kit.sparse_options import check_sparse_options
from m3kit.weights import checkpoint_state, loaded_unchanged, remember_loaded, remember_placed

if TYPE_CHECKING:
    from m3kit.backends.onnx_backend import OnnxRunner

# Truncation, TokenizedText, TokenStates, check_texts and plan_batches live in encoder_inputs /
# encoder_outputs and are re-exported here, where they have always been imported from.
__all__ = [
    "M3Encoder",
    "Precision",
    "TokenStates",
    "TokenizedText",
    "Truncation",
    "check_texts",
    "plan_batches",
]

logger = logging.getLogger(__name__)


class M3Encoder(EncoderForward):
    """Encode texts into M3 dense, sparse and ColBERT vectors with one forward pass.

    Build it with :meth:`from_pretrained`. Thread-safe: several threads may call
    :meth:`encode` at once.

    Speed: texts are sorted by length and grouped into batches of at most ``batch_size``
    texts and ``max_batch_tokens`` padded tokens (one forward pass each, under
    ``torch.inference_mode``). The default precision (``"auto"``) is bf16 weights on CPUs
    with AVX-512 BF16 / AMX and on GPUs of compute capability 8.0+, fp16 on older GPUs, fp32
    elsewhere (:func:`~m3kit.precision.probe_bf16`); ``dtype="fp32"`` reproduces
    FlagEmbedding exactly. The constructor moves the model it is given to ``device`` and puts
    it in that precision in place; pass ``precision="bf16-autocast"`` (or ``"fp32"``) to keep
    a model's float32 weights, e.g. one that is still being trained. With ``backend="onnx"``
    the model is exported; :meth:`from_pretrained` then releases torch's copy of the weights
    (moved to the meta device), a model given to the constructor is left as it is. PyTorch
    uses every core by default; call ``torch.set_num_threads`` yourself when several encoders
    share a machine (before loading one with ``backend="onnx"``: ONNX Runtime takes torch's
    thread count when the encoder is built, and keeps it).

    ``precision`` is the precision in use (``"auto"`` resolved for the device);
    ``requested_precision`` what was asked for (``AUTO`` when nothing was), which worker
    processes on other devices follow (:class:`~m3kit.distributed.EncoderSpec`).
    """

    def __init__(
        self,
        model: M3Model,
        tokenizer: object,
        *,
        info: CheckpointInfo | None = None,
        device: torch.device | str | None = None,
        precision: Precision | str = Precision.AUTO,
        max_length: int | None = None,
        query_instruction: str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        backend: EncoderBackend | str = EncoderBackend.AUTO,
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        max_length = checked_sizes(model, max_length, batch_size, max_batch_tokens)
        check_onnx_cache_dir(onnx_cache_dir, backend)
        self.requested_precision = precision_from(precision)
        self.device = _device(device, EncoderBackend(backend), self.requested_precision)
        self._onnx: OnnxRunner | None
        # the checkpoint's files name the model only while it holds what it loaded from them;
        # the cast to this precision below keeps that so (precision is not identity)
        from_files = info is not None and loaded_unchanged(model, info.path)
        self.backend, self.precision, self.model, self._onnx = _place_model(
            model, self.device, self.requested_precision, EncoderBackend(backend), onnx_cache_dir
        )
        if from_files:
            remember_placed(self.model)
        # as given, made absolute here (workers run elsewhere): what EncoderSpec carries
        self._requested_onnx_cache_dir = (
            None if onnx_cache_dir is None else Path(onnx_cache_dir).expanduser().absolute()
        )
        self.tokenizer = tokenizer
        self.info = info
        self.max_length = int(max_length)
        # "" prefixes nothing: the same encoder as none (one identity, one calibration)
        self.query_instruction = query_instruction or None
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self._tok_lock = threading.Lock()
        self._unused_ids, self._pad_id = special_token_ids(tokenizer)
        _log_loaded(self)
        if self._onnx is not None:
            # ONNX Runtime computes the vectors from its own copy of the weights: the
            # fingerprint is taken now, before anything can change ``model``. Without a
            # checkpoint folder a torch encoder digests the tensors: the export's digest serves
            # when it is one (a model loaded from files and unchanged is keyed by its files)
            from m3kit.fingerprint import encoder_fingerprint

            digest = self._onnx.weights
            tensors = info is None and digest.startswith("tensors-")
            encoder_fingerprint(self, weights=digest if tensors else None)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: torch.device | str | None = None,
        dtype: Precision | str | torch.dtype | None = None,
        max_length: int | None = None,
        query_instruction: str | None = None,
        pooling: Pooling | str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        trust_remote_code: bool = False,
        backend: EncoderBackend | str = EncoderBackend.AUTO,
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> M3Encoder:
        """Load an M3 checkpoint (three heads) or a BGE / sentence-transformers one (dense only).

        Args:
            name_or_path: Local folder or hub id (default ``BAAI/bge-m3``).
            device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, except for
                ``dtype="int8"`` and the ONNX backend, which run on CPU only).
            dtype: Precision of the forward pass (:class:`~m3kit.precision.Precision`):
                ``"auto"`` (default: bf16 where the device runs it natively, fp16 on
                older GPUs, else fp32; see :func:`~m3kit.precision.probe_bf16`),
                ``"fp32"`` (exact FlagEmbedding parity), ``"bf16"`` (weights cast),
                ``"bf16-autocast"``, ``"fp16"`` (GPU), ``"int8"`` (CPU, dynamic
                quantisation, lossy; opt-in: ONNX Runtime's unless ``backend="torch"``) or a
                ``torch.dtype``.
            max_length: Longest input in tokens (default: what the checkpoint declares; up
                to what its position embeddings hold, e.g. 512 for all-MiniLM-L6-v2, which
                declares 256).
            query_instruction: Prefix added to queries only (e.g. BGE v1.5's
                ``"Represent this sentence for searching relevant passages: "``); ``None``:
                the checkpoint's own, ``""``: none (the encoder then has ``None``).
            pooling: Override the dense pooling (``"cls"``, ``"mean"`` or ``"max"``).
            batch_size: Most texts per forward pass.
            max_batch_tokens: Most padded tokens per forward pass (a longer text runs alone).
                8192 was the fastest budget for 64 passages of 256 tokens in bf16 on a
                2-core AVX-512 BF16 CPU (2048: 0.64x, 4096: 0.78x, 16384: 0.82x its speed);
                compare others with ``benchmarks/encode.py --max-batch-tokens N``.
            trust_remote_code: Allow custom model code from the checkpoint (off by default).
            backend: ``"torch"``, ``"onnx"`` (ONNX Runtime on CPU, extra ``m3kit[onnx]``:
                the model is exported once to one graph with every head, cached in
                ``onnx_cache_dir`` keyed by its weights, and checked at each load; ``dtype``
                ``"fp32"`` is exact to 1e-4, ``"int8"`` quantises the weights, lossy) or
                ``"auto"`` (torch, see the README's speed table for what was measured; ONNX
                for ``dtype="int8"`` on CPU, whose int8 keeps retrieval quality where
                torch's does not).
            onnx_cache_dir: Folder of ONNX exports (default ``~/.cache/m3kit/onnx`` or
                ``$M3KIT_CACHE/onnx``).
        """
        if device is not None:
            checked_device(device)  # a device that cannot run here, refused before the load
        info = resolve_checkpoint(name_or_path, pooling=Pooling(pooling) if pooling else None)
        # the files' identities before they are read: the fingerprint, which digests them
        # later, refuses files changed since (CheckpointChangedError), and an ONNX export keys
        # on the files' digest while they and the model are unchanged
        state = checkpoint_state(info.path)
        tokenizer = load_tokenizer(info, trust_remote_code=trust_remote_code)
        model = M3Model.from_checkpoint(info, trust_remote_code=trust_remote_code)
        remember_loaded(model, info.path, state)
        declared = info.max_length or 8192
        if max_length is not None:
            whole_number("max_length", max_length)
            if max_length < 2:  # (0 loaded the checkpoint's own length, silently)
                raise ValueError(
                    f"max_length must be at least 2 (the special tokens), got {max_length}"
                )
            _check_positions(max_length, info)
        enc = cls(
            model,
            tokenizer,
            info=info,
            device=device,
            precision=precision_from(dtype),
            max_length=max_length or declared,
            query_instruction=query_instruction
            if query_instruction is not None
            else info.query_instruction,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            backend=backend,
            onnx_cache_dir=onnx_cache_dir,
        )
        if enc._onnx is not None:
            # ONNX Runtime holds its own copy of the weights: torch's (2.2 GB for BGE-M3) are
            # released, here only, where nobody else holds this model (a model given to the
            # constructor may serve another encoder, and is left as it is)
            enc.model.to("meta")
        return enc

    # -- properties -------------------------------------------------------------------------
    @property
    def dense_dim(self) -> int:
        return self.model.hidden_size

    @property
    def colbert_dim(self) -> int | None:
        heads = self.model.heads
        return heads.colbert_dim if heads is not None else None

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)  # type: ignore[arg-type]

    @property
    def onnx_cache_dir(self) -> Path | None:
        """The ONNX export cache folder this encoder runs from, absolute (``None`` on torch)."""
        return None if self._onnx is None else self._onnx.path.parent.parent

    @property
    def requested_onnx_cache_dir(self) -> Path | None:
        """The ONNX export cache folder asked for (absolute), ``None`` when none was (each
        machine's default: what a copy built elsewhere should use) or on torch."""
        return None if self._onnx is None else self._requested_onnx_cache_dir

    # -- tokenisation -----------------------------------------------------------------------
    def tokenize(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        truncation: Truncation | str = Truncation.WARN,
    ) -> list[TokenizedText]:
        """Token ids per text, truncated to ``max_length`` (special tokens included).

        Raises:
            ValueError: ``max_length`` is not a whole number, or below 2 (the special tokens
                alone).
        """
        if max_length is not None and whole_number("max_length", max_length, "tokens") < 2:
            raise ValueError(
                f"max_length must be at least 2 (the special tokens), not {max_length!r}"
            )
        limit = min(int(max_length or self.max_length), self.max_length)
        return tokenize_texts(
            self.tokenizer,
            check_texts(texts, method="tokenize"),
            limit=limit,
            truncation=truncation,
            lock=self._tok_lock,
        )

    # -- encoding ---------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        *,
        heads: Sequence[Head | str] | Head | str | None = None,
        query: bool = False,
        max_length: int | None = None,
        truncation: Truncation | str = Truncation.WARN,
        sparse_top_k: int | None = None,
        sparse_min_weight: float = 0.0,
        show_progress: bool | None = None,
    ) -> M3Output:
        """Encode a batch of texts.

        Args:
            texts: The texts (a list; a single ``str`` is refused to keep the output a batch).
            heads: Heads to compute (default: all the checkpoint has).
            query: Prefix the query instruction (if one is configured).
            max_length: Truncate longer texts to this many tokens (at most the encoder's own
                ``max_length``: a larger value truncates there).
            truncation: ``"warn"`` (truncate and log) or ``"error"`` (raise).
            sparse_top_k: Keep only the k highest sparse weights per text.
            sparse_min_weight: Drop sparse weights at or below this value.
            show_progress: tqdm bar (default: on for more than one batch).

        Returns:
            One :class:`M3Output` for the whole batch, in input order.
        """
        wanted, input_ids = texts_to_input_ids(
            self, texts, heads=heads, query=query, max_length=max_length, truncation=truncation
        )
        return self.encode_tokenized(
            input_ids,
            heads=wanted,
            sparse_top_k=sparse_top_k,
            sparse_min_weight=sparse_min_weight,
            show_progress=show_progress,
        )

    def encode_queries(self, texts: Sequence[str], **kwargs: object) -> M3Output:
        """:meth:`encode` with ``query=True`` (adds the query instruction)."""
        return self.encode(texts, query=True, **kwargs)  # type: ignore[arg-type]

    def encode_tokenized(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        heads: Sequence[Head | str] | Head | str | frozenset[Head] | None = None,
        sparse_top_k: int | None = None,
        sparse_min_weight: float = 0.0,
        show_progress: bool | None = None,
    ) -> M3Output:
        """Encode already tokenised texts (ids with special tokens).

        Raises:
            ValueError: A bad ``sparse_top_k`` or ``sparse_min_weight`` (NaN), or token ids no
                forward pass takes (an empty sequence, values that are not integers, an id outside
                the vocabulary).
            TypeError: ``sparse_min_weight`` is not a number.
        """
        check_sparse_options(sparse_top_k, sparse_min_weight)
        check_model_input_ids(self.model, input_ids)
        wanted = self._check_heads(heads)
        out = OutputCollector(wanted, self.dense_dim, [len(ids) for ids in input_ids])
        batches = self._plan_batches([len(ids) for ids in input_ids])
        show = show_progress if show_progress is not None else len(batches) > 1
        with tqdm(total=len(input_ids), desc="encode", unit="text", disable=not show) as bar:
            for batch in batches:
                out.add_forward(
                    batch,
                    self._forward([input_ids[i] for i in batch], wanted),
                    self._unused_ids,
                    sparse_top_k=sparse_top_k,
                    sparse_min_weight=sparse_min_weight,
                )
                bar.update(len(batch))
        return out.result()


def _device(
    device: torch.device | str | None, backend: EncoderBackend, precision: Precision
) -> torch.device:
    """The device given, checked, else CUDA when there is one, except for ONNX Runtime and
    int8 (dynamic quantisation), which run on CPU only: they get the CPU rather than a GPU
    they would then refuse."""
    if device is not None:
        return checked_device(device)
    cuda = (
        torch.cuda.is_available()
        and backend is not EncoderBackend.ONNX
        and precision is not Precision.INT8
    )
    return torch.device("cuda" if cuda else "cpu")


def _place_model(
    model: M3Model,
    device: torch.device,
    precision: Precision,
    backend: EncoderBackend,
    onnx_cache_dir: str | os.PathLike[str] | None,
) -> tuple[EncoderBackend, Precision, M3Model, OnnxRunner | None]:
    """(backend, resolved precision, the model on ``device``, the ONNX runner or None).

    Raises:
        ValueError: ``model`` holds no weights: the ONNX encoder that loaded it released them.
    """
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "meta":
        raise ValueError(
            "this model holds no weights: an encoder loaded with backend='onnx' released "
            "torch's copy (ONNX Runtime runs its own). Load the checkpoint again for this "
            "encoder (M3Encoder.from_pretrained(path, backend='torch'))"
        )
    backend = resolve_backend(backend, precision, device)
    if backend is EncoderBackend.ONNX:
        if precision is Precision.AUTO:
            precision = Precision.FP32
        training = model.training
        model = model.to(device).eval()  # float32: the export reads it
        try:
            runner = open_onnx_runner(model, precision, onnx_cache_dir)
        finally:  # a model given to the constructor is left in its mode
            model.train(training)
        return backend, precision, model, runner
    precision = resolve_precision(precision, device)
    if onnx_cache_dir is not None:  # (auto: torch here, so the folder is not used)
        logger.warning(
            "onnx_cache_dir %s is not used: backend 'auto' runs torch for %s on %s (ONNX "
            "Runtime only for int8 on a CPU); give backend='onnx' (--runtime onnx) to export",
            onnx_cache_dir,
            precision.value,
            device,
        )
    return backend, precision, prepare_model(model.to(device).eval(), precision), None


def _log_loaded(enc: M3Encoder) -> None:
    model = enc.model
    logger.info(
        "M3Encoder: %s checkpoint, %s pooling, device=%s, backend=%s, precision=%s, "
        "attention=%s, torch threads=%d, batch_size=%d, max_batch_tokens=%d, max_length=%d",
        model.kind.value,
        model.pooling.value,
        enc.device,
        enc.backend.value,
        describe_precision(enc.precision, enc.device)
        if enc._onnx is None
        else f"{enc.precision.value} (ONNX Runtime, {enc._onnx.path.parent})",
        getattr(getattr(model.backbone, "config", None), "_attn_implementation", "?")
        if enc._onnx is None
        else "ONNX Runtime graph",
        torch.get_num_threads(),
        enc.batch_size,
        enc.max_batch_tokens,
        enc.max_length,
    )


def _check_positions(max_length: int, info: CheckpointInfo) -> None:
    """Refuse a ``max_length`` longer than the checkpoint's position embeddings (or, where
    its ``config.json`` names none, than the length it declares): positions past them do not
    exist, and lowering it silently would ignore the setting.

    Raises:
        ValueError: Names both lengths.
    """
    positions = position_limit(info.path)
    limit = positions or info.max_length
    if limit is not None and max_length > limit:
        what = "positions" if positions else "tokens, as it declares"
        raise ValueError(
            f"max_length={max_length} is longer than {info.path} can encode ({limit} {what}); "
            f"give at most {limit}"
        )
