"""fusion='m3' scores a search by the heads it uses: one head alone scores its own similarity."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.fingerprint import encoder_fingerprint
from m3kit.store import FusionCalibration, SearchSettings
from m3kit.store.fusion_calibration import calibrated_encoder_identity

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
]
D, S, H = VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID


def _fill(store: M3VectorStore, embed: M3Embedding) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    for n in nodes:
        n.embedding = embed.get_text_embedding(n.get_content(metadata_mode="embed"))
    store.add(nodes)


@pytest.fixture()
def stores(tiny_embedding: M3Embedding) -> Iterator[tuple[M3VectorStore, M3VectorStore]]:
    """The same collection with rank fusion (raw head scores) and with fusion='m3'."""
    with M3VectorStore(tiny_embedding) as plain:
        _fill(plain, tiny_embedding)
        yield plain, M3VectorStore.from_index(plain.client, fusion="m3")


def _query(embed: M3Embedding, mode: VectorStoreQueryMode, alpha: float | None = None) -> Any:
    return VectorStoreQuery(
        query_embedding=embed.get_query_embedding(TEXTS[1]),
        query_str=TEXTS[1],
        similarity_top_k=3,
        mode=mode,
        alpha=alpha,
    )


@pytest.mark.parametrize(("mode", "alpha"), [(D, None), (D, 0.0), (S, None), (S, 1.0)])
def test_one_head_modes_score_that_heads_similarity(
    stores: tuple[M3VectorStore, M3VectorStore],
    tiny_embedding: M3Embedding,
    mode: VectorStoreQueryMode,
    alpha: float | None,
) -> None:
    """Default (dense) and sparse mode under m3 score as LlamaIndex's Qdrant store: raw.

    alpha weighs dense against sparse in hybrid mode only (it zeroed the one head before).
    """
    plain, m3 = stores
    want = plain.query(_query(tiny_embedding, mode))
    got = m3.query(_query(tiny_embedding, mode, alpha))
    assert got.ids == want.ids and got.ids
    assert got.similarities == pytest.approx(want.similarities, rel=1e-6)
    assert all(s > 0 for s in got.similarities or [])


def test_weights_that_zero_the_scoring_heads_are_refused(
    stores: tuple[M3VectorStore, M3VectorStore], tiny_embedding: M3Embedding
) -> None:
    plain, _ = stores
    sparse_only = M3VectorStore.from_index(plain.client, fusion="m3", weights=(0, 1, 0))
    with pytest.raises(ValueError, match=r"\(dense\) weight 0"):
        sparse_only.query(_query(tiny_embedding, D))
    assert sparse_only.query(_query(tiny_embedding, S)).ids  # sparse scores: fine


def test_hybrid_m3_sum_is_over_the_heads_that_score(
    stores: tuple[M3VectorStore, M3VectorStore], tiny_embedding: M3Embedding
) -> None:
    """Without ColBERT, dense 0.4 + sparse 0.2 are renormalised (FlagEmbedding divides too)."""
    plain, m3 = stores
    got = m3.query(_query(tiny_embedding, H), rerank=False)
    hits = plain.client.store.query(
        dense=tiny_embedding.get_query_embedding(TEXTS[1]),
        sparse=plain.client.encoder.encode([TEXTS[1]], heads=["sparse"], query=True).sparse[0],
        k=3,
        fusion="m3",
        rerank=False,
        weights=(0.4 / 0.6, 0.2 / 0.6, 0.0),
    )
    assert got.ids == [h.chunk_id for h in hits]
    assert got.similarities == pytest.approx([h.score for h in hits], rel=1e-6)


def test_dense_only_exact_match_scores_one(minilm_encoder: M3Encoder) -> None:
    """A dense-only model under m3 (as a calibrated checkpoint may default to): cosine, not
    0.4 x cosine, so a similarity cutoff keeps the exact match."""
    embed = M3Embedding.from_encoder(minilm_encoder)
    with M3VectorStore(embed, fusion="m3") as store:
        _fill(store, embed)
        q = VectorStoreQuery(query_embedding=embed.get_text_embedding(TEXTS[1]), similarity_top_k=1)
        assert store.query(q).similarities == [pytest.approx(1.0, abs=1e-4)]
        r = M3Retriever(store.client, fusion="m3", similarity_top_k=3)
        hits = r.retrieve(TEXTS[1])
        plain = M3Retriever(store.client, fusion="rrf", similarity_top_k=3).retrieve(TEXTS[1])
        assert [h.node.text for h in hits] == [h.node.text for h in plain]
        assert [h.score for h in hits] == pytest.approx([h.score for h in plain], rel=1e-6)
        kept = SimilarityPostprocessor(similarity_cutoff=0.5).postprocess_nodes(hits)
        assert kept and kept[0].node.text == TEXTS[1]


#: Per-head scores (as Qdrant would return them) of two stored chunks: under the weights
#: 0.2 / 0.7 / 0.1 divided once by their sum (what every m3 search does) "b" scores
#: 0.301000001 and "a" 0.301; divided twice (0.9999999999999999, then 1.0000000000000002) both
#: score 0.301, a tie ordered by id.
_HEADS = {
    "dense": {"a": 0.63, "b": 0.6300000025},
    "sparse": {"a": 0.25, "b": 0.25},
    "colbert": {"a": 0.0, "b": 0.0},
}


class _FixedScores:
    """A storage backend answering the ``m3`` plan's queries from :data:`_HEADS`."""

    def query_batch(self, stages: Any, *, with_payload: bool) -> list[list[Any]]:
        from m3kit.store.plan import RawHit

        out = []
        for stage in stages:
            scores = _HEADS[stage.query.using]
            hits = sorted((RawHit(i, s) for i, s in scores.items()), key=lambda h: -h.score)
            out.append(hits[: stage.limit])
        return out

    def retrieve(self, ids: Any) -> dict[str, dict[str, Any]]:
        return {i: {"page_content": i, "doc_id": i, "chunk_id": i} for i in ids}


