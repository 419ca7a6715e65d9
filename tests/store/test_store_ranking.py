"""How the store ranks, on every backend (edge folder, client memory, client folder): fused
ties ordered by point id, ColBERT rerank equal to brute-force MaxSim over both retrievers'
candidates, the ``m3`` fusion's weighted sum, score thresholds, queries without sparse terms."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from m3kit.outputs import Head, M3Output, SparseVector
from m3kit.scoring import maxsim
from m3kit.store import ChunkRecord, Fusion, M3Store, QueryOptions, point_id
from tests.store.conftest import add_corpus


def _two_vector_row(dim: int, cosine: float, weight: float) -> M3Output:
    """A point whose dense cosine to ``e0`` is ``cosine`` and whose sparse vector is
    ``{7: weight}``."""
    v = np.zeros((1, dim), dtype=np.float32)
    v[0, 0], v[0, 1] = cosine, np.sqrt(1.0 - cosine**2)
    return M3Output(
        heads=frozenset(Head),
        token_counts=(2,),
        _dense=v,
        _sparse=(SparseVector(np.array([7]), np.array([weight], dtype=np.float32)),),
        _colbert=(v.copy(),),
    )


def test_equal_fused_scores_are_ordered_by_point_id(open_index: Any, tiny_encoder: Any) -> None:
    """RRF gives a point ranked (1, 2) and one ranked (2, 1) the same score; the answer must not
    depend on the order the points were written in (the engine's internal order)."""
    dim = tiny_encoder.dense_dim
    rows = {"a": _two_vector_row(dim, 0.9, 0.5), "b": _two_vector_row(dim, 0.8, 0.9)}
    q_dense = np.eye(1, dim, dtype=np.float32)[0]
    q_sparse = SparseVector(np.array([7]), np.array([1.0], dtype=np.float32))
    want = sorted(point_id(d, 0) for d in rows)
    for order in (["a", "b"], ["b", "a"]):
        store: M3Store = open_index(tiny_encoder, collection=f"ties_{order[0]}").store
        for d in order:  # one write each, in this order
            store.upsert([ChunkRecord(d, 0, d, {}, rows[d])])
        for k in (1, 2):
            hits = store.query(dense=q_dense, sparse=q_sparse, k=k, fusion="rrf", rerank=False)
            assert [h.id for h in hits] == want[:k], order
        assert hits[0].score == hits[1].score
        store.close()  # a local client folder holds one client at a time


def _random_row(rng: np.random.Generator, dim: int = 32) -> M3Output:
    def unit(shape: tuple[int, ...]) -> np.ndarray:
        v = rng.normal(size=shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    terms = np.sort(rng.choice(500, size=12, replace=False)).astype(np.int64)
    return M3Output(
        heads=frozenset(Head),
        token_counts=(8,),
        _dense=unit((1, dim)),
        _sparse=(SparseVector(terms, rng.uniform(0.05, 1.0, size=12).astype(np.float32)),),
        _colbert=(unit((int(rng.integers(3, 12)), dim)),),
    )


def test_colbert_rerank_order_equals_brute_force_maxsim(open_index: Any, tiny_encoder: Any) -> None:
    """Random (tie-free) vectors: rerank must re-order one retriever's candidates by exact
    MaxSim (both retrievers: test_rerank_scores_every_candidate_of_both_retrievers)."""
    store: M3Store = open_index(tiny_encoder).store
    rng = np.random.default_rng(7)
    rows = {f"doc{i}": _random_row(rng) for i in range(120)}
    store.upsert([ChunkRecord(d, 0, d, {}, row) for d, row in rows.items()])
    store.query_options = QueryOptions(oversample=1, min_candidates=20)
    for trial in range(3):
        q = _random_row(rng)
        for fusion, dense, sparse in [
            ("dbsf", q.dense[0], None),
            ("rrf", q.dense[0], None),
            ("rrf", None, q.sparse[0]),
        ]:
            args = {"dense": dense, "sparse": sparse, "k": 20, "fusion": fusion}
            candidates = store.query(**args, rerank=False)
            reranked = store.query(**args, colbert=q.colbert[0], rerank=True)
            assert len(candidates) == 20
            assert {h.id for h in reranked} == {h.id for h in candidates}, (trial, fusion)
            brute = {h.doc_id: maxsim(q.colbert[0], rows[h.doc_id].colbert[0]) for h in candidates}
            # ColBERT vectors are stored as float16: scores agree to ~1e-3, order up to that.
            for h in reranked:
                assert h.score == pytest.approx(brute[h.doc_id], abs=2e-3)
            got = [brute[h.doc_id] for h in reranked]
            assert all(a >= b - 2e-3 for a, b in itertools.pairwise(got))
            exact = sorted(brute, key=lambda d: -brute[d])
            if all(brute[a] - brute[b] > 4e-3 for a, b in itertools.pairwise(exact)):
                assert [h.doc_id for h in reranked] == exact


def test_rerank_scores_every_candidate_of_both_retrievers(
    open_index: Any, tiny_encoder: Any
) -> None:
    """ColBERT reranks the union of dense's and sparse's candidates, whatever the fusion.

    The pool used to be the fused list cut to ``candidates``: the cut fell inside RRF ties
    (a point ranked r by dense alone ties one ranked r by sparse alone), and the engine chose
    which tied point was reranked, differently between runs of one query and between backends.
    """
    store: M3Store = open_index(tiny_encoder).store
    rng = np.random.default_rng(11)
    rows = {f"doc{i}": _random_row(rng) for i in range(120)}
    store.upsert([ChunkRecord(d, 0, d, {}, row) for d, row in rows.items()])
    n = 10
    for trial in range(3):
        q = _random_row(rng)
        dense = store.query(dense=q.dense[0], k=n, candidates=n, rerank=False)
        sparse = store.query(sparse=q.sparse[0], k=n, candidates=n, rerank=False)
        union = {h.doc_id for h in dense} | {h.doc_id for h in sparse}
        brute = {d: maxsim(q.colbert[0], rows[d].colbert[0]) for d in union}
        exact = sorted(brute, key=lambda d: -brute[d])[:n]
        for fusion in ("rrf", "dbsf"):
            answers = {
                tuple(
                    h.doc_id
                    for h in store.query(
                        dense=q.dense[0],
                        sparse=q.sparse[0],
                        colbert=q.colbert[0],
                        k=n,
                        fusion=fusion,
                        candidates=n,
                    )
                )
                for _ in range(3)
            }
            assert len(answers) == 1, (trial, fusion, answers)
            (got,) = answers
            assert set(got) <= union
            # float16 ColBERT storage: compare where the exact order is not a near-tie
            if all(brute[a] - brute[b] > 4e-3 for a, b in itertools.pairwise(exact)):
                assert list(got) == exact, (trial, fusion)


def test_m3_fusion_is_flagembedding_weighted_sum(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    from m3kit.scoring import dense_score, m3_score, sparse_score

    index = open_index(tiny_encoder)
    add_corpus(index, corpus)
    docs = {r["id"]: r["text"] for r in corpus}
    out = tiny_encoder.encode(list(docs.values()))
    row = {d: i for i, d in enumerate(docs)}
    q = tiny_encoder.encode(["rainforest species and dust from the Sahara"], query=True)
    weights = (0.5, 0.3, 0.2)
    hits = index.store.query(
        dense=q.dense[0],
        sparse=q.sparse[0],
        colbert=q.colbert[0],
        k=8,
        fusion="m3",
        weights=weights,
    )
    assert len(hits) == 8
    for h in hits:
        i = row[h.doc_id]
        expected = m3_score(
            float(dense_score(q.dense[0], out.dense[i])[0]),
            sparse_score(q.sparse[0], out.sparse[i]),
            maxsim(q.colbert[0], out.colbert[i]),
            weights,
        )
        assert h.score == pytest.approx(expected, abs=2e-3)
    # Without ColBERT the weights of the heads that score are divided by their sum, as
    # FlagEmbedding's compute_score does ("sparse+dense"): the ranking is the same
    hits = index.store.query(
        dense=q.dense[0], sparse=q.sparse[0], k=8, fusion="m3", weights=weights, rerank=False
    )
    for h in hits:
        i = row[h.doc_id]
        dense = float(dense_score(q.dense[0], out.dense[i])[0])
        sparse = sparse_score(q.sparse[0], out.sparse[i])
        assert h.score == pytest.approx((0.5 * dense + 0.3 * sparse) / 0.8, abs=2e-3)
    # a sparse query without terms (an empty query) still scores with the sparse head, 0:
    # not an error for weights that count sparse alone
    no_terms = SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32))
    hits = index.store.query(
        dense=q.dense[0], sparse=no_terms, k=3, fusion="m3", weights=(0, 1, 0), rerank=False
    )
    assert len(hits) == 3 and all(h.score == 0.0 for h in hits)


def test_score_threshold(open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus)
    query = corpus[3]["text"][:100]
    for fusion in Fusion:
        full = index.search(query, k=20, fusion=fusion)
        cut = (full[2].score + full[3].score) / 2
        kept = index.search(query, k=20, fusion=fusion, score_threshold=cut)
        assert [h.id for h in kept] == [h.id for h in full if h.score >= cut]
        assert len(kept) == 3


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_a_query_without_sparse_terms_is_scored_by_the_fusion(
    open_index: Any, tiny_encoder: Any, fusion: str
) -> None:
    """A query whose sparse vector has no terms (a word the sparse head weighs 0, or one the
    sparse cut drops) on a dense + sparse collection scores on the fusion's scale, as one whose
    terms match no chunk does: it was scored by the bare cosine, so a ``score_threshold`` set
    for RRF scores (~0.03) kept every hit of such a query, silently."""
    store: M3Store = open_index(tiny_encoder).store
    rng = np.random.default_rng(5)
    store.upsert([ChunkRecord(f"doc{i}", 0, "t", {}, _random_row(rng)) for i in range(30)])
    q = _random_row(rng)
    no_terms = SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32))
    unmatched = SparseVector(np.array([10_000], np.int64), np.ones(1, np.float32))  # no chunk's
    args = {"dense": q.dense[0], "k": 8, "fusion": fusion, "rerank": False}
    want = store.query(**args, sparse=unmatched)
    got = store.query(**args, sparse=no_terms)
    assert [h.id for h in got] == [h.id for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    threshold = (want[2].score + want[3].score) / 2
    kept = store.query(**args, sparse=no_terms, score_threshold=threshold)
    assert [h.id for h in kept] == [h.id for h in want[:3]]
