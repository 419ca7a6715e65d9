"""What a sentence-transformers checkpoint folder declares, validated: modules, pooling,
prompts (see :mod:`m3kit.checkpoint` for the layouts m3kit reproduces).

Apart from :mod:`m3kit.checkpoint` to keep each module short; pooling modes are returned by
name (:class:`~m3kit.checkpoint.Pooling`'s values), as that module imports this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3kit.errors import CheckpointError

__all__ = ["StLayout", "read_json", "st_layout", "st_query_prompt"]


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        CheckpointError: It is not valid JSON, or not an object.
    """
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


#: Legacy ``pooling_mode_*`` flags of ``1_Pooling/config.json`` -> sentence-transformers' modes.
_ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: sentence-transformers pooling modes m3kit computes; mean_sqrt_len_tokens is a per-vector
#: rescaling of mean, which the L2 normalisation of every dense vector removes.
_ST_POOLING_MODES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean",
}
_ST_MODULE_TYPES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class StLayout:
    """What a sentence-transformers folder declares: pooling and normalisation."""

    pooling: str | None  # a Pooling value (cls, mean, max); None: no pooling config
    normalize: bool | None  # None: no modules.json


def _st_modules(modules_file: Path) -> tuple[Path | None, bool]:
    """Validate ``modules.json``; return the pooling folder and whether it ends in Normalize."""
    try:
        raw = json.loads(modules_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{modules_file} is not valid JSON: {e}") from e
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise CheckpointError(f"{modules_file} must hold a JSON list of module objects")
    names = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in raw]
    for module, name in zip(raw, names, strict=True):
        if name not in _ST_MODULE_TYPES:
            raise CheckpointError(
                f"{modules_file} lists a {module.get('type')!r} module (path "
                f"{module.get('path')!r}) that m3kit cannot reproduce: it loads Transformer -> "
                f"Pooling -> optional Normalize only, so its dense vectors would differ from "
                f"sentence-transformers'"
            )
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise CheckpointError(
            f"{modules_file} lists the modules {names}; m3kit supports Transformer -> Pooling "
            f"-> optional Normalize, in that order"
        )
    transformer_path = str(raw[0].get("path", ""))
    if transformer_path not in ("", "."):
        raise CheckpointError(
            f"{modules_file}: the Transformer module lives in {transformer_path!r}; m3kit reads "
            f"the backbone from the checkpoint folder itself"
        )
    return modules_file.parent / str(raw[1].get("path", "1_Pooling")), len(names) == 3


def _st_pooling_mode(cfg_file: Path) -> str:
    """The single pooling mode a ``1_Pooling/config.json`` declares (both key formats), as
    m3kit computes it: ``cls``, ``mean`` or ``max``."""
    cfg = read_json(cfg_file)
    if "pooling_mode" in cfg:
        declared = cfg["pooling_mode"]
        modes = [declared] if isinstance(declared, str) else declared
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise CheckpointError(f"{cfg_file}: pooling_mode must be a name or a list of names")
    else:
        modes = [mode for key, mode in _ST_POOLING_FLAGS.items() if cfg.get(key)]
        modes = modes or ["mean"]  # sentence-transformers' default when no flag is set
    if len(modes) != 1:
        raise CheckpointError(
            f"{cfg_file} concatenates the pooling modes {modes}; m3kit supports exactly one of "
            f"cls, mean, max"
        )
    if modes[0] not in _ST_POOLING_MODES:
        raise CheckpointError(
            f"{cfg_file} declares pooling {modes[0]!r}, which m3kit does not support "
            f"(supported: cls, mean, max, mean_sqrt_len_tokens)"
        )
    if cfg.get("include_prompt", True) is not True:
        raise CheckpointError(
            f"{cfg_file} sets include_prompt={cfg['include_prompt']!r}: m3kit pools over the "
            f"whole input, query instruction included, so it cannot reproduce this model"
        )
    return _ST_POOLING_MODES[modes[0]]


#: The prompts sentence-transformers' ``encode_document`` adds (the first one present).
_ST_DOCUMENT_PROMPTS = ("document", "passage", "corpus")


def st_query_prompt(path: Path) -> str | None:
    """The ``query`` prompt ``config_sentence_transformers.json`` declares (None: none).

    Raises:
        CheckpointError: It declares a prompt for documents or a ``default_prompt_name``,
            which m3kit cannot add (it prefixes queries only).
    """
    cfg_file = path / "config_sentence_transformers.json"
    if not cfg_file.is_file():
        return None
    cfg = read_json(cfg_file)
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise CheckpointError(f"{cfg_file}: prompts must map names to strings")
    default = cfg.get("default_prompt_name")
    if default is not None and prompts.get(default):
        raise CheckpointError(
            f"{cfg_file} sets default_prompt_name={default!r}: sentence-transformers adds "
            f"{prompts[default]!r} to every text it encodes, m3kit adds an instruction to "
            f"queries only, so it cannot reproduce this model"
        )
    for name in _ST_DOCUMENT_PROMPTS:
        if prompts.get(name):
            raise CheckpointError(
                f"{cfg_file} declares the {name!r} prompt {prompts[name]!r}, which "
                f"sentence-transformers adds to documents: m3kit adds an instruction to "
                f"queries only, so its document vectors would differ from this model's"
            )
    return prompts.get("query") or None


def st_layout(path: Path) -> StLayout:
    """Pooling and normalisation a sentence-transformers checkpoint declares (validated)."""
    pooling_dir: Path | None = path / "1_Pooling"
    normalize: bool | None = None
    if (path / "modules.json").is_file():
        pooling_dir, normalize = _st_modules(path / "modules.json")
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file() and read_json(st_cfg).get("do_lower_case"):
        raise CheckpointError(
            f"{st_cfg} sets do_lower_case: sentence-transformers lower-cases every text before "
            f"tokenising, which m3kit does not do"
        )
    cfg_file = pooling_dir / "config.json" if pooling_dir is not None else None
    if cfg_file is None or not cfg_file.is_file():
        return StLayout(pooling=None, normalize=normalize)
    return StLayout(pooling=_st_pooling_mode(cfg_file), normalize=normalize)
