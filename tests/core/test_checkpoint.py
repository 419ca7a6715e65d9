"""Checkpoint loading: layouts, missing files, safe head loading."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from m3kit import CheckpointError, CheckpointKind, M3Encoder, Pooling
from m3kit.checkpoint import resolve_checkpoint


@pytest.fixture
def tiny_copy(tiny_m3_path: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_m3_path, dst)
    return dst


def test_m3_layout_detected(tiny_m3_path: Path) -> None:
    info = resolve_checkpoint(tiny_m3_path)
    assert info.kind is CheckpointKind.M3 and info.pooling is Pooling.CLS
    assert info.max_length == 8192


def test_sentence_transformers_layout_detected(minilm_path: Path) -> None:
    info = resolve_checkpoint(minilm_path)
    assert info.kind is CheckpointKind.DENSE and info.pooling is Pooling.MEAN
    assert info.max_length == 256


def test_unknown_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        M3Encoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        M3Encoder.from_pretrained("./not/a/model")


def test_hub_id_offline_names_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local copy"):
        resolve_checkpoint("BAAI/definitely-not-cached-m3kit")


@pytest.mark.parametrize("missing", ["colbert_linear.pt", "sparse_linear.pt"])
def test_missing_head_file_is_an_error_naming_it(tiny_copy: Path, missing: str) -> None:
    os.remove(tiny_copy / missing)
    with pytest.raises(CheckpointError, match=missing):
        M3Encoder.from_pretrained(tiny_copy)


def test_a_bge_m3_backbone_without_either_head_file_warns(
    tiny_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """BAAI/bge-m3 copied without colbert_linear.pt and sparse_linear.pt loaded dense-only
    with nothing said: a partial download passed until a head was asked for."""
    (tiny_copy / "colbert_linear.pt").unlink()
    (tiny_copy / "sparse_linear.pt").unlink()
    with caplog.at_level("WARNING", logger="m3kit.checkpoint"):
        assert resolve_checkpoint(tiny_copy).kind is CheckpointKind.DENSE  # a small backbone
    assert "BGE-M3's backbone" not in caplog.text
    cfg = json.loads((tiny_copy / "config.json").read_text())
    shape = {"hidden_size": 1024, "num_hidden_layers": 24, "max_position_embeddings": 8194}
    (tiny_copy / "config.json").write_text(json.dumps({**cfg, **shape}))
    with caplog.at_level("WARNING", logger="m3kit.checkpoint"):
        assert resolve_checkpoint(tiny_copy).kind is CheckpointKind.DENSE
    assert "has BGE-M3's backbone" in caplog.text and "A partial copy" in caplog.text


def test_missing_tokenizer(tiny_copy: Path) -> None:
    os.remove(tiny_copy / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer"):
        M3Encoder.from_pretrained(tiny_copy)


def test_missing_weights_and_config(tiny_copy: Path) -> None:
    os.remove(tiny_copy / "model.safetensors")
    with pytest.raises(CheckpointError, match="model weights"):
        M3Encoder.from_pretrained(tiny_copy)
    os.remove(tiny_copy / "config.json")
    with pytest.raises(CheckpointError, match="config.json"):
        M3Encoder.from_pretrained(tiny_copy)


def test_plain_backbone_needs_pooling(tiny_copy: Path) -> None:
    for name in ("colbert_linear.pt", "sparse_linear.pt", "modules.json", "m3kit.json"):
        os.remove(tiny_copy / name)
    shutil.rmtree(tiny_copy / "1_Pooling")
    with pytest.raises(CheckpointError, match="pooling='cls'"):
        M3Encoder.from_pretrained(tiny_copy)
    enc = M3Encoder.from_pretrained(tiny_copy, pooling="cls", dtype="fp32")
    assert enc.available_heads == frozenset({"dense"})  # type: ignore[comparison-overlap]


class _Payload:
    """Unpickling this would run ``os.system``: the classic malicious checkpoint."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch /tmp/m3kit-pwned",))


