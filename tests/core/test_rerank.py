"""M3Reranker: pair scores equal FlagEmbedding's compute_score; each distinct text encoded once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.rerank import M3Reranker, PairScores, RerankConfig, RerankMode

QUERY = "What is the capital of Germany?"
PAIRS = [
    (QUERY, "Berlin is the capital and largest city of Germany by both area and population."),
    (QUERY, "short"),
    ("who?", "Late chunking embeds the whole document once and pools token vectors. " * 4),
    ("北京", "北京是中华人民共和国的首都。"),
    ("who?", ""),
    ("Emoji 🙂", "Emoji 🙂 and symbols ★ ✓ → mixed with 中文 and English."),
    (QUERY, "short"),  # a repeated pair
]
KEYS = {
    "dense": "dense",
    "sparse": "sparse",
    "colbert": "colbert",
    "sparse+dense": "sparse_dense",
    "colbert+sparse+dense": "m3",
}


@pytest.mark.parametrize("weights", [(0.4, 0.2, 0.4), (1.0, 0.3, 2.0)])
def test_scores_equal_flagembedding_compute_score(
    tiny_m3_path: Path, tiny_encoder: M3Encoder, weights: tuple[float, float, float]
) -> None:
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(tiny_m3_path), devices="cpu", use_fp16=False)
    ref = model.compute_score(PAIRS, weights_for_different_modes=list(weights))
    reranker = M3Reranker(tiny_encoder, RerankConfig(weights=weights, max_passage_length=512))
    ours = reranker.score_pairs(PAIRS)
    assert len(ours) == len(PAIRS)
    for key, attr in KEYS.items():
        mine = [getattr(s, attr) for s in ours]
        np.testing.assert_allclose(mine, ref[key], atol=1e-5, err_msg=key)
        np.testing.assert_allclose(mine, [s.get(key) for s in ours])


def test_truncation_lengths_match_flagembedding(
    tiny_m3_path: Path, tiny_encoder: M3Encoder
) -> None:
    from FlagEmbedding import BGEM3FlagModel

    long_query = "which city is the capital of which country in Europe " * 3
    pairs = [(long_query, "Berlin is the capital of Germany. " * 5)]
    model = BGEM3FlagModel(str(tiny_m3_path), devices="cpu", use_fp16=False)
    ref = model.compute_score(
        pairs, max_query_length=8, max_passage_length=12, weights_for_different_modes=[1, 1, 1]
    )
    config = RerankConfig(weights=(1, 1, 1), max_query_length=8, max_passage_length=12)
    (ours,) = M3Reranker(tiny_encoder, config).score_pairs(pairs)
    full = M3Reranker(tiny_encoder).score_pairs(pairs)[0]
    assert ours.colbert != pytest.approx(full.colbert, abs=1e-4)  # truncation did something
    for key, attr in KEYS.items():
        assert getattr(ours, attr) == pytest.approx(ref[key][0], abs=1e-5), key


def test_each_distinct_text_is_encoded_once(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], bool]] = []
    original = tiny_encoder.encode

    def spy(texts, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((list(texts), bool(kwargs.get("query"))))
        return original(texts, **kwargs)

    monkeypatch.setattr(tiny_encoder, "encode", spy)
    scores = M3Reranker(tiny_encoder).score_pairs(PAIRS)
    assert len(calls) == 2  # one batched call for the queries, one for the candidates
    queries, candidates = calls[0][0], calls[1][0]
    assert sorted(queries) == sorted({q for q, _ in PAIRS})
    assert sorted(candidates) == sorted({c for _, c in PAIRS})
    assert scores[1] == scores[-1]  # the repeated pair scores the same


def test_rerank_orders_by_mode_with_top_n(tiny_encoder: M3Encoder) -> None:
    candidates = ["Bees dance to tell where flowers are.", QUERY, "Oxygen is element 8."]
    for mode in RerankMode:
        reranker = M3Reranker(tiny_encoder, RerankConfig(mode=mode))
        ranked = reranker.rerank(QUERY, candidates)
        assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
        assert sorted(r.index for r in ranked) == [0, 1, 2]
        assert all(r.score == r.scores.get(mode) for r in ranked)
        top = reranker.rerank(QUERY, candidates, top_n=1)
        assert [r.index for r in top] == [ranked[0].index]
    # the query itself ranks first on the M3 score
    assert M3Reranker(tiny_encoder).rerank(QUERY, candidates)[0].index == 1


def test_query_instruction_is_opt_in(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", query_instruction="query: ")
    pair = [("capital of Germany", "Berlin is the capital of Germany.")]
    plain = M3Reranker(enc).score_pairs(pair)[0]
    instructed = M3Reranker(enc, RerankConfig(query_instruction=True)).score_pairs(pair)[0]
    manual = M3Reranker(enc).score_pairs([("query: capital of Germany", pair[0][1])])[0]
    assert instructed == manual
    assert instructed.sparse != pytest.approx(plain.sparse, abs=1e-3)


def test_dense_only_checkpoint(minilm_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match="needs the .*sparse"):
        M3Reranker(minilm_encoder)
    reranker = M3Reranker(minilm_encoder, RerankConfig(mode="dense"))
    ranked = reranker.rerank("a man plays guitar", ["A cat sleeps.", "A man is playing a guitar."])
    assert ranked[0].index == 1
    assert ranked[0].scores.sparse is None and ranked[0].scores.m3 is None
    with pytest.raises(ValueError, match="no 'colbert' score"):
        ranked[0].scores.get("colbert")


def test_bad_input_is_an_error(tiny_encoder: M3Encoder) -> None:
    reranker = M3Reranker(tiny_encoder)
    assert reranker.score_pairs([]) == []
    with pytest.raises(TypeError, match="wrap one pair"):
        reranker.score_pairs(("q", "c"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        reranker.score_pairs([("q", "c"), ("q", 3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single text"):
        reranker.score("q", "candidate")
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank("q", ["c"], top_n=0)
    for bad in [(1.0, 1.0), (-1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (float("nan"), 1.0, 1.0)]:
        with pytest.raises(ValueError, match="weights"):
            RerankConfig(weights=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_query_length"):
        RerankConfig(max_query_length=1)
    with pytest.raises(ValueError):
        RerankConfig(mode="best")  # type: ignore[arg-type]
    only_colbert = RerankConfig(weights=(0.0, 0.0, 1.0))
    scores = M3Reranker(tiny_encoder, only_colbert).score("q", ["c"])[0]
    assert isinstance(scores, PairScores) and scores.sparse_dense is None
    assert scores.m3 == pytest.approx(scores.colbert)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_reranker_refuses_a_blank_query(tiny_encoder: M3Encoder, text: str) -> None:
    reranker = M3Reranker(tiny_encoder)
    expected = re.escape(f"the query is empty ({text!r})")  # as M3Index.search
    with pytest.raises(ValueError, match=expected):
        reranker.rerank(text, [PAIRS[0][1], PAIRS[3][1]])
    with pytest.raises(ValueError, match=expected):
        reranker.score(text, [PAIRS[0][1], PAIRS[3][1]])
    assert len(reranker.rerank("rivers", [PAIRS[0][1], PAIRS[3][1]])) == 2


def test_a_length_past_the_encoders_is_refused_not_cut_there(tiny_m3_path: Path) -> None:
    """The encoder truncates every text to its own ``max_length``: a reranker asking for a
    longer ``max_passage_length`` (or ``max_query_length``) scored texts cut at the encoder's
    length instead, with no error (LangChain's ``M3Reranker(max_length=8,
    max_passage_length=100)`` ranked by the first 8 tokens). It is refused when built, naming
    both; the default query length is FlagEmbedding's 512, or the encoder's if shorter."""
    short = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=8)
    with pytest.raises(ValueError, match=r"max_passage_length=100 .*max_length 8"):
        M3Reranker(short, RerankConfig(max_passage_length=100))
    with pytest.raises(ValueError, match=r"max_query_length=512 .*max_length 8"):
        M3Reranker(short, RerankConfig(max_query_length=512))
    assert RerankConfig().max_query_length is None
    default = M3Reranker(short).score_pairs([("who? " * 20, "Berlin is a city. " * 20)])
    at_8 = RerankConfig(max_query_length=8, max_passage_length=8)
    assert default == M3Reranker(short, at_8).score_pairs(
        [("who? " * 20, "Berlin is a city. " * 20)]
    )


def test_rerank_lengths_take_numpy_integers_and_refuse_the_rest() -> None:
    """``RerankConfig(max_query_length=np.int64(64))`` was refused, though every other size
    setting takes a numpy integer as its value."""
    import numpy as np

    config = RerankConfig(max_query_length=np.int64(64), max_passage_length=np.int32(128))
    assert (config.max_query_length, config.max_passage_length) == (64, 128)
    assert type(config.max_query_length) is int
    for bad in (1, 2.5, "64", True):
        with pytest.raises(ValueError, match="max_query_length must be an integer >= 2"):
            RerankConfig(max_query_length=bad)  # type: ignore[arg-type]
