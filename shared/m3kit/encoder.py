"""``M3Encoder``: load a checkpoint and encode text with the dense, sparse and ColBERT heads.

Example::

    from m3kit import M3Encoder

    enc = M3Encoder.from_pretrained("/models/bge-m3")   # or "BAAI/bge-m3" when online
    out = enc.encode(["Late chunking keeps context."])
    out.dense.shape, len(out.sparse), out.colbert[0].shape   # ((1, 1024), 1, (7, 1024))
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from m3kit.backends import EncoderBackend, open_onnx_runner, resolve_backend
from m3kit.checkpoint import (
    DEFAULT_MODEL,
    CheckpointInfo,
    CheckpointKind,
    Pooling,
    resolve_checkpoint,
)
from m3kit.errors import CheckpointError, HeadNotAvailableError, TruncationError
from m3kit.model import M3Model
from m3kit.outputs import ALL_HEADS, FloatArray, Head, M3Output, SparseVector
from m3kit.precision import (
    Precision,
    autocast_dtype,
    describe_precision,
    precision_from,
    prepare_model,
    resolve_precision,
)

if TYPE_CHECKING:
    from m3kit.backends.onnx_backend import OnnxRunner

__all__ = ["M3Encoder", "Precision", "TokenStates", "TokenizedText", "Truncation"]

logger = logging.getLogger(__name__)


class Truncation(str, enum.Enum):
    """What to do with a text longer than ``max_length`` tokens."""

    WARN = "warn"  # truncate and log a warning
    ERROR = "error"  # raise TruncationError


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of one text (special tokens included) and whether it was truncated."""

    input_ids: list[int]
    truncated: bool


@dataclass(frozen=True)
class TokenStates:
    """Per-token outputs of one sequence, float32 (what late chunking pools per chunk).

    Attributes:
        hidden: Last hidden states ``[t, h]``.
        sparse: Sparse-head weights ``[t]`` (ReLU applied), or None when not asked for.
        colbert: Normalised ColBERT vectors ``[t - 1, d]`` of tokens 1..t-1 (CLS has none), or
            None when not asked for.
    """

    hidden: FloatArray
    sparse: FloatArray | None
    colbert: FloatArray | None


