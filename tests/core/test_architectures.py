"""Dense-only loading of sentence-transformers checkpoints for every encoder family we claim.

Each test checkpoint is a tiny random backbone (hidden 32, 2 layers) of one architecture with the
tiny M3 tokenizer, saved by sentence-transformers itself (Transformer -> Pooling -> Normalize),
so m3kit is compared against sentence-transformers on exactly the files it wrote.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import CheckpointError, CheckpointKind, M3Encoder, Pooling
from m3kit.checkpoint import resolve_checkpoint

pytest.importorskip("sentence_transformers")

ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "modernbert")
POOLINGS = ("cls", "mean", "max")
# different lengths in one batch: padding must not leak into any pooling
TEXTS = [
    "short",
    "The quick brown fox jumps over the lazy dog.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Late chunking embeds the whole document once and pools token vectors per chunk. " * 3,
    "Qdrant stores named dense vectors.",
]
_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
_SMALL_FFN = {**_SMALL, "intermediate_size": 64}
_IDS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


def _config(arch: str, vocab_size: int) -> Any:
    import transformers as tf

    if arch == "bert":
        return tf.BertConfig(vocab_size=vocab_size, max_position_embeddings=128, **_SMALL_FFN)
    if arch in ("roberta", "xlm-roberta"):
        cls = tf.RobertaConfig if arch == "roberta" else tf.XLMRobertaConfig
        return cls(
            vocab_size=vocab_size,
            max_position_embeddings=130,
            type_vocab_size=1,
            **_SMALL_FFN,
            **_IDS,
        )
    if arch == "distilbert":
        return tf.DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=128,
            pad_token_id=1,
        )
    if arch == "mpnet":
        return tf.MPNetConfig(
            vocab_size=vocab_size,
            max_position_embeddings=130,
            **_SMALL_FFN,
            **_IDS,
        )
    assert arch == "modernbert"
    return tf.ModernBertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=128,
        local_attention=16,  # shorter than the longest text: local and global layers both run
        global_attn_every_n_layers=2,
        cls_token_id=0,
        sep_token_id=2,
        **_SMALL_FFN,
        **_IDS,
    )


@pytest.fixture(scope="module")
def backbones(tiny_m3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random backbone + tokenizer folder per architecture (plain transformers layout)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_m3_path))
    root = tmp_path_factory.mktemp("backbones")
    out: dict[str, Path] = {}
    for seed, arch in enumerate(ARCHITECTURES):
        torch.manual_seed(seed)
        model = AutoModel.from_config(_config(arch, len(tokenizer)))
        model.save_pretrained(str(root / arch))
        tokenizer.save_pretrained(str(root / arch))
        out[arch] = root / arch
    return out


def _st_checkpoint(backbone: Path, out: Path, pooling: str, *, normalize: bool = True) -> Path:
    """Save a sentence-transformers checkpoint (Transformer -> Pooling [-> Normalize])."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling as StPooling

    transformer = Transformer(str(backbone))
    modules = [transformer, StPooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def _st_embeddings(path: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    return np.asarray(st.encode(TEXTS, batch_size=8, convert_to_numpy=True), dtype=np.float32)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dense_equals_sentence_transformers(
    arch: str, pooling: str, backbones: dict[str, Path], tmp_path: Path
) -> None:
    path = _st_checkpoint(backbones[arch], tmp_path / "st", pooling)
    enc = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu", batch_size=2)
    assert enc.model.kind is CheckpointKind.DENSE and enc.model.pooling is Pooling(pooling)
    assert enc.available_heads == frozenset({"dense"})  # type: ignore[comparison-overlap]
    ours = enc.encode(TEXTS).dense
    lengths = {len(t.input_ids) for t in enc.tokenize(TEXTS)}
    assert len(lengths) == len(TEXTS)  # every text a different length: padding everywhere

    np.testing.assert_allclose(ours, _st_embeddings(path), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("arch", "pooling"), [("bert", "mean"), ("distilbert", "max")])
def test_without_normalize_module_m3kit_still_normalises(
    arch: str,
    pooling: str,
    backbones: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """m3kit's dense vectors are always unit length (scoring and the cosine store rely on it).

    Without a Normalize module sentence-transformers returns raw vectors; m3kit returns the
    same directions, normalised, and says so at load time.
    """
    path = _st_checkpoint(backbones[arch], tmp_path / "st", pooling, normalize=False)
    with caplog.at_level(logging.WARNING, logger="m3kit.checkpoint"):
        enc = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu")
    assert enc.info is not None and enc.info.declares_normalize is False
    assert any("no Normalize module" in r.getMessage() for r in caplog.records)
    raw = _st_embeddings(path)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)  # really unnormalised
    ours = enc.encode(TEXTS).dense
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_mean_sqrt_len_loads_as_mean(backbones: dict[str, Path], tmp_path: Path) -> None:
    """sqrt-length mean only rescales each vector, which the L2 normalisation removes."""
    path = _st_checkpoint(backbones["mpnet"], tmp_path / "st", "mean_sqrt_len_tokens")
    info = resolve_checkpoint(path)
    assert info.pooling is Pooling.MEAN and info.declares_normalize is True
    ours = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu").encode(TEXTS).dense
    np.testing.assert_allclose(ours, _st_embeddings(path), atol=1e-5, rtol=0)


def test_max_pooling_survives_an_m3kit_save(backbones: dict[str, Path], tmp_path: Path) -> None:
    path = _st_checkpoint(backbones["roberta"], tmp_path / "st", "max")
    enc = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu")
    saved = enc.model.save(tmp_path / "saved", enc.tokenizer)
    (saved / "m3kit.json").unlink()  # read the pooling from the sentence-transformers files
    again = M3Encoder.from_pretrained(saved, dtype="fp32", device="cpu")
    assert again.model.pooling is Pooling.MAX
    np.testing.assert_allclose(again.encode(TEXTS).dense, enc.encode(TEXTS).dense, atol=1e-6)
    np.testing.assert_allclose(again.encode(TEXTS).dense, _st_embeddings(saved), atol=1e-5)


# -- what m3kit cannot reproduce is an error naming it ------------------------------------------
@pytest.fixture
def st_copy(backbones: dict[str, Path], tmp_path: Path) -> Path:
    return _st_checkpoint(backbones["bert"], tmp_path / "st", "mean")


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data = edit(data) or data
    path.write_text(json.dumps(data), encoding="utf-8")


def _set_pooling(st_copy: Path, **cfg: Any) -> None:
    (st_copy / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, **cfg}), encoding="utf-8"
    )


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"pooling_mode": "weightedmean"}, "pooling 'weightedmean'"),
        ({"pooling_mode": "lasttoken"}, "pooling 'lasttoken'"),
        ({"pooling_mode_lasttoken": True}, "pooling 'lasttoken'"),  # legacy flags
        ({"pooling_mode": ["cls", "mean"]}, r"concatenates the pooling modes \['cls', 'mean'\]"),
        ({"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}, "concatenates"),
        ({"pooling_mode": "mean", "include_prompt": False}, "include_prompt=False"),
        ({"pooling_mode": 3}, "pooling_mode must be"),
    ],
)
def test_unsupported_pooling_is_an_error_naming_it(
    st_copy: Path, cfg: dict[str, Any], match: str
) -> None:
    _set_pooling(st_copy, **cfg)
    with pytest.raises(CheckpointError, match=match):
        M3Encoder.from_pretrained(st_copy)


