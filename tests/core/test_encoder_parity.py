"""The encoder equals the references: FlagEmbedding for M3, sentence-transformers for MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder

MIXED_BATCH = [
    "What is the capital of Germany?",
    "Berlin is the capital and largest city of Germany by both area and population.",
    "北京是中华人民共和国的首都。",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习并改进。" * 3,
    "Late chunking embeds the whole document once and pools token vectors per chunk. " * 6,
    "short",
    "",
    "   ",
    "Emoji 🙂 and symbols ★ ✓ → mixed with 中文 and English.",
]


def _flag_outputs(path: Path, texts: list[str]) -> dict:  # type: ignore[type-arg]
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(path), devices="cpu", use_fp16=False)
    return model.encode(  # type: ignore[no-any-return]
        texts,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
        max_length=512,
        batch_size=4,
    )


@pytest.mark.parametrize("fixture", ["tiny_m3_path", "tiny_m3_xlmr_path"])
def test_m3_matches_flagembedding(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    ours = M3Encoder.from_pretrained(path, dtype="fp32", batch_size=3).encode(
        MIXED_BATCH, max_length=512
    )
    ref = _flag_outputs(path, MIXED_BATCH)

    np.testing.assert_allclose(ours.dense, ref["dense_vecs"], atol=1e-5)
    assert ours.dense.dtype == np.float32
    assert ours.dense.shape == (len(MIXED_BATCH), 32)

    for i, (mine, theirs) in enumerate(zip(ours.sparse, ref["lexical_weights"], strict=True)):
        their_ids = sorted(int(k) for k in theirs)
        assert mine.indices.tolist() == their_ids, f"token ids differ for text {i}"
        np.testing.assert_allclose(
            mine.values, [float(theirs[str(k)]) for k in their_ids], atol=1e-5
        )
        assert mine.values.dtype == np.float32
        assert np.all(mine.values > 0)

    for mine, theirs in zip(ours.colbert, ref["colbert_vecs"], strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_xlmr_vocab_ids_are_bge_m3_ids(tiny_m3_xlmr_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    assert enc.vocab_size == 250002
    # "▁Berlin" is id 10532 in XLM-RoBERTa / BGE-M3's vocabulary.
    ids = enc.tokenize(["Berlin"])[0].input_ids
    assert ids[0] == 0 and ids[-1] == 2
    assert enc.tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["▁Berlin"]  # type: ignore[attr-defined]
    out = enc.encode(["Berlin Berlin"], heads=["sparse"])
    assert set(out.sparse[0].indices.tolist()) <= set(ids[1:-1])


def test_minilm_matches_sentence_transformers(minilm_path: Path, minilm_encoder: M3Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [t for t in MIXED_BATCH if t.strip()] + ["A man is playing a guitar."]
    ref = SentenceTransformer(str(minilm_path), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )
    ours = minilm_encoder.encode(texts)
    np.testing.assert_allclose(ours.dense, ref, atol=1e-5)
    assert ours.heads == frozenset({"dense"})  # type: ignore[comparison-overlap]


def test_minilm_paraphrase_beats_unrelated(minilm_encoder: M3Encoder) -> None:
    out = minilm_encoder.encode(
        [
            "A man is playing a guitar.",
            "Someone plays an acoustic guitar.",
            "The stock market fell sharply on Monday.",
        ]
    )
    sims = out.dense @ out.dense.T
    assert sims[0, 1] > sims[0, 2] + 0.3


def test_sparse_and_colbert_are_consistent_with_tokens(tiny_encoder: M3Encoder) -> None:
    out = tiny_encoder.encode(["hello world hello", "北京 上海"])
    for i, text in enumerate(["hello world hello", "北京 上海"]):
        ids = tiny_encoder.tokenize([text])[0].input_ids
        # ColBERT: every token but CLS (the trailing </s> kept, as FlagEmbedding does).
        assert out.colbert[i].shape == (len(ids) - 1, 32)
        np.testing.assert_allclose(np.linalg.norm(out.colbert[i], axis=1), 1.0, atol=1e-5)
        assert set(out.sparse[i].indices.tolist()) <= set(ids) - {0, 1, 2, 3}
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