class M3Encoder:
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
    a model's float32 weights, e.g. one that is still being trained. PyTorch uses every core
    by default; call ``torch.set_num_threads`` yourself when several encoders share a machine.
    """

    def __init__(
        self,
        model: M3Model,
        tokenizer: object,
        *,
        info: CheckpointInfo | None = None,
        device: torch.device | str | None = None,
        precision: Precision | str = Precision.AUTO,
        max_length: int = 8192,
        query_instruction: str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        backend: EncoderBackend | str = EncoderBackend.AUTO,
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_length < 2:
            raise ValueError("max_length must be at least 2 (the special tokens)")
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be positive")
        cuda = torch.cuda.is_available() and EncoderBackend(backend) is not EncoderBackend.ONNX
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if cuda else "cpu")
        )
        self.backend = resolve_backend(
            EncoderBackend(backend), precision_from(precision), self.device
        )
        self._onnx: OnnxRunner | None = None
        if self.backend is EncoderBackend.ONNX:
            self.precision = precision_from(precision)
            if self.precision is Precision.AUTO:
                self.precision = Precision.FP32
            self.model = model.to(self.device).eval()  # float32: the export reads it
            self._onnx = open_onnx_runner(self.model, self.precision, onnx_cache_dir)
        else:
            self.precision = resolve_precision(precision_from(precision), self.device)
            self.model = prepare_model(model.to(self.device).eval(), self.precision)
        self.tokenizer = tokenizer
        self.info = info
        self.max_length = int(max_length)
        self.query_instruction = query_instruction
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self._tok_lock = threading.Lock()
        tok = self.tokenizer
        special = {
            getattr(tok, f"{n}_token_id", None) for n in ("cls", "eos", "pad", "unk", "bos", "sep")
        }
        self._unused_ids = np.array(sorted(i for i in special if i is not None), dtype=np.int64)
        self._pad_id = int(getattr(tok, "pad_token_id", 0) or 0)
        logger.info(
            "M3Encoder: %s checkpoint, %s pooling, device=%s, backend=%s, precision=%s, "
            "attention=%s, "
            "torch threads=%d, batch_size=%d, max_batch_tokens=%d, max_length=%d",
            model.kind.value,
            model.pooling.value,
            self.device,
            self.backend.value,
            describe_precision(self.precision, self.device)
            if self._onnx is None
            else f"{self.precision.value} (ONNX Runtime, {self._onnx.path.parent})",
            getattr(getattr(model.backbone, "config", None), "_attn_implementation", "?"),
            torch.get_num_threads(),
            self.batch_size,
            self.max_batch_tokens,
            self.max_length,
        )
        if self._onnx is not None:
            # ONNX Runtime holds its own copy of the weights: release torch's (2.2 GB for
            # BGE-M3) once the collection fingerprint, which digests them, is known.
            from m3kit.fingerprint import encoder_fingerprint

            encoder_fingerprint(self)
            self.model.to("meta")

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
            device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
            dtype: Precision of the forward pass (:class:`~m3kit.precision.Precision`):
                ``"auto"`` (default: bf16 where the device runs it natively, fp16 on
                older GPUs, else fp32; see :func:`~m3kit.precision.probe_bf16`),
                ``"fp32"`` (exact FlagEmbedding parity), ``"bf16"`` (weights cast),
                ``"bf16-autocast"``, ``"fp16"`` (GPU), ``"int8"`` (CPU, dynamic
                quantisation, lossy; opt-in) or a ``torch.dtype``.
            max_length: Longest input in tokens (default: what the checkpoint declares).
            query_instruction: Prefix added to queries only (e.g. BGE v1.5's
                ``"Represent this sentence for searching relevant passages: "``).
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
                ``"auto"`` (torch: see the README's speed table for what was measured).
            onnx_cache_dir: Folder of ONNX exports (default ``~/.cache/m3kit/onnx`` or
                ``$M3KIT_CACHE/onnx``).
        """
        info = resolve_checkpoint(name_or_path, pooling=Pooling(pooling) if pooling else None)
        tokenizer = _load_tokenizer(info, trust_remote_code=trust_remote_code)
        model = M3Model.from_checkpoint(info, trust_remote_code=trust_remote_code)
        declared = info.max_length or 8192
        return cls(
            model,
            tokenizer,
            info=info,
            device=device,
            precision=precision_from(dtype),
            max_length=min(max_length, declared) if max_length else declared,
            query_instruction=query_instruction
            if query_instruction is not None
            else info.query_instruction,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            backend=backend,
            onnx_cache_dir=onnx_cache_dir,
        )

    # -- properties -------------------------------------------------------------------------
    @property
    def available_heads(self) -> frozenset[Head]:
        return ALL_HEADS if self.model.kind is CheckpointKind.M3 else frozenset({Head.DENSE})

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

    # -- tokenisation -----------------------------------------------------------------------
    def tokenize(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        truncation: Truncation | str = Truncation.WARN,
    ) -> list[TokenizedText]:
        """Token ids per text, truncated to ``max_length`` (special tokens included)."""
        texts = check_texts(texts)
        limit = min(max_length or self.max_length, self.max_length)
        if not texts:
            return []
        with self._tok_lock:
            enc = self.tokenizer(  # type: ignore[operator]
                list(texts),
                truncation=True,
                max_length=limit,
                return_overflowing_tokens=True,
                return_attention_mask=False,
            )
        out: list[TokenizedText | None] = [None] * len(texts)
        mapping = enc.get("overflow_to_sample_mapping") or list(range(len(texts)))
        for row, sample in enumerate(mapping):
            if out[sample] is None:
                out[sample] = TokenizedText(list(enc["input_ids"][row]), truncated=False)
            else:
                first = out[sample]
                assert first is not None
                out[sample] = TokenizedText(first.input_ids, truncated=True)
        result = [t for t in out if t is not None]
        truncated = [i for i, t in enumerate(result) if t.truncated]
        if truncated:
            if Truncation(truncation) is Truncation.ERROR:
                raise TruncationError(
                    f"text(s) at position(s) {truncated[:10]} exceed max_length={limit} tokens"
                )
            logger.warning(
                "%d text(s) longer than %d tokens were truncated (positions %s)",
                len(truncated),
                limit,
                truncated[:10],
            )
        return result

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
            max_length: Truncate longer texts to this many tokens.
            truncation: ``"warn"`` (truncate and log) or ``"error"`` (raise).
            sparse_top_k: Keep only the k highest sparse weights per text.
            sparse_min_weight: Drop sparse weights at or below this value.
            show_progress: tqdm bar (default: on for more than one batch).

        Returns:
            One :class:`M3Output` for the whole batch, in input order.
        """
        texts = check_texts(texts)
        wanted = self._check_heads(heads)
        if query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        tokens = self.tokenize(texts, max_length=max_length, truncation=truncation)
        return self.encode_tokenized(
            [t.input_ids for t in tokens],
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
        """Encode already tokenised texts (ids with special tokens)."""
        wanted = self._check_heads(heads)
        n = len(input_ids)
        dense = np.zeros((n, self.dense_dim), dtype=np.float32) if Head.DENSE in wanted else None
        sparse: list[SparseVector] = [SparseVector.empty()] * n
        colbert: list[FloatArray] = [np.zeros((0, 0), dtype=np.float32)] * n
        batches = list(self._plan_batches([len(ids) for ids in input_ids]))
        bar = tqdm(
            total=n,
            desc="encode",
            unit="text",
            disable=not (show_progress if show_progress is not None else len(batches) > 1),
        )
        with bar:
            for batch in batches:
                fwd = self._forward([input_ids[i] for i in batch], wanted)
                ids_np, mask_np = fwd["ids"], fwd["mask"]
                for row, i in enumerate(batch):
                    length = int(mask_np[row].sum())
                    if dense is not None:
                        dense[i] = fwd["dense"][row]
                    if Head.SPARSE in wanted:
                        sparse[i] = self.sparse_vector(
                            ids_np[row, :length],
                            fwd["sparse"][row, :length],
                            top_k=sparse_top_k,
                            min_weight=sparse_min_weight,
                        )
                    if Head.COLBERT in wanted:
                        colbert[i] = np.ascontiguousarray(fwd["colbert"][row, : length - 1])
                bar.update(len(batch))
        return M3Output(
            heads=wanted,
            token_counts=tuple(len(ids) for ids in input_ids),
            _dense=dense,
            _sparse=tuple(sparse) if Head.SPARSE in wanted else None,
            _colbert=tuple(colbert) if Head.COLBERT in wanted else None,
        )

    def token_states(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        heads: Sequence[Head | str] | Head | str | frozenset[Head] | None = None,
    ) -> list[TokenStates]:
        """Per-token hidden states and head outputs of tokenised sequences (ids with specials).

        Same batching, device and precision as :meth:`encode_tokenized`; one entry per sequence.
        """
        wanted = self._check_heads(heads)
        out: list[TokenStates | None] = [None] * len(input_ids)
        for batch in self._plan_batches([len(ids) for ids in input_ids]):
            fwd = self._forward([input_ids[i] for i in batch], wanted, hidden=True)
            for row, i in enumerate(batch):
                length = len(input_ids[i])
                out[i] = TokenStates(
                    hidden=np.ascontiguousarray(fwd["hidden"][row, :length]),
                    sparse=fwd["sparse"][row, :length].copy() if "sparse" in fwd else None,
                    colbert=np.ascontiguousarray(fwd["colbert"][row, : length - 1])
                    if "colbert" in fwd
                    else None,
                )
        return [t for t in out if t is not None]

    def sparse_vector(
        self,
        ids: np.ndarray,
        weights: np.ndarray,
        *,
        top_k: int | None = None,
        min_weight: float = 0.0,
    ) -> SparseVector:
        """Token weights -> sparse vector: max per id; special tokens and weights <= 0 dropped."""
        ids = np.asarray(ids, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float32)
        keep = (weights > max(min_weight, 0.0)) & ~np.isin(ids, self._unused_ids)
        ids, weights = ids[keep], weights[keep]
        if ids.size == 0:
            return SparseVector.empty()
        uniq, inverse = np.unique(ids, return_inverse=True)
        best = np.zeros(uniq.shape[0], dtype=np.float32)
        np.maximum.at(best, inverse, weights)
        if top_k is not None and 0 < top_k < uniq.shape[0]:
            order = np.sort(np.argsort(-best, kind="stable")[:top_k])
            uniq, best = uniq[order], best[order]
        return SparseVector(uniq, best)

    # -- internals --------------------------------------------------------------------------
    def _check_heads(
        self, heads: Sequence[Head | str] | Head | str | frozenset[Head] | None
    ) -> frozenset[Head]:
        wanted = self.available_heads if heads is None else Head.parse(heads)
        missing = wanted - self.available_heads
        if missing:
            names = ", ".join(sorted(h.value for h in missing))
            raise HeadNotAvailableError(
                f"this checkpoint is dense-only and has no {names} head "
                f"(colbert_linear.pt / sparse_linear.pt missing); ask for heads=['dense']"
            )
        return wanted

    def _plan_batches(self, lengths: list[int]) -> Iterator[list[int]]:
        return iter(
            plan_batches(
                lengths, batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens
            )
        )

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = autocast_dtype(self.precision)
        if dtype is None:  # the weights' dtype sets the maths (fp32, bf16, fp16, int8)
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _forward(
        self, batch_ids: list[Sequence[int]], wanted: frozenset[Head], *, hidden: bool = False
    ) -> dict[str, np.ndarray]:
        width = max(len(ids) for ids in batch_ids)
        ids = np.full((len(batch_ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch_ids), width), dtype=np.int64)
        for row, seq in enumerate(batch_ids):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        if self._onnx is not None:
            res = self._onnx.run(ids, mask)
            onnx_out = {"ids": ids, "mask": mask, "dense": res["dense"]}
            if hidden:
                onnx_out["hidden"] = res["hidden"]
            for head in (Head.SPARSE, Head.COLBERT):
                if head in wanted:
                    onnx_out[head.value] = res[head.value]
            return onnx_out
        with torch.inference_mode(), self._autocast():
            fwd = self.model(
                torch.from_numpy(ids).to(self.device),
                torch.from_numpy(mask).to(self.device),
                sparse=Head.SPARSE in wanted,
                colbert=Head.COLBERT in wanted,
            )
        out = {"ids": ids, "mask": mask, "dense": fwd.dense.float().cpu().numpy()}
        if hidden:
            out["hidden"] = fwd.hidden.float().cpu().numpy()
        if fwd.sparse is not None:
            out["sparse"] = fwd.sparse.float().cpu().numpy()
        if fwd.colbert is not None:
            out["colbert"] = fwd.colbert.float().cpu().numpy()
        return out


def plan_batches(
    lengths: Sequence[int], *, batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Group sequences into forward passes: longest first, so each batch pads little.

    A batch holds at most ``batch_size`` sequences and at most ``max_batch_tokens`` padded
    tokens (its longest length times its size); a sequence longer than the budget runs alone.
    Equal lengths keep their input order. Returns indices into ``lengths``, every index once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= batch_size or longest * (len(batch) + 1) > max_batch_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def check_texts(texts: Sequence[str], *, method: str = "encode") -> list[str]:
    """``texts`` as a list, or a ``TypeError`` naming ``method()`` and the bad position."""
    if isinstance(texts, str):
        raise TypeError(f"{method}() takes a list of texts; wrap a single text as [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return out


def _load_tokenizer(info: CheckpointInfo, *, trust_remote_code: bool) -> object:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(info.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not load the tokenizer from {info.path}: {e}") from e
    if not getattr(tok, "is_fast", False):
        raise CheckpointError(
            f"the tokenizer in {info.path} is not a fast tokenizer; m3kit needs tokenizer.json "
            "(character offsets for late chunking)"
        )
    return tok
