"""``M3Model``: a transformers backbone plus the M3 heads, as one differentiable module.

The encoder (inference) and the fine-tuning trainer both run this module, so the maths of
every head lives in exactly one place.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from m3kit.checkpoint import (
    M3KIT_CONFIG_FILE,
    M3KIT_CONFIG_FORMAT,
    CheckpointInfo,
    CheckpointKind,
    Pooling,
    refuse_peft_adapter,
    resolve_checkpoint,
)
from m3kit.checkpoint_save import save_folder_whole
from m3kit.errors import CheckpointError, HeadNotAvailableError
from m3kit.heads import M3Heads, refuse_git_lfs_pointer
from m3kit.saved_files import (
    checkpoint_files,
    warn_flagembedding_settings,
    write_sentence_transformers_metadata,
)
from m3kit.weights import weight_files

__all__ = ["M3Forward", "M3Model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class M3Forward:
    """Raw head outputs of one padded batch (tensors; padding positions are zero / masked).

    Attributes:
        hidden: Last hidden states ``[b, t, h]``.
        dense: Pooled, normalised dense vectors ``[b, h]``.
        sparse: Token weights ``[b, t]`` (ReLU applied; padding zeroed) or None if not asked.
        colbert: Normalised token vectors ``[b, t - 1, d]`` (CLS dropped; padding zeroed) or None.
    """

    hidden: torch.Tensor
    dense: torch.Tensor
    sparse: torch.Tensor | None
    colbert: torch.Tensor | None


class M3Model(nn.Module):
    """Backbone + pooling + optional M3 heads."""

    def __init__(self, backbone: nn.Module, pooling: Pooling, heads: M3Heads | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = Pooling(pooling)
        self.heads = heads

    @property
    def kind(self) -> CheckpointKind:
        return CheckpointKind.M3 if self.heads is not None else CheckpointKind.DENSE

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)  # type: ignore[union-attr,arg-type]

    # -- loading / saving -------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, info: CheckpointInfo, *, trust_remote_code: bool = False, init_heads: bool = False
    ) -> M3Model:
        """Load a validated checkpoint.

        Args:
            info: From :func:`~m3kit.checkpoint.resolve_checkpoint`.
            trust_remote_code: Passed to transformers; off unless the caller asks.
            init_heads: For training only: give a dense-only checkpoint freshly initialised
                sparse and ColBERT heads. Inference never does this.

        Raises:
            CheckpointError: The backbone or a head does not load from the files, or the
                folder holds a PEFT adapter (:func:`~m3kit.checkpoint.refuse_peft_adapter`:
                transformers would apply it over another model), also one added since
                ``info`` was resolved.
        """
        from safetensors import SafetensorError
        from transformers import AutoModel

        refuse_peft_adapter(info.path)  # AutoModel would apply it
        _check_weight_files(info.path)
        classes = _base_model_classes(info.path, trust_remote_code=trust_remote_code)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        keys = _weight_keys(info.path)
        if (
            classes
            and all("add_pooling_layer" in _init_parameters(c) for c in classes)
            and keys is not None
            and not any(_is_pooler_key(k) for k in keys)
        ):
            # M3 never uses the pooler; skip building one the checkpoint has no weights for
            # (otherwise transformers logs a "MISSING pooler" load report on every load).
            # Only architectures that have a pooler take the flag (DistilBERT, ModernBERT don't).
            kwargs["add_pooling_layer"] = False
        try:
            backbone, loading = AutoModel.from_pretrained(
                str(info.path), output_loading_info=True, **kwargs
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise CheckpointError(f"could not load the backbone from {info.path}: {e}") from e
        _refuse_missing_tensors(info.path, loading)
        backbone.float()
        hidden = int(backbone.config.hidden_size)
        heads: M3Heads | None = None
        if info.kind is CheckpointKind.M3:
            heads = M3Heads.from_folder(info.path, hidden)
        elif init_heads:
            heads = M3Heads(hidden)
            logger.info("initialised new sparse and ColBERT heads for %s (training)", info.path)
        return cls(backbone, info.pooling, heads)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        pooling: Pooling | None = None,
        trust_remote_code: bool = False,
        init_heads: bool = False,
    ) -> M3Model:
        info = resolve_checkpoint(name_or_path, pooling=pooling)
        return cls.from_checkpoint(info, trust_remote_code=trust_remote_code, init_heads=init_heads)

    def save(
        self,
        folder: str | os.PathLike[str],
        tokenizer: Any,
        *,
        query_instruction: str | None = None,
        max_length: int | None = None,
    ) -> Path:
        """Write an M3-layout checkpoint that m3kit, FlagEmbedding and sentence-transformers load.

        Files: transformers backbone (safetensors) + tokenizer + ``colbert_linear.pt`` +
        ``sparse_linear.pt`` + ``m3kit.json`` + sentence-transformers metadata (dense head).

        The files are written into a new folder inside ``folder`` and swapped in only once
        complete (:mod:`m3kit.checkpoint_save`): a save that fails (a full disk, an error)
        leaves an earlier checkpoint in ``folder`` as it was. ``m3kit.saving`` marks the new
        folder while it is written (and ``folder`` while the files are swapped), so what a
        killed run leaves is refused on load. The folder's files that are no checkpoint's
        (notes, logs) stay; the earlier weights, head and tokenizer files, its search
        calibration (``m3kit_search.json``, measured on the old weights) and a PEFT adapter's
        files (which transformers would apply over the new weights) do not.
        """
        out = Path(folder).expanduser()  # as from_pretrained reads it
        backbone = self.backbone
        held = sorted({str(p.dtype) for p in backbone.parameters()} - {str(torch.float32)})
        if held:
            # written as float32, as checkpoints are: a bf16 file (what dtype="auto" holds on a
            # CPU with native bf16) loads in bf16 by default in transformers, emulated and slow
            # on CPUs without it, and its weights would differ by the CPU that saved them
            logger.warning(
                "%s: the model holds %s weights (the precision it was loaded with); they are "
                "saved as float32, but keep that rounding: load it with dtype='fp32' to save "
                "the exact weights",
                out,
                "/".join(held),
            )
            backbone = copy.deepcopy(backbone).float()

        def write(new: Path) -> None:
            backbone.save_pretrained(str(new), safe_serialization=True)  # type: ignore[operator]
            tokenizer.save_pretrained(str(new))
            if self.heads is not None:
                self.heads.save(new)
            config = {
                "format_version": M3KIT_CONFIG_FORMAT,
                "pooling": self.pooling.value,
                "query_instruction": query_instruction,
                "max_length": max_length,
            }
            (new / M3KIT_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
            write_sentence_transformers_metadata(
                new, self.hidden_size, self.pooling, max_length, query_instruction
            )

        save_folder_whole(out, write, checkpoint_files)
        if self.heads is not None:
            warn_flagembedding_settings(out, self.pooling, query_instruction)
        return out

    # -- forward ----------------------------------------------------------------------------
    def require_heads(self) -> M3Heads:
        if self.heads is None:
            raise HeadNotAvailableError(
                "this checkpoint is dense-only (no colbert_linear.pt / sparse_linear.pt): "
                "ask it for the dense head only, or load an M3 checkpoint"
            )
        return self.heads

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Dense pooling (CLS, masked mean or masked max) followed by L2 normalisation.

        Sequences are right-padded, so CLS is position 0. Dense vectors are always normalised
        (see :mod:`m3kit.checkpoint` for checkpoints without a ``Normalize`` module).
        """
        if self.pooling is Pooling.CLS:
            pooled = hidden[:, 0]
        elif self.pooling is Pooling.MAX:
            pad = (attention_mask == 0).unsqueeze(-1)
            pooled = hidden.masked_fill(pad, float("-inf")).max(dim=1).values
        else:
            # summed in float32 (as FlagEmbedding does): a long fp16 sequence's sum can pass
            # float16's 65504 and leave an inf, so a NaN vector after normalising
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        sparse: bool = True,
        colbert: bool = True,
    ) -> M3Forward:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state
        dense = self.pool(hidden, attention_mask)
        sparse_w = colbert_v = None
        if sparse or colbert:
            heads = self.require_heads()
            if sparse:
                sparse_w = heads.sparse_weights(hidden).float() * attention_mask.to(torch.float32)
            if colbert:
                vecs = heads.colbert_vectors(hidden[:, 1:]).float()
                vecs = vecs * attention_mask[:, 1:].unsqueeze(-1).to(torch.float32)
                colbert_v = F.normalize(vecs, dim=-1)
        return M3Forward(hidden=hidden, dense=dense, sparse=sparse_w, colbert=colbert_v)