def test_hybrid_m3_ranks_as_an_index_search(
    stores: tuple[M3VectorStore, M3VectorStore],
    tiny_embedding: M3Embedding,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hybrid mode divides the m3 weights by their sum once, as every m3 search does (it
    divided them a second time: their last bit differed from M3Index.search's, which flips a
    tie at the 9th digit)."""
    plain, _ = stores
    weights = (0.2, 0.7, 0.1)
    m3 = M3VectorStore.from_index(plain.client, fusion="m3", weights=weights)
    monkeypatch.setattr(plain.client.store, "_backend", _FixedScores())
    searched = plain.client.search(TEXTS[1], k=2, fusion="m3", weights=weights)
    assert [(h.id, h.score) for h in searched] == [("b", 0.301000001), ("a", 0.301)]
    got = m3.query(_query(tiny_embedding, H))
    assert got.ids == ["b", "a"] and got.similarities == [0.301000001, 0.301]


@pytest.mark.parametrize(
    ("weights", "mode", "scores_by"),
    [((0.0, 1.0, 0.0), D, "dense"), ((1.0, 0.0, 0.0), S, "sparse")],
)
def test_a_calibration_that_zeroes_the_mode_s_head_scores_that_head_alone(
    tiny_m3_path: Path,
    tmp_path: Path,
    weights: tuple[float, float, float],
    mode: VectorStoreQueryMode,
    scores_by: str,
) -> None:
    """A checkpoint's dense + sparse calibration may rank by one head alone (``(0, 1, 0)``
    is a grid point that can win). A default mode query (dense) then failed with "m3 weights
    [0.0, 1.0, 0.0] give every head this search scores with (dense) weight 0", though the
    user gave no weights; a sparse mode query failed so with ``(1, 0, 0)``. It now scores its
    one head, as any query of that mode does."""
    path = Path(shutil.copytree(tiny_m3_path, tmp_path / "model"))
    fingerprint = encoder_fingerprint(M3Encoder.from_pretrained(path, dtype="fp32"))
    FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=(0.4, 0.2, 0.4), rerank=True),
        dense_sparse=SearchSettings(fusion="m3", weights=weights, rerank=False),
        weights_digest=fingerprint.weights,
        encoder_identity=calibrated_encoder_identity(fingerprint),
    ).save(path)
    embed = M3Embedding(model_name=str(path), dtype="fp32")
    with M3VectorStore(embed) as store:
        _fill(store, embed)
        got = store.query(_query(embed, mode))
        weights_given = M3VectorStore.from_index(store.client, fusion="m3", weights=weights)
        with pytest.raises(ValueError, match=rf"\({scores_by}\) weight 0"):
            weights_given.query(_query(embed, mode))  # a caller's own weights: refused
    assert got.ids and got.ids[0] == "n1"