def test_legacy_flags_without_a_mode_mean_mean(st_copy: Path) -> None:
    _set_pooling(st_copy, pooling_mode_cls_token=False, pooling_mode_mean_tokens=False)
    assert resolve_checkpoint(st_copy).pooling is Pooling.MEAN  # sentence-transformers' default


def test_extra_module_is_an_error_naming_it(st_copy: Path) -> None:
    dense = {
        "idx": 3,
        "name": "3",
        "path": "3_Dense",
        "type": "sentence_transformers.models.Dense",
    }
    _edit_json(st_copy / "modules.json", lambda mods: mods.append(dense))
    with pytest.raises(CheckpointError, match=r"'sentence_transformers\.models\.Dense' module"):
        M3Encoder.from_pretrained(st_copy)


def test_module_order_and_transformer_folder_are_checked(st_copy: Path) -> None:
    modules = json.loads((st_copy / "modules.json").read_text(encoding="utf-8"))
    (st_copy / "modules.json").write_text(json.dumps(modules[1::-1]), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"\['Pooling', 'Transformer'\]"):
        resolve_checkpoint(st_copy)
    modules[0]["path"] = "0_Transformer"
    (st_copy / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    with pytest.raises(CheckpointError, match="Transformer module lives in '0_Transformer'"):
        resolve_checkpoint(st_copy)


def test_lower_casing_is_refused(st_copy: Path) -> None:
    (st_copy / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": True}), encoding="utf-8"
    )
    with pytest.raises(CheckpointError, match="do_lower_case"):
        resolve_checkpoint(st_copy)


@pytest.mark.parametrize(
    ("model_type", "match"),
    [
        ("clap_text_model", "model type 'clap_text_model' has no base model"),
        ("t5", "encoder-decoder model \\('t5'\\)"),
        ("not-a-transformers-model", "model_type 'not-a-transformers-model'"),
    ],
)
def test_model_type_without_a_base_model(st_copy: Path, model_type: str, match: str) -> None:
    (st_copy / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=match):
        M3Encoder.from_pretrained(st_copy)


def test_plain_folder_takes_max_pooling_by_hand(backbones: dict[str, Path], tmp_path: Path) -> None:
    plain = shutil.copytree(backbones["distilbert"], tmp_path / "plain")
    with pytest.raises(CheckpointError, match="pooling='cls', 'mean' or 'max'"):
        M3Encoder.from_pretrained(plain)
    enc = M3Encoder.from_pretrained(plain, pooling="max", dtype="fp32", device="cpu")
    assert enc.model.pooling is Pooling.MAX and enc.info is not None
    assert enc.info.declares_normalize is None
    np.testing.assert_allclose(np.linalg.norm(enc.encode(TEXTS).dense, axis=1), 1.0, atol=1e-5)