def _base_model_classes(path: Path, *, trust_remote_code: bool) -> tuple[type[nn.Module], ...]:
    """The transformers base-model class(es) ``AutoModel`` may build for ``path``.

    Empty for a remote-code model (its class is only known once transformers imports it).

    Raises:
        CheckpointError: the model type is unknown to the installed transformers, has no base
            model, or is an encoder-decoder (m3kit runs encoder-only backbones).
    """
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # unknown type, invalid field values: re-raised naming the type
        model_type = _declared_model_type(path)
        raise CheckpointError(
            f"{path}/config.json declares model_type {model_type!r}, which transformers "
            f"{transformers.__version__} cannot load: {e}"
        ) from e
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        raise CheckpointError(
            f"{path} is an encoder-decoder model ({model_type!r}); m3kit loads encoder-only "
            f"backbones (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet, ModernBERT, ...)"
        )
    if type(config) in MODEL_MAPPING:
        found = MODEL_MAPPING[type(config)]
        classes = found if isinstance(found, tuple) else (found,)  # Funnel has two
        return tuple(c for c in classes if c is not None)
    if trust_remote_code and "AutoModel" in (getattr(config, "auto_map", None) or {}):
        return ()
    raise CheckpointError(
        f"{path}: model type {model_type!r} has no base model in transformers "
        f"{transformers.__version__} (AutoModel cannot build it); m3kit loads encoder "
        f"backbones such as BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet and ModernBERT"
    )


