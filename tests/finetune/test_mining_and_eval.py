"""Hard-negative mining and per-head evaluation on the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.errors import HeadNotAvailableError
from m3kit.finetune import TrainingExample
from m3kit.finetune.evaluate import (
    RetrievalReport,
    _rank,
    comparison_table,
    evaluate_heads,
    score_matrix,
    write_report,
)
from m3kit.finetune.mining import MiningScore, mine_hard_negatives
from m3kit.outputs import Head
from m3kit.scoring import dense_score, maxsim, sparse_score

CORPUS = [f"Passage {i} about topic {i % 7} with words {i * 3} and {i * 5}." for i in range(40)]


@pytest.mark.parametrize("score", list(MiningScore))
def test_mined_negatives_respect_window_positives_and_seed(
    tiny_encoder: M3Encoder, score: MiningScore
) -> None:
    examples = [
        TrainingExample(f"question about topic {i}", (CORPUS[i], CORPUS[i + 7]), (CORPUS[39],))
        for i in range(6)
    ]
    mined = mine_hard_negatives(
        tiny_encoder, examples, CORPUS, num_negatives=4, rank_range=(2, 20), score=score, seed=1
    )
    again = mine_hard_negatives(
        tiny_encoder, examples, CORPUS, num_negatives=4, rank_range=(2, 20), score=score, seed=1
    )
    assert mined == again
    for ex, new in zip(examples, mined, strict=True):
        assert new.query == ex.query and new.pos == ex.pos
        assert len(new.neg) == 4 and len(set(new.neg)) == 4
        assert not set(new.neg) & set(ex.pos)
    if score is MiningScore.DENSE:  # the negatives sit at ranks 2..19 of the dense ranking
        q = tiny_encoder.encode([ex.query for ex in examples], heads=["dense"], query=True)
        d = tiny_encoder.encode(CORPUS, heads=["dense"])
        for i, new in enumerate(mined):
            order = np.argsort(-dense_score(q.dense[i], d.dense), kind="stable")
            window = {CORPUS[j] for j in order[2:20]}
            assert set(new.neg) <= window


def test_mining_small_window_and_bad_input(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    ex = [TrainingExample("q", (CORPUS[0],))]
    few = mine_hard_negatives(tiny_encoder, ex, CORPUS[:4], num_negatives=5, rank_range=(0, 10))
    assert set(few[0].neg) == set(CORPUS[1:4])  # all there is, never the positive
    assert "fewer than 5 negatives" in caplog.text
    default_corpus = mine_hard_negatives(
        tiny_encoder, [TrainingExample("q", (CORPUS[0],), tuple(CORPUS[1:5]))], rank_range=(0, 9)
    )
    assert set(default_corpus[0].neg) == set(CORPUS[1:5])
    with pytest.raises(ValueError, match="rank_range"):
        mine_hard_negatives(tiny_encoder, ex, CORPUS, rank_range=(10, 5))
    assert mine_hard_negatives(tiny_encoder, [], CORPUS) == []


def test_a_positive_is_never_mined_in_any_form(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a row's own positive strings were excluded: the same question's positive in
    another row, the positive with a title or other whitespace were mined as negatives."""
    p1, p2 = "Granal thylakoids are disc shaped.", "Thylakoids in grana look like coins."
    question = "What shape are granal thylakoids?"
    rows = [TrainingExample(question, (p1,)), TrainingExample(question + " ", (p2,))]
    corpus = [p1, p2, *CORPUS[:6]]
    for ex in mine_hard_negatives(tiny_encoder, rows, corpus, rank_range=(0, 100)):
        assert len(ex.neg) == 6 and not {p1, p2} & set(ex.neg)
    row = [TrainingExample(question, (p1,))]
    spaced = mine_hard_negatives(tiny_encoder, row, [f" {p1}\n", *CORPUS[:6]], rank_range=(0, 9))
    assert set(spaced[0].neg) == set(CORPUS[:6])
    assert "not in the corpus" not in caplog.text
    titles = ["Chloroplast", *[None] * 6]
    titled = mine_hard_negatives(
        tiny_encoder, row, [p1, *CORPUS[:6]], corpus_titles=titles, rank_range=(0, 9)
    )
    assert set(titled[0].neg) == set(CORPUS[:6])  # not "Chloroplast Granal thylakoids ..."
    assert "not in the corpus" not in caplog.text
    mine_hard_negatives(tiny_encoder, [*row, *rows], [f"Chloroplast {p1}", p2], rank_range=(0, 9))
    assert "2 of 3 rows have a positive that is not in the corpus (e.g. row 1, query" in caplog.text


