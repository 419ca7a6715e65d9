"""M3Embedding + m3_sparse_fns inside LlamaIndex's own QdrantVectorStore, hybrid mode."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

from llamaindex_m3 import M3QdrantVectorStore
from llamaindex_m3.embeddings import M3Embedding, m3_sparse_fns
from m3kit import M3Encoder

DOCS = [
    Document(text="Berlin is the capital of Germany.", metadata={"topic": "geo"}),
    Document(text="Oxygen has the atomic number 8.", metadata={"topic": "chem"}),
    Document(text="The Amazon river flows through Brazil and Peru.", metadata={"topic": "geo"}),
    Document(text="Photosynthesis turns light into chemical energy.", metadata={"topic": "bio"}),
]


@pytest.fixture()
def hybrid_index(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> tuple[VectorStoreIndex, QdrantClient]:
    embed = M3Embedding.from_encoder(tiny_encoder)  # its own: m3_sparse_fns changes it
    client = QdrantClient(":memory:")
    doc_fn, query_fn = m3_sparse_fns(embed)
    calls: list[int] = []
    encode = tiny_encoder.encode

    def counting_encode(texts: list[str], **options: Any) -> Any:
        calls.append(len(texts))
        return encode(texts, **options)

    monkeypatch.setattr(tiny_encoder, "encode", counting_encode)
    store = QdrantVectorStore(
        client=client,
        collection_name="li_hybrid",
        enable_hybrid=True,
        sparse_doc_fn=doc_fn,
        sparse_query_fn=query_fn,
    )
    index = VectorStoreIndex.from_documents(
        DOCS,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    assert calls == [len(DOCS)]  # one forward pass gave the dense and the sparse vectors
    assert len(embed.sparse_handoff()) == 0  # every sparse vector was taken by the store
    monkeypatch.undo()
    return index, client


@pytest.mark.parametrize("mode", ["hybrid", "sparse", "default"])
def test_query_modes_find_the_matching_node(
    hybrid_index: tuple[VectorStoreIndex, QdrantClient], mode: str
) -> None:
    index, _ = hybrid_index
    retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=2, sparse_top_k=4)
    for doc in DOCS:
        hits = retriever.retrieve(doc.text)
        assert hits, mode
        assert hits[0].node.get_content() == doc.text, mode
        assert hits[0].node.metadata["topic"] == doc.metadata["topic"]


def test_stored_sparse_vectors_are_m3s(
    hybrid_index: tuple[VectorStoreIndex, QdrantClient], tiny_encoder: M3Encoder
) -> None:
    _, client = hybrid_index
    info = client.get_collection("li_hybrid")
    assert set(info.config.params.sparse_vectors or {}) == {"text-sparse-new"}
    points, _ = client.scroll("li_hybrid", with_vectors=True, with_payload=True, limit=10)
    assert len(points) == len(DOCS)
    fresh_doc_fn, _ = m3_sparse_fns(tiny_encoder)  # no handoff: encodes the text itself
    for point in points:
        stored = point.vector["text-sparse-new"]  # type: ignore[index]
        node = metadata_dict_to_node(point.payload)  # type: ignore[arg-type]
        # the store embeds node.get_content(MetadataMode.EMBED): text plus metadata lines
        (indices,), (values,) = fresh_doc_fn([node.get_content(metadata_mode=MetadataMode.EMBED)])
        assert stored.indices == indices
        assert stored.values == pytest.approx(values, abs=1e-5)


def test_hybrid_query_engine(hybrid_index: tuple[VectorStoreIndex, QdrantClient]) -> None:
    index, _ = hybrid_index
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=8), vector_store_query_mode="hybrid", similarity_top_k=2
    )
    response = engine.query(DOCS[1].text)
    assert response.source_nodes[0].node.get_content() == DOCS[1].text
    assert str(response)  # MockLLM answers with filler text


def _two_client_store(
    name: str, sparse_model: M3Encoder | M3Embedding, embed: M3Embedding
) -> tuple[M3QdrantVectorStore, list[TextNode]]:
    """A store on two in-memory databases (sync and async client) and DOCS as embedded nodes."""
    store = M3QdrantVectorStore(
        name,
        client=QdrantClient(":memory:"),
        aclient=AsyncQdrantClient(":memory:"),
        sparse_model=sparse_model,
    )
    nodes = [
        TextNode(text=d.text, id_=f"00000000-0000-0000-0000-00000000000{i}", metadata=d.metadata)
        for i, d in enumerate(DOCS)
    ]
    for node in nodes:
        node.embedding = embed.get_text_embedding(node.get_content(MetadataMode.EMBED))
    return store, nodes


async def test_m3_qdrant_store_async_hybrid_query_keeps_alpha_zero(tiny_encoder: M3Encoder) -> None:
    """LlamaIndex's ``QdrantVectorStore.aquery`` fused with ``alpha=query.alpha or 0.5``: an
    async hybrid query with ``alpha=0`` (sparse only) was fused 50/50 while ``query`` kept 0.
    ``M3QdrantVectorStore`` passes the query's own alpha to the fusion, sync and async."""
    embed = M3Embedding.from_encoder(tiny_encoder)  # its own: the store starts its handoff
    store, nodes = _two_client_store("alpha", embed, embed)
    store.add(nodes)  # the same points through both clients (two in-memory databases)
    await store.async_add(nodes)
    text = DOCS[1].text
    for alpha in (0.0, 0.3, None):
        query = VectorStoreQuery(
            query_embedding=embed.get_query_embedding(text),
            query_str=text,
            similarity_top_k=4,
            mode=VectorStoreQueryMode.HYBRID,
            alpha=alpha,
        )
        sync, asyn = store.query(query), await store.aquery(query)
        assert asyn.ids == sync.ids, alpha
        assert asyn.similarities == pytest.approx(sync.similarities, abs=1e-6), alpha