def _init_parameters(model_class: type[nn.Module]) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.__init__).parameters)


def _declared_model_type(path: Path) -> object:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _check_weight_files(path: Path) -> None:
    """Refuse a weight file the load reads that is a Git LFS pointer (a clone without Git
    LFS); files it does not read (an index beside a single ``model.safetensors``) are not
    looked at.

    Raises:
        CheckpointError: Names the file and how to fetch it (or a damaged index it reads).
    """
    for file in weight_files(path):
        if file.is_file():
            refuse_git_lfs_pointer(file)


def _refuse_missing_tensors(path: Path, loading: dict[str, Any]) -> None:
    """Refuse a backbone whose weight files lack some of its tensors.

    transformers initialises a missing tensor at random and only logs it; m3kit's vectors
    would then come from random weights. The pooler is exempt: M3 never uses it.

    Raises:
        CheckpointError: Names the folder and the missing tensors.
    """
    missing = sorted(k for k in loading.get("missing_keys") or () if not _is_pooler_key(k))
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        shown = ", ".join(missing[:8]) + more
        files = [f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()]
        raise CheckpointError(
            f"the weight files of {path} ({', '.join(files) or 'sharded'}) lack "
            f"{len(missing)} tensor(s) the backbone needs: {shown}. m3kit never fills them "
            "with random weights; the file is incomplete or from another model"
        )


def _is_pooler_key(key: str) -> bool:
    """Whether a weight name belongs to the backbone's pooler (which M3 never uses)."""
    return key.split(".")[0] == "pooler" or ".pooler." in key


def _weight_keys(path: Path) -> list[str] | None:
    """The backbone weight names the checkpoint stores (a safetensors header, a shard index's
    ``weight_map``, or a ``.bin`` opened memory-mapped); ``None``: not known cheaply. Read
    for the pooler only: sharded and ``.bin`` checkpoints without one printed transformers'
    "newly initialized" report on every load."""
    from safetensors import SafetensorError, safe_open

    single = path / "model.safetensors"
    if single.is_file():
        try:
            with safe_open(str(single), framework="pt") as f:
                return list(f.keys())
        except SafetensorError as e:
            raise CheckpointError(
                f"{single} is not a readable safetensors file (truncated or corrupted?): {e}"
            ) from e
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            try:
                weight_map = json.loads((path / index).read_text(encoding="utf-8"))["weight_map"]
                return [str(k) for k in weight_map]
            except (OSError, ValueError, KeyError, TypeError):
                return None  # the weights' own checks name what is wrong with it
    if (path / "pytorch_model.bin").is_file():
        try:
            state = torch.load(
                path / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True
            )
        except Exception:  # an old (non-zip) format, or damaged: loading names the problem
            return None
        return [str(k) for k in state] if isinstance(state, dict) else None
    return None