def test_a_titled_positive_is_not_mined_under_another_title(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """A positive written with its title (as train.jsonl.gz rows are) kept out only that
    titled form: the same passage text under another title (another corpus id) was mined."""
    p1 = "Granal thylakoids are disc shaped."
    row = [TrainingExample("What shape are granal thylakoids?", (f"Chloroplast {p1}",))]
    titles = ["Chloroplast", "Plastid", None, *[None] * 6]
    mined = mine_hard_negatives(
        tiny_encoder, row, [p1, p1, f" {p1}", *CORPUS[:6]], corpus_titles=titles, rank_range=(0, 9)
    )
    assert set(mined[0].neg) == set(CORPUS[:6])
    assert "not in the corpus" not in caplog.text


def test_fused_mining_on_a_dense_only_model_names_the_dense_score(tiny_dense_path: Path) -> None:
    dense_only = M3Encoder.from_pretrained(tiny_dense_path, dtype="fp32")
    ex = [TrainingExample("q", (CORPUS[0],))]
    for score in ("fused", "sparse"):
        with pytest.raises(HeadNotAvailableError, match=r"--score dense"):
            mine_hard_negatives(dense_only, ex, CORPUS, score=score)


def test_score_matrices_equal_scoring_functions(tiny_encoder: M3Encoder) -> None:
    qs = tiny_encoder.encode(["topic 3 words", "passage 12", "nothing"], query=True)
    ds = tiny_encoder.encode(CORPUS[:9])
    dense = score_matrix(qs, ds, Head.DENSE)
    sparse = score_matrix(qs, ds, Head.SPARSE)
    colbert = score_matrix(qs, ds, Head.COLBERT)
    for i in range(3):
        np.testing.assert_allclose(dense[i], dense_score(qs.dense[i], ds.dense), rtol=1e-6)
        for j in range(9):
            assert sparse[i, j] == pytest.approx(sparse_score(qs.sparse[i], ds.sparse[j]), rel=1e-5)
            assert colbert[i, j] == pytest.approx(maxsim(qs.colbert[i], ds.colbert[j]), abs=1e-6)


def test_evaluate_heads_and_report(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    corpus = {f"d{i}": t for i, t in enumerate(CORPUS[:12])}
    queries = {"q1": CORPUS[3], "q2": CORPUS[8]}  # a passage is its own best match
    qrels = {"q1": {"d3": 1.0}, "q2": {"d8": 1.0}}
    report = evaluate_heads(tiny_encoder, corpus, queries, qrels, ks=(1, 10))
    assert set(report.metrics) == {"dense", "sparse", "colbert", "fused", "rrf"}
    assert report.metrics["dense"]["hit@1"] == 1.0
    assert report.metrics["colbert"]["ndcg@10"] == 1.0
    dense_only = evaluate_heads(tiny_encoder, corpus, queries, qrels, heads=["dense"], ks=(10,))
    assert set(dense_only.metrics) == {"dense"}

    paths = write_report({"before": dense_only, "after": report}, tmp_path, extra={"n": 2})
    data = json.loads(paths["json"].read_text())
    assert data["after"]["fused"]["ndcg@10"] == report.metrics["fused"]["ndcg@10"]
    no_cut = {"top_k": None, "min_weight": 0.0}  # "after" scored sparse vectors, uncut
    assert data["meta"] == {"n": 2, "sparse_cut": {"after": no_cut}}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["markdown"].read_text()
    assert "| after | fused |" in table and "| before | dense |" in table
    assert comparison_table({"x": RetrievalReport({"dense": {}})}).endswith(
        "| x | dense | - | - | - | - | - |"
    )


def test_evaluate_heads_averages_the_queries_it_is_given(tiny_encoder: M3Encoder) -> None:
    """qrels of a query not in ``queries`` (a sample of them) scored it 0, silently lowering
    every metric; ``calibrate_fusion`` leaves such judgements out, and now so does this."""
    corpus = {f"d{i}": t for i, t in enumerate(CORPUS[:12])}
    qrels = {"q1": {"d3": 1.0}, "q2": {"d8": 1.0}, "q3": {"d5": 1.0}}
    sample = evaluate_heads(tiny_encoder, corpus, {"q1": CORPUS[3]}, qrels, ks=(1,))
    alone = evaluate_heads(tiny_encoder, corpus, {"q1": CORPUS[3]}, {"q1": qrels["q1"]}, ks=(1,))
    assert sample.metrics == alone.metrics
    assert sample.metrics["dense"]["queries"] == 1.0 and sample.metrics["dense"]["hit@1"] == 1.0
    with pytest.raises(ValueError, match="none of the queries given has a relevant passage"):
        evaluate_heads(tiny_encoder, corpus, {"q9": CORPUS[3]}, qrels, ks=(1,))


def test_rank_orders_ties_by_id_whatever_the_depth() -> None:
    """Tied scores were ordered by argpartition, which depends on the depth asked for."""
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    ids = ["x", "c", "a", "b", "y"]
    full = _rank(scores, ids, 5)
    assert full == [["a", "b", "c", "x", "y"], ["a", "b", "c", "x", "y"]]
    for depth in range(1, 5):
        assert _rank(scores, ids, depth) == [row[:depth] for row in full]


def test_rank_puts_a_nan_score_last_and_keeps_top_k() -> None:
    """A NaN became the k-th score and the ``>= kth`` cut dropped real candidates."""
    scores = np.array([[0.5, np.nan, 0.9, 0.1]], dtype=np.float32)
    assert _rank(scores, ["a", "b", "c", "d"], 2) == [["c", "a"]]
    assert _rank(scores, ["a", "b", "c", "d"], 4) == [["c", "a", "d", "b"]]


def test_metrics_do_not_depend_on_the_other_cutoffs(tiny_encoder: M3Encoder) -> None:
    """hit@1 of tied passages and RRF's nDCG@10 changed with the largest cut-off asked for
    (RRF fused each head's list cut at max(ks))."""
    rng = np.random.default_rng(1)
    words = ["river", "sea", "alps", "oxygen", "capital", "tesla", "motor", "forest", "gold"]
    corpus = {f"d{i}": " ".join(rng.choice(words, 12)) for i in range(60)}
    corpus["d60"] = corpus["d61"] = "The Rhine flows from the Swiss Alps to the North Sea."
    queries = {f"q{i}": " ".join(rng.choice(words, 4)) for i in range(20)}
    qrels = {q: {f"d{rng.integers(60)}": 1.0} for q in queries}
    queries["rhine"], qrels["rhine"] = "Where does the Rhine flow?", {"d60": 1.0}
    reports = [
        evaluate_heads(tiny_encoder, corpus, queries, qrels, ks=ks).metrics
        for ks in [(1, 10), (1, 2, 10), (1, 10, 62)]
    ]
    for method in reports[0]:
        for metric in ("hit@1", "ndcg@10", "mrr@10"):
            assert len({r[method][metric] for r in reports}) == 1, (method, metric)
    tied = evaluate_heads(tiny_encoder, corpus, {"rhine": queries["rhine"]}, {"rhine": {"d60": 1}})
    assert tied.metrics["sparse"]["hit@1"] == 1.0  # d60 and d61 tie; d60 sorts first
    shallow = evaluate_heads(tiny_encoder, corpus, queries, qrels, ks=(1, 10), rrf_depth=5)
    assert shallow.metrics["dense"] == reports[0]["dense"]
    assert shallow.metrics["rrf"] != reports[0]["rrf"]  # rrf_depth, not ks, sets what is fused


@pytest.mark.parametrize(
    ("heads", "weights", "match"),
    [
        # every evaluated head weighted 0: the fused scores were all 0, ranked by id
        (["dense", "sparse"], (0.0, 0.0, 1.0), "weight 0"),
        (None, (0.0, 0.0, 0.0), "not all 0"),
        (None, (0.5, 0.5), r"\[dense, sparse, colbert\]"),
        (None, (0.5, -0.1, 0.6), ">= 0"),
        (None, (0.5, float("nan"), 0.5), "finite"),
    ],
)
def test_fused_weights_a_search_would_refuse_are_an_error(
    tiny_encoder: M3Encoder, heads: list[str] | None, weights: tuple[float, ...], match: str
) -> None:
    """The fused row scored every passage 0 (ranked by id) or with a negative weight, a
    number no m3 search in the store gives (it refuses such weights)."""
    corpus = {f"d{i}": t for i, t in enumerate(CORPUS[:6])}
    with pytest.raises(ValueError, match=match):
        evaluate_heads(
            tiny_encoder, corpus, {"q": CORPUS[3]}, {"q": {"d3": 1.0}}, heads=heads, weights=weights
        )