async def test_m3_qdrant_store_aquery_encodes_the_query_off_the_event_loop(
    tiny_encoder: M3Encoder,
) -> None:
    """``QdrantVectorStore.aquery`` called the sparse query function (an M3 forward pass) on
    the event loop: every other task stalled for it, and concurrent queries ran one after
    another. The query is encoded in a worker thread and handed over; results are the sync
    query's, and a ``set_query_functions`` function gets the same handoff."""
    import asyncio
    import threading

    embed = M3Embedding.from_encoder(tiny_encoder)
    store, nodes = _two_client_store("loop", embed, embed)
    store.add(nodes)
    await store.async_add(nodes)
    threads: list[int] = []
    _, query_fn = m3_sparse_fns(embed)

    def recording(texts: list[str]) -> Any:
        threads.append(threading.get_ident())
        return query_fn(texts)

    fuse = store._hybrid_fusion_fn.fuse  # (set_query_functions replaces all three)
    store.set_query_functions(store._sparse_doc_fn, recording, fuse)
    loop_thread = threading.get_ident()
    for mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID):
        queries = [
            VectorStoreQuery(
                query_embedding=embed.get_query_embedding(d.text),
                query_str=d.text,
                similarity_top_k=2,
                mode=mode,
            )
            for d in DOCS
        ]
        threads.clear()
        answers = await asyncio.gather(*(store.aquery(q) for q in queries))
        assert len(threads) == len(queries) and loop_thread not in threads, mode
        for query, answer in zip(queries, answers, strict=True):
            assert answer.ids == store.query(query).ids, mode


async def test_m3_qdrant_store_async_add_encodes_off_the_event_loop(
    tiny_encoder: M3Encoder,
) -> None:
    """``QdrantVectorStore.async_add`` builds its points (the sparse document function: an M3
    forward pass per batch) on the event loop. The vectors of nodes the embedding did not
    hand over are encoded in a worker thread; the points are the sync ``add``'s."""
    import threading

    embed = M3Embedding.from_encoder(tiny_encoder)
    # sparse_model an encoder: no handoff, every node encoded by the store
    store, nodes = _two_client_store("docs_async", tiny_encoder, embed)
    threads: list[int] = []
    doc_fn, query_fn = m3_sparse_fns(tiny_encoder)

    def recording(texts: list[str]) -> Any:
        threads.append(threading.get_ident())
        return doc_fn(texts)

    store.add(nodes)  # the sync client's database (first: it creates the collection there)
    store.set_query_functions(recording, query_fn, store._hybrid_fusion_fn.fuse)
    await store.async_add(nodes)  # the async client's
    assert threads and threading.get_ident() not in threads
    query = VectorStoreQuery(
        query_str=DOCS[1].text, similarity_top_k=4, mode=VectorStoreQueryMode.SPARSE
    )
    sync, asyn = store.query(query), await store.aquery(query)
    assert asyn.ids == sync.ids
    assert asyn.similarities == pytest.approx(sync.similarities, abs=1e-6)
