"""Find, validate and describe checkpoints: BGE-M3 layout and sentence-transformers dense models.

BGE-M3 layout (as written by FlagEmbedding and published as ``BAAI/bge-m3``)::

    config.json, model.safetensors (or pytorch_model.bin)   transformers backbone
    tokenizer.json / sentencepiece.bpe.model + configs      tokenizer
    colbert_linear.pt                                       ColBERT head state dict
    sparse_linear.pt                                        sparse head state dict

A sentence-transformers / BGE dense checkpoint has ``modules.json`` and ``1_Pooling/config.json``
instead of the head files; it loads as a dense-only encoder with the pooling it declares.
m3kit also writes ``m3kit.json`` (pooling, query instruction, max length) next to its checkpoints.

sentence-transformers layouts m3kit reproduces exactly (anything else is a
:class:`~m3kit.errors.CheckpointError` naming what it cannot reproduce):

- ``modules.json``: ``Transformer`` (at the folder root) → ``Pooling`` → optional ``Normalize``.
  Any other module (``Dense``, ``LayerNorm``, ``Router``, ...) is refused.
- ``1_Pooling/config.json``: one pooling mode, ``cls``, ``mean`` or ``max`` (both the
  ``pooling_mode`` key and the legacy ``pooling_mode_*`` flags). ``mean_sqrt_len_tokens`` loads
  as ``mean``: it only rescales each vector, which the L2 normalisation below removes.
  ``weightedmean``, ``lasttoken``, several modes at once and ``include_prompt: false`` are
  refused; so is ``do_lower_case: true`` in ``sentence_bert_config.json``.
- ``config_sentence_transformers.json``: a ``query`` prompt is the query instruction (what
  ``encode_query`` adds; ``m3kit.json``'s, when it names one, wins). A document prompt
  (``document`` / ``passage`` / ``corpus``, what ``encode_document`` adds) or a
  ``default_prompt_name`` (a prompt on every text) is refused: m3kit prefixes queries only.
- Normalisation: m3kit's dense vectors are always L2-normalised (the contract of
  :attr:`~m3kit.outputs.M3Output.dense`, the dot-product scoring and the cosine Qdrant
  collections). With a ``Normalize`` module that equals sentence-transformers' output; without
  one, sentence-transformers returns unnormalised vectors and m3kit logs a warning at load time
  that it normalises them (cosine instead of the model's raw dot product).
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3kit.errors import CheckpointError
from m3kit.st_layout import read_json as _read_json
from m3kit.st_layout import st_layout, st_query_prompt

__all__ = [
    "COLBERT_FILE",
    "DEFAULT_MODEL",
    "M3KIT_CONFIG_FILE",
    "M3KIT_CONFIG_FORMAT",
    "PEFT_ADAPTER_FILES",
    "SAVING_FILE",
    "SEARCH_FILE",
    "SPARSE_FILE",
    "CheckpointInfo",
    "CheckpointKind",
    "Pooling",
    "holds_checkpoint",
    "position_limit",
    "refuse_peft_adapter",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "BAAI/bge-m3"
COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"
M3KIT_CONFIG_FILE = "m3kit.json"
#: The search calibration measured for the checkpoint's weights (m3kit.store.fusion_calibration).
SEARCH_FILE = "m3kit_search.json"
#: Present while m3kit writes a checkpoint (:meth:`m3kit.model.M3Model.save`): a folder still
#: holding it is a save that did not finish, whose files may mix two models.
SAVING_FILE = "m3kit.saving"
#: The files of a PEFT (LoRA, ...) adapter, as ``PeftModel.save_pretrained`` writes them. With
#: ``adapter_config.json`` in a folder, transformers (peft installed) loads the base model it
#: names with the adapter applied, not the folder's own weights: such a folder is refused on
#: load (:func:`refuse_peft_adapter`) and a save replaces these files with the checkpoint's.
PEFT_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "spiece.model")
#: Model types whose position ids start after the padding index (two rows reserved).
_PADDING_OFFSET_TYPES = (
    "xlm-roberta",
    "xlm-roberta-xl",
    "roberta",
    "roberta-prelayernorm",
    "camembert",
    "mpnet",
    "data2vec-text",
    "xmod",
)
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

    CLS = "cls"  # the first token's state
    MEAN = "mean"  # mean of the token states (padding masked)
    MAX = "max"  # element-wise max of the token states (padding masked)


@dataclass(frozen=True)
class CheckpointInfo:
    """A validated checkpoint folder.

    Attributes:
        path: Local folder holding the files.
        kind: M3 (three heads) or dense-only.
        pooling: Pooling of the dense head.
        max_length: Longest input the checkpoint declares (None when it declares none).
        query_instruction: Query prefix stored with the checkpoint (m3kit.json, else the
            ``query`` prompt of ``config_sentence_transformers.json``), if any.
        declares_normalize: Whether ``modules.json`` ends with a ``Normalize`` module (None
            when the folder has no ``modules.json``). Dense vectors are L2-normalised either way.
    """

    path: Path
    kind: CheckpointKind
    pooling: Pooling
    max_length: int | None
    query_instruction: str | None
    declares_normalize: bool | None = None

    @property
    def colbert_file(self) -> Path:
        return self.path / COLBERT_FILE

    @property
    def sparse_file(self) -> Path:
        return self.path / SPARSE_FILE


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


def _max_length(path: Path) -> int | None:
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = _read_json(st_cfg).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return position_limit(path)


def _held_length(path: Path, declared: int | None, m3_cfg: dict[str, Any]) -> int | None:
    """``declared`` capped at what the position embeddings hold, with a warning naming the
    file that declares more (past them a forward pass fails with a bare index error)."""
    positions = position_limit(path)
    if declared is None or positions is None or declared <= positions:
        return declared
    source = M3KIT_CONFIG_FILE if m3_cfg.get("max_length") else "sentence_bert_config.json"
    logger.warning(
        "%s declares a max length of %d tokens (%s) but its position embeddings hold %d "
        "(config.json max_position_embeddings): texts are truncated at %d",
        path,
        declared,
        source,
        positions,
        positions,
    )
    return positions


def _bge_m3_backbone(path: Path) -> bool:
    """Whether ``config.json`` describes BGE-M3's backbone (XLM-RoBERTa-large, 8,194 position
    rows: multilingual-e5-large and XLM-R itself have 514)."""
    cfg = _read_json(path / "config.json")
    return (
        cfg.get("model_type") == "xlm-roberta"
        and cfg.get("hidden_size") == 1024
        and cfg.get("num_hidden_layers") == 24
        and cfg.get("max_position_embeddings") == 8194
    )


def position_limit(path: Path) -> int | None:
    """The longest input the backbone's position embeddings hold (``config.json``'s
    ``max_position_embeddings``, less the two positions RoBERTa-style models reserve), or
    ``None`` when it declares none. It may exceed what the checkpoint declares as its length
    (all-MiniLM-L6-v2: 256 declared, 512 positions)."""
    cfg = _read_json(path / "config.json")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        return None  # rotary / ALiBi / relative positions: no table that ends there
    value = cfg.get("max_position_embeddings")
    if isinstance(value, int) and value > 0:
        # RoBERTa-style position ids start after padding_idx: two positions are reserved.
        offset = 2 if cfg.get("model_type") in _PADDING_OFFSET_TYPES else 0
        return value - offset
    return None


#: The ``m3kit.json`` format this version writes and reads (a newer one is refused, not
#: half-read).
M3KIT_CONFIG_FORMAT = 1


def _m3kit_config(cfg_file: Path) -> dict[str, Any]:
    """``m3kit.json``'s settings, each checked (``{}`` when the folder has none).

    Raises:
        CheckpointError: A value m3kit did not write: ``pooling`` not one of ``cls``,
            ``mean``, ``max``; ``max_length`` not null or an integer >= 2;
            ``query_instruction`` not null or a string, ``format_version`` newer than
            :data:`M3KIT_CONFIG_FORMAT` (the message names file and field).
    """
    if not cfg_file.is_file():
        return {}
    cfg = _read_json(cfg_file)
    version = cfg.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{cfg_file}: format_version must be an integer >= 1, not {version!r}"
        )
    if version > M3KIT_CONFIG_FORMAT:
        raise CheckpointError(
            f"{cfg_file}: format_version {version} was written by a newer m3kit (this one "
            f"reads up to {M3KIT_CONFIG_FORMAT}); upgrade m3kit to load this checkpoint"
        )
    pooling = cfg.get("pooling")
    if pooling is not None and pooling not in [p.value for p in Pooling]:
        raise CheckpointError(
            f"{cfg_file}: pooling must be one of cls, mean, max (or absent), not {pooling!r}"
        )
    length = cfg.get("max_length")
    if length is not None and (
        isinstance(length, bool) or not isinstance(length, int) or length < 2
    ):
        raise CheckpointError(
            f"{cfg_file}: max_length must be an integer >= 2 (or null: the model's own "
            f"limit), not {length!r}"
        )
    instruction = cfg.get("query_instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise CheckpointError(
            f"{cfg_file}: query_instruction must be a string (or null: none), not {instruction!r}"
        )
    return cfg


def _refuse_unfinished_save(path: Path) -> None:
    """Refuse a folder m3kit was writing a checkpoint into when the save stopped.

    Raises:
        CheckpointError: :data:`SAVING_FILE` is in ``path`` (names it and what to do).
    """
    if (path / SAVING_FILE).exists():
        raise CheckpointError(
            f"{path} holds an m3kit save that did not finish ({SAVING_FILE} is there: the "
            f"run was stopped or failed while writing the checkpoint), so its files may be "
            f"missing or mix two models (say, new weights with an earlier pooling). Save the "
            f"model again (rerun the fine-tune); delete {path / SAVING_FILE} only if you know "
            f"every file is complete. A .m3kit-old-* folder in it (a save killed while "
            f"swapping its files in) holds the earlier checkpoint's files the swap had moved "
            f"out, the others are still here: moving that folder's files back (over new ones "
            f"of the same name) restores the earlier checkpoint, before any new save"
        )


def holds_checkpoint(path: Path) -> bool:
    """Whether the folder ``path`` holds a model checkpoint a save may replace.

    That is ``config.json`` with model weights (a transformers checkpoint, valid or not), a
    PEFT adapter (:data:`PEFT_ADAPTER_FILES`), or a save m3kit did not finish
    (:data:`SAVING_FILE`). A folder of other files (an application's ``config.json`` and
    ``vocab.txt``) is none: a save there would replace those files.
    """
    if (path / SAVING_FILE).exists() or (path / PEFT_ADAPTER_FILES[0]).is_file():
        return True
    return (path / "config.json").is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def refuse_peft_adapter(path: Path) -> None:
    """Refuse a folder holding a PEFT adapter (its ``adapter_config.json``).

    transformers applies an ``adapter_config.json`` it finds on load (peft installed): the
    model served would be the base model that file names plus the adapter, not the weights
    the folder holds, and a model trained from it would save as an adapter only. m3kit
    loads full checkpoints only. Adapter weights without that file are not applied: they
    load (and a save replaces them).

    Raises:
        CheckpointError: Names the adapter files and how to make a full checkpoint of them.
    """
    if (path / PEFT_ADAPTER_FILES[0]).is_file():
        found = [name for name in PEFT_ADAPTER_FILES if (path / name).is_file()]
        raise CheckpointError(
            f"{path} holds a PEFT adapter ({', '.join(found)}): transformers would load it "
            f"over the base model adapter_config.json names instead of this folder's weights, "
            f"so m3kit does not load it. Merge the adapter into its base model (peft's "
            f"model.merge_and_unload()) and save that full checkpoint (save_pretrained, or "
            f"M3Model.save), or move the adapter files out if they are left over from another "
            f"model"
        )


def _refuse_unreadable_files(path: Path) -> None:
    """Refuse, before anything is loaded, a checkpoint file that is a broken link or a Git
    LFS pointer: a broken link read as a missing file (a folder "without config.json"; both
    head files dangling loaded a dense-only model without a word), and a tokenizer that is
    a pointer failed as "Expecting value: line 1 column 1" before the weights' pointer check.

    Raises:
        CheckpointError: Names the file and what to do.
    """
    from m3kit.heads import refuse_git_lfs_pointer

    names = ("config.json", *_WEIGHT_FILES, *_TOKENIZER_FILES, COLBERT_FILE, SPARSE_FILE)
    for name in names:
        file = path / name
        if file.is_symlink() and not file.exists():
            raise CheckpointError(
                f"{file} is a broken link (to {os.readlink(file)}): the folder was copied "
                "without the files its links point to (a Hugging Face cache snapshot copied "
                "with `cp -r`: copy it with `cp -rL`, or load the snapshot in its cache)"
            )
        if name in _TOKENIZER_FILES and file.is_file():  # (the weights: where they load)
            refuse_git_lfs_pointer(file)


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
            missing (the message names what is missing), ``m3kit.json`` holds a value m3kit
            does not write (it names the field), or the folder holds a PEFT adapter
            (:func:`refuse_peft_adapter`: transformers would apply it on load).
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
    # absolute: a relative folder, read again after the working directory changed (a
    # notebook's %cd), named another folder: every fingerprint check said the files changed
    path = path.absolute()
    _refuse_unfinished_save(path)
    refuse_peft_adapter(path)
    _refuse_unreadable_files(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json: not a transformers checkpoint")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(
            f"{path} has no model weights (expected one of {list(_WEIGHT_FILES)})"
        )
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{path} has no tokenizer (expected one of {list(_TOKENIZER_FILES)})")

    m3_cfg = _m3kit_config(path / M3KIT_CONFIG_FILE)
    has_colbert = (path / COLBERT_FILE).is_file()
    has_sparse = (path / SPARSE_FILE).is_file()
    if has_colbert != has_sparse:
        missing = SPARSE_FILE if has_colbert else COLBERT_FILE
        raise CheckpointError(
            f"{path} is an M3 checkpoint with {missing} missing; m3kit never random-initialises "
            f"a head. Restore {missing}, or load the checkpoint as dense-only from a folder "
            f"without either head file."
        )
    st = st_layout(path)
    if pooling is not None:
        chosen = Pooling(pooling)
    elif m3_cfg.get("pooling") is not None:
        chosen = Pooling(m3_cfg["pooling"])
    elif has_colbert:
        # BGE-M3 pools with CLS (and says so in 1_Pooling); a folder whose 1_Pooling says
        # otherwise (an m3kit checkpoint that lost m3kit.json, another tool's) is taken at
        # its word, as sentence-transformers would
        chosen = Pooling(st.pooling or Pooling.CLS)
    else:
        if st.pooling is None:
            raise CheckpointError(
                f"{path} is neither an M3 checkpoint ({COLBERT_FILE} and {SPARSE_FILE} missing) "
                f"nor a sentence-transformers one (1_Pooling/config.json missing). Pass "
                f"pooling='cls', 'mean' or 'max' to load it as a dense-only encoder."
            )
        chosen = Pooling(st.pooling)
    kind = CheckpointKind.M3 if has_colbert else CheckpointKind.DENSE
    if kind is CheckpointKind.DENSE and _bge_m3_backbone(path):
        logger.warning(
            "%s has BGE-M3's backbone (XLM-RoBERTa-large with 8,192 positions) but neither %s "
            "nor %s: it loads dense-only (sparse and ColBERT unavailable). A partial copy of "
            "BAAI/bge-m3? Fetch both files for all three heads",
            path,
            COLBERT_FILE,
            SPARSE_FILE,
        )
    if st.normalize is False:
        logger.warning(
            "%s has no Normalize module: sentence-transformers returns its dense vectors "
            "unnormalised, m3kit L2-normalises them (scores are cosine similarities, not the "
            "model's raw dot products)",
            path,
        )
    max_length = _held_length(path, m3_cfg.get("max_length") or _max_length(path), m3_cfg)
    instruction = m3_cfg.get("query_instruction")
    prompt = st_query_prompt(path)  # validated even when m3kit.json names the instruction
    if instruction is None:
        instruction = prompt
    logger.debug(
        "checkpoint %s: kind=%s pooling=%s max_length=%s",
        path,
        kind.value,
        chosen.value,
        max_length,
    )
    return CheckpointInfo(
        path=path,
        kind=kind,
        pooling=chosen,
        max_length=max_length,
        query_instruction=instruction,
        declares_normalize=st.normalize,
    )
