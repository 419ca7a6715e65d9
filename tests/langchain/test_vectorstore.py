"""M3VectorStore: search_kwargs (k, filter, fusion, rerank), score thresholds, ids, late chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3 import M3Embeddings, M3Retriever, M3VectorStore
from langchain_m3.vectorstore import ScoreScale
from m3kit import Chunk, M3Encoder
from m3kit.store import ChunkRecord, Fusion
from m3kit.testing import SAMPLE_TEXTS
from tests.store.conftest import record_upserts

TOPICS = ("geo", "chem", "math", "misc")
DOCS = [
    Document(text, id=f"d{i}", metadata={"topic": TOPICS[i % 4], "n": i})
    for i, text in enumerate(SAMPLE_TEXTS)
]
QUERY = SAMPLE_TEXTS[3]


@pytest.fixture
def store(tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.from_documents(DOCS, tiny_encoder)
    yield s
    s.close()


def _ids(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


def _assert_same_vectors(records: list[ChunkRecord], chunks: list[Chunk]) -> None:
    assert [r.text for r in records] == [c.text for c in chunks]
    for r, c in zip(records, chunks, strict=True):
        np.testing.assert_array_equal(r.vectors.dense[0], c.dense)
        assert r.vectors.sparse[0] == c.sparse
        np.testing.assert_array_equal(r.vectors.colbert[0], c.colbert)


def test_k_filter_fusion_rerank_reach_the_index(store: M3VectorStore) -> None:
    index = store.index
    for fusion in Fusion:
        for rerank in (None, False):
            hits = index.search(QUERY, k=3, fusion=fusion, rerank=rerank)
            got = store.similarity_search_with_score(QUERY, k=3, fusion=fusion.value, rerank=rerank)
            assert [(d.id, s) for d, s in got] == [(h.doc_id, h.score) for h in hits]
            retriever = store.as_retriever(
                search_kwargs={"k": 3, "fusion": fusion.value, "rerank": rerank}
            )
            assert _ids(retriever.invoke(QUERY)) == [h.doc_id for h in hits]
    assert _ids(store.similarity_search(QUERY, k=1)) == ["d3"]
    assert len(store.similarity_search(QUERY, k=5)) == 5
    geo = store.as_retriever(search_kwargs={"k": 10, "filter": {"topic": "geo"}}).invoke(QUERY)
    assert geo and {d.metadata["topic"] for d in geo} == {"geo"}
    flt = models.Filter(
        must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=2, lte=4))]
    )
    assert sorted(_ids(store.similarity_search(QUERY, k=10, filter=flt))) == ["d2", "d3", "d4"]  # type: ignore[type-var]
    # the call's arguments win over search_kwargs
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert len(retriever.invoke(QUERY, k=4)) == 4
    # results carry exactly the stored metadata
    assert store.similarity_search(QUERY, k=1)[0].metadata == {"topic": "misc", "n": 3}


def test_store_defaults(tiny_encoder: M3Encoder) -> None:
    with M3VectorStore.from_documents(DOCS, tiny_encoder, fusion="m3", rerank=False) as s:
        # m3 without rerank: the dense and sparse weights, divided by their sum
        hits = s.index.search(QUERY, k=2, fusion=Fusion.M3, rerank=False, weights=(2 / 3, 1 / 3, 0))
        assert [sc for _, sc in s.similarity_search_with_score(QUERY, k=2)] == pytest.approx(
            [h.score for h in hits]
        )
        assert s.score_scale() is ScoreScale.WEIGHTED


async def test_async_retriever_and_search(store: M3VectorStore) -> None:
    retriever = store.as_retriever(search_kwargs={"k": 2, "fusion": "dbsf"})
    assert _ids(await retriever.ainvoke(QUERY)) == _ids(retriever.invoke(QUERY))
    assert await store.asimilarity_search_with_score(QUERY, k=3) == (
        store.similarity_search_with_score(QUERY, k=3)
    )


def test_score_threshold(store: M3VectorStore) -> None:
    scored = store.similarity_search_with_score(QUERY, k=len(DOCS))
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True)
    cut = (scores[1] + scores[2]) / 2  # keeps exactly two
    assert 0 < cut < 1  # ColBERT MaxSim: a similarity in [-1, 1]
    # a relevance is (1 + MaxSim) / 2 (langchain-qdrant's for cosine), so its threshold too;
    # the exact match's MaxSim is 1 plus float error, its relevance 1.0
    relevance_cut = (1 + cut) / 2
    relevant = store.similarity_search_with_relevance_scores(
        QUERY, k=10, score_threshold=relevance_cut
    )
    assert [(d.id, s) for d, s in relevant] == [
        (d.id, pytest.approx(min(1.0, (1 + s) / 2), rel=1e-12)) for d, s in scored[:2]
    ]
    retriever = store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": relevance_cut, "k": 10},
    )
    assert _ids(retriever.invoke(QUERY)) == _ids([d for d, _ in scored[:2]])
    # score_threshold in a similarity search filters on the final score too
    assert len(store.similarity_search(QUERY, k=10, score_threshold=cut)) == 2


async def test_score_threshold_async(store: M3VectorStore) -> None:
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.0}
    )
    assert _ids(await retriever.ainvoke(QUERY)) == _ids(retriever.invoke(QUERY))


def test_relevance_needs_a_similarity(store: M3VectorStore) -> None:
    assert store.score_scale() is ScoreScale.SIMILARITY  # ColBERT rerank
    assert store.score_scale(rerank=False) is ScoreScale.RANK
    with pytest.raises(ValueError, match="rank fusion"):
        store.similarity_search_with_relevance_scores(QUERY, rerank=False, score_threshold=0.5)
    m3 = store.similarity_search_with_relevance_scores(QUERY, k=3, fusion="m3", rerank=False)
    assert all(0.0 <= s <= 1.0 for _, s in m3)


def test_rank_fusion_threshold_retriever_refused_when_made(store: M3VectorStore) -> None:
    """A ``similarity_score_threshold`` retriever whose search scores by rank fusion fails in
    ``as_retriever`` (it was built, and failed at its first ``invoke``)."""
    with pytest.raises(ValueError, match=r"rank fusion \(dbsf\).*rerank=True"):
        store.as_retriever(
            search_type="similarity_score_threshold",
            search_kwargs={"score_threshold": 0.5, "fusion": "dbsf", "rerank": False},
        )
    store.rerank = False  # the store's defaults, when search_kwargs leave them unset
    with pytest.raises(ValueError, match="rank fusion"):
        store.as_retriever(
            search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.5}
        )
    # with ColBERT rerank the score is a similarity; a plain retriever needs no relevance
    kept = store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": 0.0, "rerank": True},
    ).invoke(QUERY)
    assert _ids(kept)[0] == "d3"
    assert _ids(store.as_retriever(search_kwargs={"k": 2}).invoke(QUERY))[0] == "d3"


def test_dense_only_store(minilm_encoder: M3Encoder) -> None:
    with M3VectorStore.from_documents(DOCS, minilm_encoder) as s:
        assert s.score_scale() is ScoreScale.SIMILARITY
        (doc, score), *_ = s.similarity_search_with_relevance_scores(QUERY, k=2)
        assert doc.id == "d3" and score == pytest.approx(1.0, abs=1e-4)
        # M3's weighted sum over the dense head alone is 0.4 x cosine: the relevance divides
        # by the weights of the heads that scored (an exact match used to get 0.4): a cosine
        assert s.score_scale(fusion="m3") is ScoreScale.SIMILARITY
        (doc, score), *_ = s.similarity_search_with_relevance_scores(QUERY, k=2, fusion="m3")
        assert doc.id == "d3" and score == pytest.approx(1.0, abs=1e-4)
        # the search's own score too (a score_threshold applies to it), and the retriever's
        (doc, score), *_ = s.similarity_search_with_score(QUERY, k=2, fusion="m3")
        assert doc.id == "d3" and score == pytest.approx(1.0, abs=1e-4)
        kept = s.similarity_search(QUERY, k=2, fusion="m3", score_threshold=0.9)
        assert [d.id for d in kept] == ["d3"]
        got = s.as_m3_retriever(k=1, fusion="m3", score_threshold=0.9).invoke(QUERY)
        assert [d.id for d in got] == ["d3"]
        assert got[0].metadata["score"] == pytest.approx(1.0, abs=1e-4)
        with pytest.raises(ValueError, match="ColBERT"):
            s.similarity_search(QUERY, rerank=True)


async def test_every_mmr_entry_point_says_why_it_is_not_supported(store: M3VectorStore) -> None:
    """MMR by vector (sync or async) was LangChain's bare ``NotImplementedError()``: no word
    of what is missing. Every MMR entry point now names it."""
    vector = store.embeddings.embed_query(QUERY)
    why = "no max_marginal_relevance_search.* does not read stored vectors back"
    with pytest.raises(NotImplementedError, match=why):
        store.max_marginal_relevance_search_by_vector(vector, k=2)
    with pytest.raises(NotImplementedError, match=why):
        await store.amax_marginal_relevance_search_by_vector(vector, k=2)
    with pytest.raises(NotImplementedError, match=why):
        await store.amax_marginal_relevance_search(QUERY, k=2)
    with pytest.raises(NotImplementedError, match=why):
        store.search(QUERY, "mmr", k=2)
    with pytest.raises(NotImplementedError, match=why):
        await store.asearch(QUERY, "mmr", k=2)


def test_bad_search_arguments(store: M3VectorStore) -> None:
    with pytest.raises(TypeError, match="fetch_k"):
        store.similarity_search(QUERY, fetch_k=3)
    with pytest.raises(ValueError, match="unknown search_kwargs"):
        store.as_retriever(search_kwargs={"top_k": 3})
    with pytest.raises(ValueError, match="mmr"):
        store.as_retriever(search_type="mmr")
    with pytest.raises(NotImplementedError, match="similarity"):
        store.max_marginal_relevance_search(QUERY)
    with pytest.raises(ValueError, match="k must be"):
        store.similarity_search(QUERY, k=0)
    with pytest.raises(ValueError):
        store.similarity_search(QUERY, fusion="best")
    with pytest.raises(TypeError, match="add_documents"):
        store.add_documents(DOCS, batch=3)
    with pytest.raises(ValueError, match="clear"):
        store.delete()


@pytest.mark.parametrize(
    ("search_kwargs", "message"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": "3"}, "k must be a positive integer"),
        ({"filter": {}}, "empty filter mapping"),
        ({"filter": {"topic": None}}, "filter on 'topic'"),
        ({"filter": "topic = geo"}, "filter must be a mapping"),
        ({"score_threshold": float("nan")}, "score_threshold must be a finite number"),
        ({"score_threshold": "0.5"}, "score_threshold must be a finite number"),
    ],
)
def test_a_bad_k_filter_or_threshold_in_search_kwargs_fails_in_as_retriever(
    store: M3VectorStore, search_kwargs: dict[str, Any], message: str
) -> None:
    """``as_retriever`` checked only the ranking settings of ``search_kwargs``: a retriever
    with ``k=0``, an empty or malformed filter or a NaN threshold was built, and failed at its
    first ``invoke`` in a running chain (``M3Retriever`` refuses them when it is built)."""
    for search_type in ("similarity", "similarity_score_threshold"):
        given = {"score_threshold": 0.5, **search_kwargs}
        if search_type == "similarity" and "score_threshold" not in search_kwargs:
            given.pop("score_threshold")
        with pytest.raises((ValueError, TypeError), match=message):
            store.as_retriever(search_type=search_type, search_kwargs=given)
        with pytest.raises((ValueError, TypeError), match=message):  # as a search says it
            store.similarity_search(QUERY, **given)


def test_search_by_vector_is_dense(store: M3VectorStore, tiny_encoder: M3Encoder) -> None:
    vector = tiny_encoder.encode_queries([QUERY], heads="dense").dense[0]
    dense_hits = store.index.store.query(dense=vector, k=3, rerank=False)
    got = store.similarity_search_with_score_by_vector(vector.tolist(), k=3)
    assert [(d.id, s) for d, s in got] == [(h.doc_id, h.score) for h in dense_hits]
    assert got[0][0].id == "d3" and got[0][1] == pytest.approx(1.0, abs=1e-5)
    assert _ids(store.similarity_search_by_vector(vector.tolist(), k=3)) == _ids(
        [d for d, _ in got]
    )
    geo = store.similarity_search_by_vector(vector.tolist(), k=10, filter={"topic": "geo"})
    assert {d.metadata["topic"] for d in geo} == {"geo"}
    assert isinstance(store.embeddings, M3Embeddings)
    np.testing.assert_allclose(store.embeddings.embed_query(QUERY), vector, atol=1e-6)


@pytest.mark.parametrize("fill", [0.0, float("nan")])
async def test_search_by_a_vector_without_direction_is_refused(
    store: M3VectorStore, tiny_encoder: M3Encoder, fill: float
) -> None:
    # an all-zero vector returned k arbitrary documents scored 0.0 (NaN: as many, scored by
    # the engine's reading of NaN); LlamaIndex's query embedding is refused so already
    vector = [fill] * tiny_encoder.dense_dim
    message = "all zeros \\(or not finite\\)"
    with pytest.raises(ValueError, match=message):
        store.similarity_search_by_vector(vector, k=2)
    with pytest.raises(ValueError, match=message):
        store.similarity_search_with_score_by_vector(vector, k=2)
    with pytest.raises(ValueError, match=message):
        await store.asimilarity_search_by_vector(vector, k=2)


def test_ids_get_delete_clear(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    texts = ["alpha beta", "gamma delta", "epsilon"]
    with M3VectorStore.from_texts(
        texts, tiny_encoder, [{"i": 0}, {"i": 1}, {"i": 2}], ids=["a", "b", "c"], location=tmp_path
    ) as s:
        assert [d.id for d in s.get_by_ids(["c", "zzz", "a", "c"])] == ["c", "a"]
        assert s.get_by_ids(["c"])[0] == Document(id="c", page_content="epsilon", metadata={"i": 2})
        assert s.add_texts(["epsilon"], [{"i": 2}], ids=["c"]) == ["c"]  # unchanged: no-op
        assert s.index.count() == 3
        s.delete(["a", "nope"])
        assert sorted(d.id for d in s.get_by_ids(["a", "b", "c"])) == ["b", "c"]  # type: ignore[type-var]
        generated = s.add_documents([Document("zeta"), Document("eta", id="e")])
        assert generated[1] == "e" and generated[0] not in ("", "e")
        with pytest.raises(ValueError, match="twice"):
            s.add_documents([Document("x", id="x"), Document("y", id="x")])
        s.clear()
        assert s.index.count() == 0 and s.similarity_search("zeta") == []
    with M3VectorStore.open(tiny_encoder, tmp_path) as again:  # persisted folder reopens
        assert again.get_by_ids(["b"]) == []


def test_late_chunking_documents_share_their_id(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit.late_chunking import LateChunker

    text = " ".join(SAMPLE_TEXTS[:4])
    chunker = LateChunker(tiny_encoder, chunk_size=12)
    with M3VectorStore.open(tiny_encoder, late_chunking=chunker) as s:
        written = record_upserts(s.index, monkeypatch)
        s.add_documents([Document(text, id="long", metadata={"src": "x"})])
        _assert_same_vectors(written, chunker.chunk([text])[0])  # late-chunked vectors stored
        s.add_documents([DOCS[5]], late_chunking=False)
        # a section the user split with add_start_index, stored whole: its keys are its own
        section = Document(SAMPLE_TEXTS[6], id="sec", metadata={"start_index": 118})
        s.add_documents([section], late_chunking=False)
        chunks = s.get_by_ids(["long", "d5"])
        long = [c for c in chunks if c.id == "long"]
        assert len(long) > 2 and chunks[-1].id == "d5"
        assert [c.metadata["chunk_index"] for c in long] == list(range(len(long)))
        for c in long:
            start, end = c.metadata["start_index"], c.metadata["end_index"]
            assert text[start:end] == c.page_content and c.metadata["src"] == "x"
        assert "chunk_index" not in chunks[-1].metadata  # a one-chunk document: as stored
        hits = s.similarity_search(long[1].page_content, k=len(long), filter={"src": "x"})
        assert sorted(h.metadata["chunk_index"] for h in hits) == list(range(len(long)))
        assert {h.id for h in hits} == {"long"}
        # the keys a returned chunk shows can be filtered on (they used to match nothing),
        # and a filter matches what the Documents show: a whole document shows no chunk place
        first = s.similarity_search(long[1].page_content, k=9, filter={"chunk_index": 0})
        assert {(h.id, h.metadata["chunk_index"]) for h in first} == {("long", 0)}
        at = s.similarity_search(
            QUERY, k=9, filter={"start_index": long[1].metadata["start_index"]}
        )
        assert [h.page_content for h in at] == [long[1].page_content]
        for start in (0, 118):  # the user's own start_index of a whole document
            got = s.similarity_search(QUERY, k=20, filter={"start_index": start})
            assert got and all(h.metadata["start_index"] == start for h in got)
            assert ("sec" in {h.id for h in got}) is (start == 118)
        retriever = M3Retriever(index=s.index, k=9)
        # the retriever shows no chunk offsets: start_index is the user's key alone
        starts = {long[i].metadata["start_index"] for i in range(len(long))} | {118}
        got = retriever.invoke(QUERY, filter={"start_index": list(starts)})
        assert [(d.id, d.metadata["start_index"]) for d in got] == [("sec", 118)]
        zero = retriever.invoke(QUERY, filter={"chunk_index": 0})  # shown on every chunk
        assert {d.id for d in zero} == {"long", "d5", "sec"}
        assert {d.metadata["doc_id"] for d in retriever.invoke(QUERY, filter={"doc_id": "d5"})} == {
            "d5"
        }
        # a chunk read back and added again would replace its whole document: refused
        edited = long[1].model_copy(update={"page_content": "An edited chunk."})
        count = s.index.count()
        for add in (s.add_documents, retriever.add_documents):
            with pytest.raises(ValueError, match="chunk 1 of the stored document 'long'"):
                add([edited])
        with pytest.raises(ValueError, match="replace the whole document"):
            retriever.add_documents([next(d for d in retriever.invoke(QUERY) if d.id == "long")])
        assert s.index.count() == count and s.get_by_ids(["long"]) == long
        s.delete(["long"])
        assert s.get_by_ids(["long"]) == [] and s.index.count() == 2


def test_m3_retriever_shares_the_index(store: M3VectorStore) -> None:
    retriever = store.as_m3_retriever(k=2)
    assert isinstance(retriever, M3Retriever) and retriever.index is store.index
    docs = retriever.invoke(QUERY)
    assert [d.metadata["doc_id"] for d in docs] == _ids(store.similarity_search(QUERY, k=2))


def test_langchain_indexing_api_writes_through_the_store(store: M3VectorStore) -> None:
    # langchain_core.indexing.index() calls add_documents(docs, ids=..., batch_size=...):
    # the store used to refuse batch_size, so the record-manager workflow could not run
    from langchain_core.indexing import InMemoryRecordManager, index

    manager = InMemoryRecordManager(namespace="m3kit-test")
    manager.create_schema()
    docs = [
        Document(page_content=t, metadata={"source": f"s{i % 2}"})
        for i, t in enumerate(SAMPLE_TEXTS[:4])
    ]
    kwargs: dict[str, Any] = {"cleanup": "incremental", "source_id_key": "source"}

    def stored() -> int:  # documents beyond the fixture's own
        return len(store.index.store.document_metadata()) - len(DOCS)

    first = index(docs, manager, store, **kwargs)
    assert (first["num_added"], stored()) == (4, 4)
    again = index(docs, manager, store, **kwargs)
    assert (
        again["num_skipped"],
        again["num_added"],
        stored(),
    ) == (4, 0, 4)
    edited = [Document(page_content="Saturn has rings.", metadata={"source": "s0"}), *docs[1::2]]
    third = index(edited, manager, store, **kwargs)
    assert (
        third["num_added"],
        third["num_deleted"],
        stored(),
    ) == (1, 2, 3)
    # batch_size is honoured: same ids, written a few documents at a time
    writes: list[int] = []
    add_texts = store.index.add_texts

    def counting(texts: Any, *args: Any, **kw: Any) -> list[str]:
        writes.append(len(texts))
        return add_texts(texts, *args, **kw)

    store.index.add_texts = counting  # type: ignore[method-assign]
    more = [Document(page_content=f"Note number {i}.") for i in range(5)]
    ids = store.add_documents(more, batch_size=2)
    assert writes == [2, 2, 1] and store.get_by_ids(ids)[0].page_content == "Note number 0."
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        store.add_documents(docs, batch_size=0)


def test_retriever_fields_and_store_settings_are_checked_as_a_search_checks_them(
    store: M3VectorStore, minilm_encoder: M3Encoder
) -> None:
    """``M3Retriever(score_threshold=True)`` / ``"0.5"`` were converted by pydantic (to 1.0
    and 0.5) where a search refuses them; a numpy ``k`` was refused with "k must be a positive
    integer"; ``search_settings(fusoin=...)`` returned the defaults; ``as_retriever`` took
    ``rerank=True`` on a collection without ColBERT, failing only when invoked."""
    for bad in (True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="score_threshold must be a finite number"):
            M3Retriever(index=store.index, score_threshold=bad)
        with pytest.raises(ValueError, match="score_threshold must be a finite number"):
            store.as_m3_retriever(score_threshold=bad)
    assert M3Retriever(index=store.index, score_threshold=0).score_threshold == 0.0
    assert len(store.similarity_search(QUERY, k=np.int64(2))) == 2
    assert len(M3Retriever(index=store.index, k=np.int64(2)).invoke(QUERY)) == 2
    with pytest.raises(TypeError, match="fusoin"):
        store.search_settings(fusoin="rrf")  # type: ignore[call-arg]
    dense_only = M3VectorStore.from_documents(DOCS[:2], minilm_encoder)
    with dense_only, pytest.raises(ValueError, match="rerank=True needs ColBERT vectors"):
        dense_only.as_retriever(search_kwargs={"rerank": True})