def test_pickle_payload_in_head_file_is_refused(tiny_copy: Path) -> None:
    marker = Path("/tmp/m3kit-pwned")
    marker.unlink(missing_ok=True)
    with open(tiny_copy / "colbert_linear.pt", "wb") as f:
        pickle.dump({"weight": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refusing to load"):
        M3Encoder.from_pretrained(tiny_copy)
    assert not marker.exists()


def test_torch_saved_payload_is_refused(tiny_copy: Path) -> None:
    torch.save({"weight": torch.zeros(32, 32), "evil": _Payload()}, tiny_copy / "sparse_linear.pt")
    with pytest.raises(CheckpointError, match="sparse_linear.pt"):
        M3Encoder.from_pretrained(tiny_copy)
    assert not Path("/tmp/m3kit-pwned").exists()


def test_head_shape_mismatch(tiny_copy: Path) -> None:
    torch.save(
        {"weight": torch.zeros(8, 16), "bias": torch.zeros(8)}, tiny_copy / "colbert_linear.pt"
    )
    with pytest.raises(CheckpointError, match="hidden size 32"):
        M3Encoder.from_pretrained(tiny_copy)


def test_save_round_trip(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    import numpy as np

    out = tiny_encoder.model.save(
        tmp_path / "saved", tiny_encoder.tokenizer, query_instruction="q: ", max_length=512
    )
    again = M3Encoder.from_pretrained(out, dtype="fp32")
    assert again.query_instruction == "q: " and again.max_length == 512
    texts = ["round trip", "北京"]
    a, b = tiny_encoder.encode(texts), again.encode(texts)
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
    assert a.sparse == b.sparse


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_a_save_tells_what_flagembedding_must_be_given(
    tiny_m3_path: Path, tmp_path: Path, pooling: str, caplog: pytest.LogCaptureFixture
) -> None:
    """BGEM3FlagModel reads neither the pooling nor the query instruction of m3kit.json: the
    save names the arguments it needs, and says it has no max pooling (the advice
    ``pooling_method='max'`` made its encode fail deep in its batch-size probe)."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", pooling=pooling)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="m3kit.model"):
        enc.model.save(tmp_path / "saved", enc.tokenizer, query_instruction="q: ")
    assert ("pooling_method='mean'" in caplog.text) is (pooling == "mean")
    assert ("cannot (it pools with cls, mean or last_token only)" in caplog.text) is (
        pooling == "max"
    )
    assert "pooling_method='max'" not in caplog.text
    assert "query_instruction_for_retrieval='q: ', query_instruction_format='{}{}'" in (caplog.text)
    caplog.clear()
    with caplog.at_level("WARNING", logger="m3kit.model"):
        enc.model.save(tmp_path / "plain", enc.tokenizer)
    assert "query_instruction_for_retrieval" not in caplog.text


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_m3_folder_without_m3kit_json_follows_its_1_pooling(
    tiny_m3_path: Path, tmp_path: Path, pooling: str, caplog: pytest.LogCaptureFixture
) -> None:
    # an m3kit checkpoint that lost m3kit.json (or another tool's M3 folder) pools as its
    # sentence-transformers 1_Pooling says, as sentence-transformers would; not always CLS
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", pooling=pooling)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="m3kit.model"):
        out = enc.model.save(tmp_path / "saved", enc.tokenizer)
    # FlagEmbedding pools with CLS unless told: saving a mean-pooled M3 model says how to load it
    told = "pooling_method='mean'" in caplog.text
    assert told is (pooling == "mean")
    (out / "m3kit.json").unlink()
    assert (out / "1_Pooling" / "config.json").is_file()
    info = resolve_checkpoint(out)
    assert info.kind is CheckpointKind.M3 and info.pooling is Pooling(pooling)


def test_save_without_a_length_declares_none(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    # a checkpoint saved without max_length used to get max_seq_length 512 in
    # sentence_bert_config.json, which reloading then read as its declared length
    out = tiny_encoder.model.save(tmp_path / "saved", tiny_encoder.tokenizer)
    again = resolve_checkpoint(out)
    config = json.loads((out / "config.json").read_text())
    assert again.max_length == config["max_position_embeddings"] - 2 != 512  # RoBERTa offset


def test_a_save_over_an_earlier_one_leaves_none_of_its_weights(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """A dense-only save over an M3 save kept the old head files (loaded with the new
    backbone); an earlier sharded save's index and shards survived beside the new file."""
    from m3kit.model import M3Model

    model, tok = tiny_encoder.model, tiny_encoder.tokenizer
    out = model.save(tmp_path / "out", tok)
    assert (out / "colbert_linear.pt").is_file()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"old shard")
    index = {"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))

    M3Model(model.backbone, model.pooling, None).save(out, tok)
    left = {p.name for p in out.iterdir()}
    assert not left & {"colbert_linear.pt", "sparse_linear.pt", "model.safetensors.index.json"}
    assert "model-00001-of-00002.safetensors" not in left
    dense_only = M3Encoder.from_pretrained(out, dtype="fp32")
    assert {h.value for h in dense_only.available_heads} == {"dense"}


def test_a_save_over_another_models_checkpoint_leaves_none_of_its_tokenizer_files(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """A BERT checkpoint's special_tokens_map.json / added_tokens.json stayed beside the new
    model's tokenizer, and loading took them: pad and CLS became [PAD] / [CLS], ids outside
    the new vocabulary (FlagEmbedding and sentence-transformers pad with them)."""
    from transformers import AutoTokenizer

    tok = tiny_encoder.tokenizer
    fresh = tiny_encoder.model.save(tmp_path / "fresh", tok)
    out = tmp_path / "out"
    out.mkdir()
    bert = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]"}
    (out / "special_tokens_map.json").write_text(json.dumps(bert))
    (out / "added_tokens.json").write_text(json.dumps({"[unused0]": 30522}))
    (out / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nriver\n")

    tiny_encoder.model.save(out, tok)
    assert {p.name for p in out.iterdir()} == {p.name for p in fresh.iterdir()}
    loaded = AutoTokenizer.from_pretrained(str(out))
    expected = AutoTokenizer.from_pretrained(str(fresh))
    assert (loaded.pad_token_id, loaded.cls_token_id, len(loaded)) == (
        expected.pad_token_id,
        expected.cls_token_id,
        len(expected),
    )
    text = ["a [CLS] river [PAD] [unused0]"]
    assert loaded(text)["input_ids"] == expected(text)["input_ids"]


def test_a_save_that_did_not_finish_leaves_no_half_written_checkpoint(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mean-pooled model's save stopped after its head files (killed, disk full) loaded as
    a CLS-pooled M3 checkpoint: m3kit.json and 1_Pooling were not written yet. Now nothing
    is left at the target (a killed save's folder is refused:
    tests/core/test_checkpoint_save.py)."""
    from m3kit.heads import M3Heads

    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", pooling="mean")
    write_heads = M3Heads.save

    def interrupted(self: M3Heads, folder: Path) -> None:
        write_heads(self, folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(M3Heads, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        enc.model.save(tmp_path / "out", enc.tokenizer)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(M3Heads, "save", write_heads)
    out = enc.model.save(tmp_path / "out", enc.tokenizer)  # saving again completes it
    assert resolve_checkpoint(out).pooling is Pooling.MEAN
    assert not (out / "m3kit.saving").exists()


def test_weight_files_follow_transformers_preference(tiny_copy: Path) -> None:
    """A single file wins over a sharded index beside it, as transformers loads it."""
    from m3kit.weights import weight_files

    (tiny_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "model-00001-of-00002.safetensors"}})
    )
    assert weight_files(tiny_copy)[0].name == "model.safetensors"
    M3Encoder.from_pretrained(tiny_copy)  # loads (the missing shard is not read)


@pytest.mark.parametrize(
    ("index_text", "message"),
    [
        ("{not json", r"is not a sharded checkpoint's index \(JSON with a weight_map\)"),
        ('{"metadata": {}}', "has no weight_map of tensor names to file names"),
        (
            "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n",
            "is a Git LFS pointer",
        ),
    ],
)
def test_a_damaged_shard_index_is_an_error_naming_it(
    tiny_copy: Path, index_text: str, message: str
) -> None:
    """A truncated ``model.safetensors.index.json`` (or a Git LFS pointer in its place) failed
    with a bare ``JSONDecodeError`` naming no file (or, for a pointer, the same decode error)."""
    (tiny_copy / "model.safetensors").rename(tiny_copy / "model-00001-of-00001.safetensors")
    index = tiny_copy / "model.safetensors.index.json"
    index.write_text(index_text)
    with pytest.raises(CheckpointError, match=message) as caught:
        M3Encoder.from_pretrained(tiny_copy)
    assert str(index) in str(caught.value)


@pytest.mark.parametrize(
    "index_text", ["{not json", "version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"]
)
def test_an_index_the_load_does_not_read_is_not_looked_at(tiny_copy: Path, index_text: str) -> None:
    """A stale ``pytorch_model.bin.index.json`` (damaged, or an LFS pointer) beside a whole
    ``model.safetensors``, which transformers loads first: the folder loads (the shard-index
    check must not refuse a file the load never reads)."""
    (tiny_copy / "pytorch_model.bin.index.json").write_text(index_text)
    assert M3Encoder.from_pretrained(tiny_copy).encode(["a river"]).dense.shape[0] == 1


def test_sentence_transformers_gets_the_query_instruction(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """sentence-transformers' encode_query adds the instruction m3kit adds; a later save
    without one leaves no prompt of the earlier model behind."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    out = tiny_encoder.model.save(
        tmp_path / "saved", tiny_encoder.tokenizer, query_instruction="q: ", max_length=64
    )
    ours = M3Encoder.from_pretrained(out, dtype="fp32")
    st = SentenceTransformer(str(out), device="cpu")
    queries = ["where is the river?", "北京"]
    np.testing.assert_allclose(
        st.encode_query(queries), ours.encode_queries(queries).dense, atol=1e-5
    )
    tiny_encoder.model.save(out, tiny_encoder.tokenizer, max_length=64)
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"] == {}


def test_sentence_transformers_query_prompt_is_the_query_instruction(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """A sentence-transformers checkpoint (no m3kit.json) declaring a query prompt gets it on
    its queries, as sentence-transformers' encode_query adds it (it added none)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    out = tiny_encoder.model.save(
        tmp_path / "st", tiny_encoder.tokenizer, query_instruction="q: ", max_length=64
    )
    (out / "m3kit.json").unlink()  # another tool's checkpoint: prompts in the ST config only
    ours = M3Encoder.from_pretrained(out, dtype="fp32")
    assert ours.query_instruction == "q: "
    st = SentenceTransformer(str(out), device="cpu")
    queries = ["where is the river?", "北京"]
    np.testing.assert_allclose(
        st.encode_query(queries), ours.encode_queries(queries).dense, atol=1e-5
    )


@pytest.mark.parametrize(
    ("prompts", "default", "match"),
    [
        ({"query": "q: ", "passage": "p: "}, None, "'passage' prompt"),
        ({"document": "d: "}, None, "'document' prompt"),
        ({"query": "q: "}, "query", "default_prompt_name='query'"),
    ],
)
def test_sentence_transformers_prompts_m3kit_cannot_add_are_refused(
    tiny_copy: Path, prompts: dict[str, str], default: str | None, match: str
) -> None:
    """A document prompt (encode_document) or a default prompt (every text) is refused: m3kit
    prefixes queries only, so its vectors would differ; empty prompts are no prompts."""
    cfg = {"prompts": prompts, "default_prompt_name": default}
    (tiny_copy / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        resolve_checkpoint(tiny_copy)
    empty = {"prompts": {"query": "", "document": ""}, "default_prompt_name": None}
    (tiny_copy / "config_sentence_transformers.json").write_text(json.dumps(empty))
    assert resolve_checkpoint(tiny_copy).query_instruction is None
