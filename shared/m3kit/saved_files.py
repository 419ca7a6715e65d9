"""What :meth:`M3Model.save <m3kit.model.M3Model.save>` writes beside the weights, what it
replaces of a checkpoint already in the folder, and what it tells FlagEmbedding users (split
from :mod:`m3kit.model`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from m3kit.checkpoint import (
    COLBERT_FILE,
    M3KIT_CONFIG_FILE,
    PEFT_ADAPTER_FILES,
    SAVING_FILE,
    SEARCH_FILE,
    SPARSE_FILE,
    Pooling,
)

__all__ = [
    "checkpoint_files",
    "replaced_names",
    "warn_flagembedding_settings",
    "write_sentence_transformers_metadata",
]

logger = logging.getLogger("m3kit.model")  # the save's own messages, as before the split


#: The files a Hugging Face tokenizer is saved in and loaded from.
_SAVED_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


#: What :func:`write_sentence_transformers_metadata` writes beside the weights.
_ST_METADATA_NAMES = (
    "modules.json",
    "1_Pooling",
    "2_Normalize",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def replaced_names(folder: Path) -> set[str]:
    """The names a save into ``folder`` replaces: an earlier checkpoint's files there
    (:func:`checkpoint_files`) and every name the new checkpoint writes. A folder's other
    entries (notes, logs, a README) stay (:meth:`~m3kit.model.M3Model.save`)."""
    return checkpoint_files(folder) | set(_ST_METADATA_NAMES)


def warn_flagembedding_settings(out: Path, pooling: Pooling, query_instruction: str | None) -> None:
    """Warn of what FlagEmbedding's ``BGEM3FlagModel`` must be told to compute this
    checkpoint's vectors: it reads neither ``m3kit.json``'s pooling nor its query instruction
    (it pools with CLS and prefixes no query unless told; it has no max pooling at all)."""
    if pooling is Pooling.MAX:
        logger.warning(
            "%s pools with max, which FlagEmbedding's BGEM3FlagModel cannot (it pools with "
            "cls, mean or last_token only): load it with m3kit or sentence-transformers",
            out,
        )
    elif pooling is not Pooling.CLS:
        logger.warning(
            "%s pools with %s: FlagEmbedding's BGEM3FlagModel pools with CLS unless told, "
            "so load it there with BGEM3FlagModel(path, pooling_method=%r) for the same "
            "dense vectors",
            out,
            pooling.value,
            pooling.value,
        )
    if query_instruction:
        logger.warning(
            "%s prefixes queries with %r, which FlagEmbedding's BGEM3FlagModel does not read: "
            "give it query_instruction_for_retrieval=%r, query_instruction_format='{}{}' for "
            "the same query vectors",
            out,
            query_instruction,
            query_instruction,
        )


def checkpoint_files(folder: Path) -> set[str]:
    """The names in ``folder`` that belong to its checkpoint, not carried into a new save.

    Its weights (a sharded save's index and shards too: beside a new single file m3kit read
    the index first and failed on its missing shards), its head files (beside a dense-only
    save they loaded the old heads with the new backbone), its tokenizer files (another
    model's ``special_tokens_map.json`` made ``[PAD]`` / ``[CLS]`` the new tokenizer's padding
    and CLS tokens), its search calibration (measured on the old weights) and other libraries'
    exports of its weights: sentence-transformers' ``onnx/`` and ``openvino/`` folders (which
    BGE-M3 and many hub models ship), which ``SentenceTransformer(path, backend="onnx")``
    loads as they are, so beside new weights it served the old model; TensorFlow, Flax and
    rust-bert weights. A PEFT adapter's files
    (:data:`~m3kit.checkpoint.PEFT_ADAPTER_FILES`) too: transformers loaded the base model
    ``adapter_config.json`` names with that adapter instead of the new weights.
    """
    names = {
        "onnx",
        "openvino",
        # transformers' TensorFlow / Flax weights and rust-bert's (hub repos such as
        # all-MiniLM-L6-v2 ship them): those libraries would load the old model
        "tf_model.h5",
        "flax_model.msgpack",
        "rust_model.ot",
        "model.safetensors",
        "pytorch_model.bin",
        "config.json",
        "generation_config.json",
        COLBERT_FILE,
        SPARSE_FILE,
        M3KIT_CONFIG_FILE,
        SEARCH_FILE,
        SAVING_FILE,
        *PEFT_ADAPTER_FILES,
        *_SAVED_TOKENIZER_FILES,
    }
    for index_name in (
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        "tf_model.h5.index.json",
        "flax_model.msgpack.index.json",
    ):
        index = folder / index_name
        if index.is_file():
            try:
                shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            except (json.JSONDecodeError, AttributeError):
                shards = {}
            names.update(str(s) for s in shards.values())
            names.add(index_name)
    return names


def write_sentence_transformers_metadata(
    out: Path,
    hidden: int,
    pooling: Pooling,
    max_length: int | None,
    query_instruction: str | None = None,
) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    pool_cfg = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling is Pooling.CLS,
        "pooling_mode_mean_tokens": pooling is Pooling.MEAN,
        "pooling_mode_max_tokens": pooling is Pooling.MAX,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2), encoding="utf-8")
    # no declared length stays undeclared (null: sentence-transformers then takes the model's
    # own limit, as m3kit does from config.json); a made-up 512 would be read back as declared
    st_cfg = {"max_seq_length": max_length, "do_lower_case": False}
    (out / "sentence_bert_config.json").write_text(json.dumps(st_cfg, indent=2), encoding="utf-8")
    # always written, so no earlier model's prompts survive in the folder: sentence-
    # transformers' encode_query then adds the query instruction m3kit adds
    prompts = {"query": query_instruction} if query_instruction else {}
    st_model = {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (out / "config_sentence_transformers.json").write_text(
        json.dumps(st_model, indent=2), encoding="utf-8"
    )
