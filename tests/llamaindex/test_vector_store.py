"""M3VectorStore inside LlamaIndex: VectorStoreIndex, query engines, modes, filters, updates."""

from __future__ import annotations

import doctest

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from pydantic import ValidationError

import llamaindex_m3.vector_store
from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import point_id
from tests.llamaindex.vector_store_docs import IDS, TEXTS, _docs, _eq


@pytest.fixture()
def index(store: M3VectorStore, tiny_embedding: M3Embedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )


def test_from_documents_stores_one_chunk_per_node(
    index: VectorStoreIndex, store: M3VectorStore
) -> None:
    assert store.client.count() == len(TEXTS)
    nodes = store.get_nodes([point_id(i, 0) for i in IDS])
    assert [n.get_content() for n in nodes] == TEXTS
    assert [n.ref_doc_id for n in nodes] == IDS
    assert nodes[0].metadata == {"topic": "geo", "year": 2020, "doc_id": "berlin", "chunk_index": 0}


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_query_modes_find_the_text(index: VectorStoreIndex, mode: str) -> None:
    retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=2)
    for text, doc_id in zip(TEXTS, IDS, strict=True):
        hits = retriever.retrieve(text)
        assert hits[0].node.ref_doc_id == doc_id and hits[0].node.get_content() == text, mode
        assert len(hits) == 2 and (hits[0].score or 0.0) >= (hits[1].score or 0.0)


def test_default_mode_is_dense_with_the_query_embedding(
    index: VectorStoreIndex, store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    emb = tiny_embedding.get_query_embedding(TEXTS[1])
    got = store.query(VectorStoreQuery(query_embedding=emb, similarity_top_k=4))
    want = store.client.store.query(dense=emb, k=4, rerank=False)
    assert got.ids == [h.chunk_id for h in want] and got.similarities == [h.score for h in want]
    assert [n.node_id for n in got.nodes or []] == got.ids
    # the retriever path computes the same embedding and gets the same ranking
    hits = index.as_retriever(similarity_top_k=4).retrieve(TEXTS[1])
    assert [h.node.node_id for h in hits] == got.ids


def test_hybrid_equals_the_m3_retriever(index: VectorStoreIndex, store: M3VectorStore) -> None:
    """Hybrid mode = dense + sparse, RRF, ColBERT rerank: M3Index.search's plan and scores."""
    for text in TEXTS:
        hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3).retrieve(
            text
        )
        want = store.client.search(text, k=3)
        assert [h.node.node_id for h in hits] == [h.chunk_id for h in want]
        assert [h.score for h in hits] == pytest.approx([h.score for h in want], abs=1e-6)


def test_query_engine_answers(store: M3VectorStore, tiny_embedding: M3Embedding) -> None:
    VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )
    index = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=5), vector_store_query_mode="hybrid", similarity_top_k=1
    )
    response = engine.query(TEXTS[2])
    assert str(response).strip() == "text text text text text"
    assert [n.node.get_content() for n in response.source_nodes] == [TEXTS[2]]


def test_insert_delete_ref_doc_and_edits(
    index: VectorStoreIndex, store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    index.insert(_docs()[0])  # the same document again: nothing new
    assert store.client.count() == 4
    index.insert(Document(text="Munich is in Bavaria. It has a big beer festival.", id_="munich"))
    assert store.client.count() == 5
    edited = Document(text="Berlin has been the capital since 1990.", id_="berlin")
    index.insert(edited)  # a new version replaces the stored one
    (node,) = store.get_nodes(filters=_eq("doc_id", "berlin"))
    assert node.get_content() == edited.text and store.client.count() == 5
    index.delete_ref_doc("berlin")
    index.delete_ref_doc("munich")
    assert store.client.count() == 3
    assert {n.node.ref_doc_id for n in index.as_retriever(similarity_top_k=5).retrieve("x")} == {
        "oxygen",
        "amazon",
        "photo",
    }


def test_filters(index: VectorStoreIndex) -> None:
    def ids(filters: MetadataFilters, mode: str = "hybrid") -> set[str]:
        retriever = index.as_retriever(
            vector_store_query_mode=mode, similarity_top_k=4, filters=filters
        )
        return {h.node.ref_doc_id or "" for h in retriever.retrieve(TEXTS[0])}

    assert ids(_eq("topic", "geo")) == {"berlin", "amazon"}
    assert ids(_eq("topic", "geo"), "default") == {"berlin", "amazon"}
    later = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GT)]
    )
    assert ids(later, "sparse") <= {"amazon", "photo"}
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="bio"),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.LTE),
        ],
        condition=FilterCondition.OR,
    )
    assert ids(either) == {"photo", "berlin"}


