"""Find, validate and describe checkpoints: BGE-M3 layout and sentence-transformers dense models.

BGE-M3 layout (as written by FlagEmbedding and published as ``BAAI/bge-m3``)::

    config.json, model.safetensors (or pytorch_model.bin)   transformers backbone
    tokenizer.json / sentencepiece.bpe.model + configs      tokenizer
    colbert_linear.pt                                       ColBERT head state dict
    sparse_linear.pt                                        sparse head state dict

A sentence-transformers / BGE dense checkpoint has ``modules.json`` and ``1_Pooling/config.json``
instead of the head files; it loads as a dense-only encoder with the pooling it declares.
m3kit also writes ``m3kit.json`` (pooling, query instruction, max length) next to its checkpoints.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3kit.errors import CheckpointError

__all__ = [
    "COLBERT_FILE",
    "DEFAULT_MODEL",
    "M3KIT_CONFIG_FILE",
    "SPARSE_FILE",
    "CheckpointInfo",
    "CheckpointKind",
    "Pooling",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "BAAI/bge-m3"
COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"
M3KIT_CONFIG_FILE = "m3kit.json"
_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "spiece.model")
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


class CheckpointKind(str, enum.Enum):
    """What a checkpoint can produce."""

    M3 = "m3"  # dense + sparse + ColBERT
    DENSE = "dense"  # dense only (BGE / sentence-transformers)


class Pooling(str, enum.Enum):
    """How a dense vector is pooled from token states."""

    CLS = "cls"
    MEAN = "mean"


@dataclass(frozen=True)
class CheckpointInfo:
    """A validated checkpoint folder.

    Attributes:
        path: Local folder holding the files.
        kind: M3 (three heads) or dense-only.
        pooling: Pooling of the dense head.
        max_length: Longest input the checkpoint declares (None when it declares none).
        query_instruction: Query prefix stored with the checkpoint (m3kit.json), if any.
    """

    path: Path
    kind: CheckpointKind
    pooling: Pooling
    max_length: int | None
    query_instruction: str | None

    @property
    def colbert_file(self) -> Path:
        return self.path / COLBERT_FILE

    @property
    def sparse_file(self) -> Path:
        return self.path / SPARSE_FILE


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def _download(repo_id: str) -> Path:
    """Fetch a hub repository (only when ``repo_id`` is not a local folder)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with transformers
        raise CheckpointError(
            f"{repo_id!r} is not a local folder and huggingface_hub is missing"
        ) from e
    try:
        return Path(
            snapshot_download(
                repo_id=repo_id,
                ignore_patterns=[
                    "flax_model.msgpack",
                    "rust_model.ot",
                    "tf_model.h5",
                    "onnx/*",
                    "*.onnx",
                    "imgs/*",
                ],
            )
        )
    except Exception as e:
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and downloading it from the Hugging Face hub "
            f"failed ({type(e).__name__}: {e}). Pass the path of a local copy of the checkpoint."
        ) from e


def _st_pooling(path: Path) -> Pooling | None:
    """Pooling declared by a sentence-transformers checkpoint, or None when there is none."""
    pooling_dir = path / "1_Pooling"
    modules = path / "modules.json"
    if modules.is_file():
        raw = json.loads(modules.read_text(encoding="utf-8"))
        for module in raw if isinstance(raw, list) else []:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_dir = path / str(module.get("path", "1_Pooling"))
    cfg_file = pooling_dir / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = _read_json(cfg_file)
    if cfg.get("pooling_mode_cls_token"):
        return Pooling.CLS
    if cfg.get("pooling_mode_mean_tokens"):
        return Pooling.MEAN
    mode = cfg.get("pooling_mode")
    if mode in ("cls", "mean"):
        return Pooling(mode)
    raise CheckpointError(
        f"{cfg_file} declares a pooling m3kit does not support (only CLS and mean): {cfg}"
    )


def _max_length(path: Path) -> int | None:
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = _read_json(st_cfg).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    cfg = path / "config.json"
    value = _read_json(cfg).get("max_position_embeddings")
    if isinstance(value, int) and value > 0:
        # XLM-RoBERTa / RoBERTa reserve padding_idx + 1 positions.
        offset = 2 if _read_json(cfg).get("model_type") in ("xlm-roberta", "roberta") else 0
        return value - offset
    return None


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str], *, pooling: Pooling | str | None = None
) -> CheckpointInfo:
    """Locate and validate a checkpoint.

    Args:
        name_or_path: A local folder, or a Hugging Face hub id (downloaded only when online and
            when no such local folder exists).
        pooling: Force the dense pooling (needed by a plain transformers folder).

    Raises:
        CheckpointError: the folder, its weights, tokenizer, or one of the two M3 head files is
            missing; the message names what is missing.
    """
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if not path.exists():
        # Only an ``org/name`` string that is not a local folder is taken as a hub id.
        if raw.startswith((".", "/", "~")) or raw.count("/") != 1:
            raise CheckpointError(f"checkpoint folder {raw!r} does not exist")
        path = _download(raw)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {raw!r} is not a folder")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json: not a transformers checkpoint")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(
            f"{path} has no model weights (expected one of {list(_WEIGHT_FILES)})"
        )
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{path} has no tokenizer (expected one of {list(_TOKENIZER_FILES)})")

    m3_cfg = _read_json(path / M3KIT_CONFIG_FILE) if (path / M3KIT_CONFIG_FILE).is_file() else {}
    has_colbert = (path / COLBERT_FILE).is_file()
    has_sparse = (path / SPARSE_FILE).is_file()
    if has_colbert != has_sparse:
        missing = SPARSE_FILE if has_colbert else COLBERT_FILE
        raise CheckpointError(
            f"{path} is an M3 checkpoint with {missing} missing; m3kit never random-initialises "
            f"a head. Restore {missing}, or load the checkpoint as dense-only from a folder "
            f"without either head file."
        )
    if pooling is not None:
        chosen = Pooling(pooling)
    elif "pooling" in m3_cfg:
        chosen = Pooling(m3_cfg["pooling"])
    elif has_colbert:
        chosen = Pooling.CLS  # BGE-M3 pools with CLS
    else:
        found = _st_pooling(path)
        if found is None:
            raise CheckpointError(
                f"{path} is neither an M3 checkpoint ({COLBERT_FILE} and {SPARSE_FILE} missing) "
                f"nor a sentence-transformers one (1_Pooling/config.json missing). Pass "
                f"pooling='cls' or 'mean' to load it as a dense-only encoder."
            )
        chosen = found
    kind = CheckpointKind.M3 if has_colbert else CheckpointKind.DENSE
    max_length = m3_cfg.get("max_length") or _max_length(path)
    instruction = m3_cfg.get("query_instruction")
    logger.debug(
        "checkpoint %s: kind=%s pooling=%s max_length=%s",
        path,
        kind.value,
        chosen.value,
        max_length,
    )
    return CheckpointInfo(
        path=path, kind=kind, pooling=chosen, max_length=max_length, query_instruction=instruction
    )
