"""m3kit.evaluation against a reference written here from the textbook definitions.

The reference (Järvelin & Kekäläinen's nDCG with linear gains, as ``trec_eval``'s
``ndcg_cut``; MRR, hit rate and recall as BEIR computes them) is deliberately naive: it
deduplicates the ranking first, then applies each formula literally. Hypothesis draws
rankings with repeated ids, graded (and zero, and negative) judgements, ids judged but never
retrieved, and cut-offs beyond the ranking's length.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3kit.evaluation import evaluate_rankings, hit_at_k, mrr_at_k, ndcg_at_k, recall_at_k
from m3kit.finetune.evaluate import _rank

DOC_IDS = [f"d{i}" for i in range(12)]


def _dedup(ranked: list[str]) -> list[str]:
    return list(dict.fromkeys(ranked))


def ref_ndcg(ranked: list[str], grades: dict[str, float], k: int) -> float:
    gain = {d: max(g, 0.0) for d, g in grades.items()}
    dcg = 0.0
    for i, doc in enumerate(_dedup(ranked)[:k]):
        dcg += gain.get(doc, 0.0) / math.log2(i + 2)
    ideal_gains = sorted(gain.values(), reverse=True)[:k]
    idcg = 0.0
    for i, g in enumerate(ideal_gains):
        idcg += g / math.log2(i + 2)
    return 0.0 if idcg == 0 else dcg / idcg


def ref_mrr(ranked: list[str], grades: dict[str, float], k: int) -> float:
    for i, doc in enumerate(_dedup(ranked)[:k]):
        if grades.get(doc, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def ref_hit(ranked: list[str], grades: dict[str, float], k: int) -> float:
    return 1.0 if ref_mrr(ranked, grades, k) > 0 else 0.0


def ref_recall(ranked: list[str], grades: dict[str, float], k: int) -> float:
    relevant = [d for d, g in grades.items() if g > 0]
    if not relevant:
        return 0.0
    top = _dedup(ranked)[:k]
    return sum(1 for d in relevant if d in top) / len(relevant)


rankings = st.lists(st.sampled_from(DOC_IDS), max_size=15)  # repeats allowed
qrels_of_one = st.dictionaries(
    st.sampled_from(DOC_IDS), st.sampled_from([-1.0, 0.0, 1.0, 2.0, 3.0, 0.5]), max_size=6
)
cutoffs = st.integers(min_value=1, max_value=20)  # beyond the ranking and the corpus too


@settings(max_examples=400, deadline=None)
@given(ranked=rankings, grades=qrels_of_one, k=cutoffs)
def test_each_metric_equals_the_reference(
    ranked: list[str], grades: dict[str, float], k: int
) -> None:
    assert ndcg_at_k(ranked, grades, k) == pytest.approx(ref_ndcg(ranked, grades, k), abs=1e-12)
    assert mrr_at_k(ranked, grades, k) == ref_mrr(ranked, grades, k)
    assert hit_at_k(ranked, grades, k) == ref_hit(ranked, grades, k)
    assert recall_at_k(ranked, grades, k) == pytest.approx(ref_recall(ranked, grades, k))


@settings(max_examples=150, deadline=None)
@given(
    run=st.dictionaries(st.sampled_from(["q1", "q2", "q3", "q4"]), rankings, max_size=4),
    qrels=st.dictionaries(st.sampled_from(["q1", "q2", "q3", "q5"]), qrels_of_one, max_size=4),
    ks=st.lists(cutoffs, min_size=1, max_size=3),
)
def test_evaluate_rankings_averages_the_reference_over_judged_queries(
    run: dict[str, list[str]], qrels: dict[str, dict[str, float]], ks: list[int]
) -> None:
    judged = {q: g for q, g in qrels.items() if any(v > 0 for v in g.values())}
    if not judged:
        with pytest.raises(ValueError, match="no query with a relevant"):
            evaluate_rankings(run, qrels, ks)
        return
    got = evaluate_rankings(run, qrels, ks)
    assert got["queries"] == len(judged)
    refs = {"ndcg": ref_ndcg, "mrr": ref_mrr, "hit": ref_hit, "recall": ref_recall}
    for k in ks:
        for name, ref in refs.items():
            # a judged query without a ranking scores 0 (trec_eval -c)
            mean = sum(ref(run.get(q, []), g, k) for q, g in judged.items()) / len(judged)
            assert got[f"{name}@{k}"] == pytest.approx(mean, abs=1e-12), (name, k)


def test_several_relevant_graded_worked_example() -> None:
    """Three relevant passages of grades 3, 2, 1; the ranking finds two of them."""
    ranked = ["d2", "x", "d1", "y"]
    grades = {"d1": 3.0, "d2": 2.0, "d3": 1.0, "n": 0.0}
    dcg = 2 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, grades, 10) == pytest.approx(dcg / idcg)
    assert recall_at_k(ranked, grades, 10) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, grades, 1) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, grades, 10) == 1.0
    # k far beyond the ranking: the same as the whole ranking
    assert ndcg_at_k(ranked, grades, 1000) == ndcg_at_k(ranked, grades, 4)


def test_golden_values_from_trec_eval_and_the_tie_convention() -> None:
    """Values ``pytrec_eval`` (trec_eval 9) gave for these qrels and scores, pinned.

    trec_eval orders tied scores by document id *descending*; ``evaluate_heads`` (``_rank``),
    the store and RRF order them by id *ascending* (deterministic, documented): q4's tie is
    where the two conventions part. A query judged only 0 scores 0 per query in both, but
    ``evaluate_rankings`` leaves it out of the mean where trec_eval would average it in.
    """
    qrels: dict[str, dict[str, float]] = {
        "q1": {"a": 3, "b": 2, "c": 0, "z": 1},  # graded; "z" never retrieved
        "q2": {"d": 0},  # judged, nothing relevant
        "q4": {"r": 1, "s": 2},
    }
    # q1 scores c 4.0, b 3.0, x 2.0, a 1.0; "b" repeated (two chunks of one document)
    q1 = ["c", "b", "b", "x", "a"]
    assert ndcg_at_k(q1, qrels["q1"], 3) == pytest.approx(0.26499301486112564, abs=1e-12)
    assert ndcg_at_k(q1, qrels["q1"], 10) == pytest.approx(0.5363218250207072, abs=1e-12)
    assert ndcg_at_k(q1, qrels["q1"], 100) == ndcg_at_k(q1, qrels["q1"], 10)  # k > corpus
    assert mrr_at_k(q1, qrels["q1"], 10) == 0.5
    assert hit_at_k(q1, qrels["q1"], 1) == 0.0
    assert recall_at_k(q1, qrels["q1"], 3) == pytest.approx(1 / 3)
    assert recall_at_k(q1, qrels["q1"], 100) == pytest.approx(2 / 3)
    for metric in (ndcg_at_k, mrr_at_k, hit_at_k, recall_at_k):
        assert metric(["d"], qrels["q2"], 10) == 0.0
    # q4 scores p 1.0, r 1.0, s 0.5: trec_eval ranks r, p, s (r rank 1) ...
    assert ndcg_at_k(["r", "p", "s"], qrels["q4"], 10) == pytest.approx(0.7601875334318685)
    # ... m3kit's evaluation ranks p, r, s: nDCG (1/log2(3) + 2/2) / (2 + 1/log2(3))
    (q4,) = _rank(np.array([[1.0, 1.0, 0.5]], dtype=np.float32), ["r", "p", "s"], 10)
    assert q4 == ["p", "r", "s"]
    tied = (1 / math.log2(3) + 1.0) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(q4, qrels["q4"], 10) == pytest.approx(tied, abs=1e-12)
    assert ndcg_at_k(q4, qrels["q4"], 10) == pytest.approx(0.6199, abs=1e-4)
    assert mrr_at_k(q4, qrels["q4"], 10) == 0.5  # trec_eval's order: 1.0
    m = evaluate_rankings({"q1": q1, "q2": ["d"], "q4": q4}, qrels, ks=(10,))
    assert m["queries"] == 2.0  # q2 left out (trec_eval -c would average 3 queries)
    assert m["ndcg@10"] == pytest.approx((0.5363218250207072 + tied) / 2, abs=1e-12)