def test_doc_ids_and_node_ids_restrict_the_query(index: VectorStoreIndex) -> None:
    store = index.vector_store
    q = VectorStoreQuery(
        query_str=TEXTS[0], mode=VectorStoreQueryMode.SPARSE, similarity_top_k=4, doc_ids=["photo"]
    )
    assert [n.ref_doc_id for n in store.query(q).nodes or []] == ["photo"]
    q.doc_ids, q.node_ids = None, [point_id("oxygen", 0), point_id("amazon", 0)]
    assert {n.ref_doc_id for n in store.query(q).nodes or []} <= {"oxygen", "amazon"}


def test_get_delete_nodes_and_clear(index: VectorStoreIndex, store: M3VectorStore) -> None:
    geo = store.get_nodes(filters=_eq("topic", "geo"))
    assert sorted(n.ref_doc_id or "" for n in geo) == ["amazon", "berlin"]
    store.delete_nodes([geo[0].node_id])
    assert store.client.count() == 3
    store.delete_nodes(filters=_eq("topic", "chem"))
    assert store.get_nodes(filters=_eq("topic", "chem")) == []
    index.delete_nodes([point_id("photo", 0)])  # through the index
    assert store.client.count() == 1
    store.clear()
    assert store.client.count() == 0
    with pytest.raises(ValueError, match=r"delete_nodes needs node_ids or filters.*clear\(\)"):
        store.delete_nodes()
    assert store.get_nodes(["my-node"]) == []  # no node has that id


def test_alpha_weighs_dense_against_sparse(
    index: VectorStoreIndex, tiny_embedding: M3Embedding
) -> None:
    store = index.vector_store
    with pytest.raises(ValueError, match="fusion='m3'"):
        index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5).retrieve(TEXTS[0])
    m3 = M3VectorStore.from_index(store.client, fusion="m3")
    emb = tiny_embedding.get_query_embedding(TEXTS[1])
    q = VectorStoreQuery(
        query_embedding=emb, query_str=TEXTS[1], mode=VectorStoreQueryMode.HYBRID, alpha=0.0
    )
    sparse_only = m3.query(q)
    plain = m3.client.store.query(
        sparse=m3.client.encoder.encode([TEXTS[1]], heads=["sparse"], query=True).sparse[0], k=1
    )
    assert sparse_only.ids and sparse_only.ids[0] == plain[0].chunk_id
    assert sparse_only.similarities and sparse_only.similarities[0] == pytest.approx(
        plain[0].score, rel=1e-5
    )
    q.alpha = 1.5
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        m3.query(q)


def test_errors_name_the_problem(
    store: M3VectorStore, tiny_encoder: M3Encoder, minilm_encoder: M3Encoder
) -> None:
    with pytest.raises(NotImplementedError, match="'mmr' is not supported"):
        store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.MMR))
    with pytest.raises(ValueError, match="query_str is missing"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 32, mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(TypeError, match="unsupported arguments"):
        store.query(VectorStoreQuery(query_str="x"), mode="hybrid")
    with pytest.raises(ValidationError, match="extra"):
        M3VectorStore(tiny_encoder, collection="oops")
    with pytest.raises(ValueError, match="a model .* or an opened index"):
        M3VectorStore()
    with pytest.raises(ValueError, match="do not also give"):
        M3VectorStore(index=store.client, location="./x")
    with M3VectorStore(minilm_encoder, collection_name="dense_only") as dense_only:
        with pytest.raises(ValueError, match="hybrid mode needs sparse vectors"):
            dense_only.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.HYBRID))
        with pytest.raises(ValueError, match="rerank=True needs ColBERT"):
            M3VectorStore.from_index(dense_only.client, rerank=True)


def test_docstring_example() -> None:
    result = doctest.testmod(llamaindex_m3.vector_store, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
