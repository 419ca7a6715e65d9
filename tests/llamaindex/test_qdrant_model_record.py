"""LlamaIndex ``M3QdrantVectorStore`` records its sparse model and refuses another's.

LlamaIndex's ``QdrantVectorStore`` records nothing of the model: a collection written with
checkpoint A and opened with a fine-tune of it was searched with the new model's sparse
queries against A's sparse vectors, silently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from llamaindex_m3 import M3QdrantVectorStore, m3_sparse_fns
from llamaindex_m3.embeddings import M3Embedding
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store.stock_record import RECORD_KEY
from m3kit.testing import SAMPLE_TEXTS

DOCS = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS[:4])]


def test_a_collection_of_another_sparse_model_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    client = QdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    store = M3QdrantVectorStore("c", client=client, sparse_model=embed)
    VectorStoreIndex.from_documents(
        DOCS, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    assert set((client.get_collection("c").config.metadata or {})[RECORD_KEY]) == {
        "sparse",
        "sparse_cut",
        "text_instruction",
    }
    M3QdrantVectorStore("c", client=client, sparse_model=enc_a)  # the same model: accepted
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_b)
    # a store built before another model's store wrote the collection is refused at its add
    fresh = QdrantClient(":memory:")
    early = M3QdrantVectorStore("c", client=fresh, sparse_model=M3Embedding.from_encoder(enc_b))
    late = M3QdrantVectorStore("c", client=fresh, sparse_model=embed)
    VectorStoreIndex.from_documents(
        DOCS[:2], storage_context=StorageContext.from_defaults(vector_store=late), embed_model=embed
    )
    with pytest.raises(FingerprintMismatchError):
        VectorStoreIndex.from_documents(
            DOCS[2:],
            storage_context=StorageContext.from_defaults(vector_store=early),
            embed_model=M3Embedding.from_encoder(enc_b),
        )
    assert fresh.count("c").count == 2


def _index(docs: list[Document], store: QdrantVectorStore, embed: M3Embedding) -> None:
    storage = StorageContext.from_defaults(vector_store=store)
    VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=embed)


def test_a_collection_the_store_creates_is_recorded_without_a_warning(
    enc_a: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """The first add creates the collection and records the model after that write: it warned
    that the collection had "no record of the model that wrote its vectors (written by another
    program)", about the vectors the store had just written itself."""
    client = QdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    with caplog.at_level("WARNING", logger="m3kit"):
        _index(DOCS, M3QdrantVectorStore("new", client=client, sparse_model=embed), embed)
    assert "no record of the model" not in caplog.text
    assert set((client.get_collection("new").config.metadata or {})[RECORD_KEY]) == {
        "sparse",
        "sparse_cut",
        "text_instruction",
    }
    # a collection another program wrote (points, no record) still warns at the first write
    doc_fn, query_fn = m3_sparse_fns(embed)
    stock = QdrantVectorStore(
        "other", client=client, enable_hybrid=True, sparse_doc_fn=doc_fn, sparse_query_fn=query_fn
    )
    _index(DOCS[:2], stock, embed)
    with caplog.at_level("WARNING", logger="m3kit"):
        _index(DOCS[2:], M3QdrantVectorStore("other", client=client, sparse_model=embed), embed)
    assert "'other' has no record of the model" in caplog.text


def test_a_collection_m3kit_indexed_with_another_model_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    """A collection ``M3Index`` wrote (``m3kit index``, ``M3VectorStore``) records its encoder
    in m3kit's own record, which ``M3QdrantVectorStore`` did not read: built on it with
    another model, it searched the stored sparse vectors with that model's queries."""
    from m3kit.store import M3Index

    with M3Index.open(enc_a, tmp_path / "q", collection="c", backend="client") as index:
        index.add_texts(SAMPLE_TEXTS[:4])
    client = QdrantClient(path=str(tmp_path / "q"))
    names = {"dense_vector_name": "dense", "sparse_vector_name": "sparse"}
    M3QdrantVectorStore("c", client=client, sparse_model=enc_a, **names)  # its model: accepted
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_b, **names)
    client.close()


def test_a_collection_stored_with_another_sparse_cut_is_refused(enc_a: M3Encoder) -> None:
    """The sparse model's ``sparse_top_k`` cuts every stored and queried sparse vector: a
    store built on the collection with another cut (or none) wrote and searched vectors cut
    two ways, silently (the record named the model only)."""
    from llamaindex_m3.embeddings import M3SparseEmbedding

    client = QdrantClient(":memory:")
    cut = M3SparseEmbedding.from_encoder(enc_a)
    cut.sparse_top_k = 2
    store = M3QdrantVectorStore("c", client=client, sparse_model=cut)
    _index(DOCS[:2], store, M3Embedding.from_encoder(enc_a))
    M3QdrantVectorStore("c", client=client, sparse_model=cut)  # the same cut: accepted
    with pytest.raises(ValueError, match="sparse_top_k=2"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_a)


def test_a_collection_stored_with_another_document_prefix_is_refused(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """The sparse model's ``text_instruction`` prefixes every stored document: reopened with
    another prefix (or none), or written through LangChain's store (which never prefixes),
    the collection held prefixed and bare document vectors side by side, silently."""
    from llamaindex_m3 import M3VectorStore
    from tests.langchain.qdrant_stores import hybrid_store

    client = QdrantClient(":memory:")
    prefixed = M3Embedding.from_encoder(enc_a, text_instruction="passage: ")
    early = M3QdrantVectorStore("c", client=client, sparse_model=enc_a)  # before any record
    _index(DOCS[:2], M3QdrantVectorStore("c", client=client, sparse_model=prefixed), prefixed)
    meta = client.get_collection("c").config.metadata or {}
    assert meta[RECORD_KEY]["text_instruction"] == "passage: "
    M3QdrantVectorStore("c", client=client, sparse_model=prefixed)  # the same prefix: accepted
    with pytest.raises(ValueError, match=r"'passage: '.*no document prefix"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_a)
    with pytest.raises(ValueError, match="'passage: '"):
        _index(DOCS[2:3], early, M3Embedding.from_encoder(enc_a))
    langchain = hybrid_store(
        client, enc_a, vector_name="text-dense", sparse_vector_name="text-sparse-new"
    )
    assert langchain.similarity_search(SAMPLE_TEXTS[0], k=1)  # reading it is sound
    with pytest.raises(ValueError, match="'passage: '"):
        langchain.add_texts([SAMPLE_TEXTS[3]])
    assert client.count("c").count == 2
    # a record from before the prefix was recorded takes the first writer's
    record = {k: v for k, v in meta[RECORD_KEY].items() if k != "text_instruction"}
    client.update_collection("c", metadata={RECORD_KEY: record})
    langchain.add_texts([SAMPLE_TEXTS[3]])
    assert (client.get_collection("c").config.metadata or {})[RECORD_KEY]["text_instruction"] == ""
    with pytest.raises(ValueError, match="no document prefix"):
        M3QdrantVectorStore("c", client=client, sparse_model=prefixed)
    # a collection M3VectorStore wrote with a prefix (m3kit's own record names it)
    with M3VectorStore(
        prefixed, location=str(tmp_path / "q"), collection_name="c", backend="client"
    ) as store:
        node = TextNode(text=SAMPLE_TEXTS[0], id_="n0")
        node.embedding = prefixed.get_text_embedding(SAMPLE_TEXTS[0])
        store.add([node])
    client = QdrantClient(path=str(tmp_path / "q"))
    names = {"dense_vector_name": "dense", "sparse_vector_name": "sparse"}
    M3QdrantVectorStore("c", client=client, sparse_model=prefixed, **names)
    with pytest.raises(ValueError, match="'passage: '"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_a, **names)
    client.close()


def test_a_collection_m3kit_indexed_is_read_not_written(enc_a: M3Encoder, tmp_path: Path) -> None:
    """A node written into an ``M3Index`` collection through LlamaIndex's layout has no ColBERT
    vector and no m3kit chunk payload: the index's (ColBERT-reranked) searches never returned
    it, silently, while the write succeeded (sync and async alike)."""
    import asyncio

    from qdrant_client import AsyncQdrantClient

    from m3kit.store import M3Index

    with M3Index.open(enc_a, tmp_path / "r", collection="c", backend="client") as index:
        index.add_texts(SAMPLE_TEXTS[:2])
    names = {"dense_vector_name": "dense", "sparse_vector_name": "sparse"}
    embed = M3Embedding.from_encoder(enc_a)
    client = QdrantClient(path=str(tmp_path / "r"))
    store = M3QdrantVectorStore("c", client=client, sparse_model=embed, **names)
    with pytest.raises(ValueError, match="'c' is an m3kit index.*Write through M3VectorStore"):
        _index(DOCS[2:3], store, embed)
    assert client.count("c").count == 2
    client.close()

    async def write() -> None:
        aclient = AsyncQdrantClient(path=str(tmp_path / "r"))
        store = M3QdrantVectorStore("c", aclient=aclient, sparse_model=embed, **names)
        node = TextNode(text=SAMPLE_TEXTS[3], id_=f"00000000-0000-0000-0000-{3:012d}")
        node.embedding = embed.get_text_embedding(SAMPLE_TEXTS[3])
        try:
            with pytest.raises(ValueError, match="is an m3kit index"):
                await store.async_add([node])
            assert (await aclient.count("c")).count == 2
        finally:
            await aclient.close()

    asyncio.run(write())


def test_an_async_only_store_records_and_checks_its_model(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    """A store built with ``aclient=`` alone recorded nothing at ``async_add`` and checked
    nothing at ``aquery`` / ``async_add`` / ``aget_nodes``: another model's store wrote its
    sparse vectors into, and searched, a collection recording model A, without a word."""
    import asyncio

    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
    from qdrant_client import AsyncQdrantClient

    embed = M3Embedding.from_encoder(enc_a)
    text = SAMPLE_TEXTS[0]
    node = TextNode(text=text, id_=f"00000000-0000-0000-0000-{0:012d}")
    node.embedding = embed.get_text_embedding(text)
    query = VectorStoreQuery(
        query_str="river", similarity_top_k=1, mode=VectorStoreQueryMode.SPARSE
    )

    async def run() -> None:
        aclient = AsyncQdrantClient(path=str(tmp_path / "q"))
        await M3QdrantVectorStore("c", aclient=aclient, sparse_model=embed).async_add([node])
        info = await aclient.get_collection("c")
        assert set((info.config.metadata or {})[RECORD_KEY]) == {
            "sparse",
            "sparse_cut",
            "text_instruction",
        }
        same = M3QdrantVectorStore("c", aclient=aclient, sparse_model=enc_a)
        assert (await same.aquery(query)).ids == [node.node_id]
        for call in ("aquery", "async_add", "aget_nodes"):
            other = M3QdrantVectorStore("c", aclient=aclient, sparse_model=enc_b)
            args = {"aquery": (query,), "async_add": ([node],), "aget_nodes": ([node.node_id],)}
            with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
                await getattr(other, call)(*args[call])
        assert (await aclient.count("c")).count == 1
        await aclient.close()

    asyncio.run(run())


def test_the_sync_record_functions_refuse_an_async_client() -> None:
    """The record logic is written once and driven with either client; the sync functions
    given an ``AsyncQdrantClient`` would run its calls unawaited."""
    from qdrant_client import AsyncQdrantClient

    from m3kit.store.stock_record import check_models, record_models

    aclient = AsyncQdrantClient(":memory:")
    for call in (check_models, record_models):
        with pytest.raises(TypeError, match="AsyncQdrantClient is an async client"):
            call(aclient, "c", {"sparse": "m3kit-sparse:x"})


@pytest.mark.parametrize("mode", [VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID])
async def test_a_sparse_query_after_the_encoder_changed_in_memory_is_refused(
    tiny_m3_path: Path, mode: VectorStoreQueryMode
) -> None:
    """Checked when built and at writes, the store's sparse queries after its encoder was
    trained in place were encoded with the new weights against the old sparse vectors,
    silently (``M3VectorStore`` refused them)."""
    import torch

    from m3kit.errors import EncoderChangedError

    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    embed = M3Embedding.from_encoder(encoder)
    store = M3QdrantVectorStore("c", client=QdrantClient(":memory:"), sparse_model=embed)
    VectorStoreIndex.from_documents(
        DOCS, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    text = SAMPLE_TEXTS[1]
    query = VectorStoreQuery(
        query_embedding=embed.get_query_embedding(text), query_str=text, mode=mode
    )
    dense_only = VectorStoreQuery(query_embedding=query.query_embedding, similarity_top_k=2)
    assert store.query(query).nodes
    with torch.no_grad():  # a training step in place
        for p in encoder.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(EncoderChangedError, match="sparse embeddings changed"):
        store.query(query)
    with pytest.raises(EncoderChangedError, match="sparse embeddings changed"):
        await store.aquery(query)
    assert store.query(dense_only).nodes  # the nodes' own embeddings: not the store's model


async def test_dense_vectors_of_another_m3_encoder_are_refused(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    """The dense vectors are the nodes' own embeddings, not recorded: moved to a fine-tune
    of the sparse model with ``VectorStoreIndex.from_vector_store(store, embed_model=B)``,
    its queries searched A's dense vectors and its inserts stored B's dense vector beside A's
    sparse one in one point, silently (``M3VectorStore`` refused both)."""
    client = QdrantClient(":memory:")
    embed_a, embed_b = M3Embedding.from_encoder(enc_a), M3Embedding.from_encoder(enc_b)
    store = M3QdrantVectorStore("c", client=client, sparse_model=embed_a)
    context = StorageContext.from_defaults(vector_store=store)
    VectorStoreIndex.from_documents(DOCS, storage_context=context, embed_model=embed_a)
    moved = VectorStoreIndex.from_vector_store(store, embed_model=embed_b)
    for mode in ("default", "hybrid"):
        retriever = moved.as_retriever(similarity_top_k=2, vector_store_query_mode=mode)
        with pytest.raises(FingerprintMismatchError, match="query_embedding was embedded by"):
            retriever.retrieve(SAMPLE_TEXTS[1])
        with pytest.raises(FingerprintMismatchError, match="query_embedding was embedded by"):
            await retriever.aretrieve(SAMPLE_TEXTS[1])
    count = client.count("c").count
    with pytest.raises(FingerprintMismatchError, match="embedding of node .* was embedded by"):
        moved.insert(Document(text="Berlin is the capital of Germany.", id_="berlin"))
    with pytest.raises(FingerprintMismatchError, match="embedding of node .* was embedded by"):
        await moved.ainsert(Document(text="Berlin is the capital of Germany.", id_="berlin"))
    assert client.count("c").count == count
    sparse_only = moved.as_retriever(similarity_top_k=2, vector_store_query_mode="sparse")
    assert sparse_only.retrieve(SAMPLE_TEXTS[1])  # the store's own sparse model: searched
    same = VectorStoreIndex.from_vector_store(store, embed_model=embed_a)
    assert same.as_retriever(similarity_top_k=2).retrieve(SAMPLE_TEXTS[1])


def test_a_store_refuses_queries_once_its_alias_moves_to_another_models_collection(
    enc_a: M3Encoder, enc_b: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alias ``docs`` moved from A's collection to B's under a store built with A: it
    checked the record only when built, and went on querying B's sparse vectors with A's."""
    from qdrant_client import models

    from m3kit.store import stock_record

    client = QdrantClient(":memory:")
    for name, enc in (("v1", enc_a), ("v2", enc_b)):
        embed = M3Embedding.from_encoder(enc)
        _index(DOCS, M3QdrantVectorStore(name, client=client, sparse_model=embed), embed)

    def point(alias_to: str) -> None:
        alias = models.CreateAlias(collection_name=alias_to, alias_name="docs")
        client.update_collection_aliases(
            change_aliases_operations=[models.CreateAliasOperation(create_alias=alias)]
        )

    embed = M3Embedding.from_encoder(enc_a)
    point("v1")
    store = M3QdrantVectorStore("docs", client=client, sparse_model=embed)
    query = VectorStoreQuery(
        query_str=SAMPLE_TEXTS[1],
        query_embedding=embed.get_query_embedding(SAMPLE_TEXTS[1]),
        similarity_top_k=2,
        mode=VectorStoreQueryMode.HYBRID,
    )
    assert len(store.query(query).nodes or []) == 2
    point("v2")
    monkeypatch.setattr(stock_record, "RECHECK_SECONDS", 0.0)
    with pytest.raises(FingerprintMismatchError, match="another model"):
        store.query(query)


def test_a_collection_without_the_sparse_vector_is_refused_when_the_store_is_built(
    enc_a: M3Encoder,
) -> None:
    """A collection stock ``QdrantVectorStore`` created dense-only: the store was built, its
    hybrid queries failed with Qdrant's "Sparse vector ... is not found", and an insert logged
    that it recorded a sparse model, recorded it, then failed with a bare "Not existing vector
    name"."""
    client = QdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    VectorStoreIndex.from_documents(
        DOCS,
        storage_context=StorageContext.from_defaults(
            vector_store=QdrantVectorStore("c", client=client)
        ),
        embed_model=embed,
    )
    with pytest.raises(ValueError, match="no sparse vector 'text-sparse-new'.*enable_hybrid"):
        M3QdrantVectorStore("c", client=client, sparse_model=embed)
    assert RECORD_KEY not in (client.get_collection("c").config.metadata or {})


async def test_an_async_store_refuses_a_collection_without_the_sparse_vector(
    enc_a: M3Encoder,
) -> None:
    aclient = AsyncQdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    size = len(embed.get_text_embedding("x"))
    await aclient.create_collection(
        "c", vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE)
    )
    store = M3QdrantVectorStore("c", aclient=aclient, sparse_model=embed)
    node = TextNode(text="x", embedding=embed.get_text_embedding("x"))
    with pytest.raises(ValueError, match="no sparse vector"):
        await store.async_add([node])
    query = VectorStoreQuery(query_str="x", query_embedding=node.embedding, similarity_top_k=1)
    with pytest.raises(ValueError, match="no sparse vector"):
        await store.aquery(query)
    assert RECORD_KEY not in ((await aclient.get_collection("c")).config.metadata or {})


async def test_an_async_store_takes_llamaindex_s_old_sparse_vector_name(
    enc_a: M3Encoder,
) -> None:
    """A collection whose sparse vector has ``QdrantVectorStore``'s old name ``text-sparse``
    (which it switches to when it finds it) is no collection without a sparse vector."""
    aclient = AsyncQdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    size = len(embed.get_text_embedding("x"))
    await aclient.create_collection(
        "old",
        vectors_config={
            "text-dense": models.VectorParams(size=size, distance=models.Distance.COSINE)
        },
        sparse_vectors_config={"text-sparse": models.SparseVectorParams()},
    )
    store = M3QdrantVectorStore("old", aclient=aclient, sparse_model=embed)
    query = VectorStoreQuery(
        query_str="x",
        query_embedding=embed.get_text_embedding("x"),
        similarity_top_k=1,
        mode=VectorStoreQueryMode.HYBRID,
    )
    assert not (await store.aquery(query)).nodes  # an empty collection, searched
    assert store.sparse_vector_name == "text-sparse"


def _node(embed: M3Embedding, i: int) -> TextNode:
    node = TextNode(text=SAMPLE_TEXTS[i], id_=f"00000000-0000-0000-0000-{i:012d}")
    node.embedding = embed.get_text_embedding(SAMPLE_TEXTS[i])
    return node


def test_a_first_add_that_fails_part_way_records_the_model(
    enc_a: M3Encoder, enc_b: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first add created the collection and stored a batch, then failed (a server's error
    on a later batch): the model was recorded only after a successful add, so another model's
    store then wrote into the collection with a warning blaming "another program"."""
    client = QdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    store = M3QdrantVectorStore("c", client=client, sparse_model=embed)
    real = client.upload_points

    def stored_then_failed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise ConnectionError("the server went away before its reply")

    monkeypatch.setattr(client, "upload_points", stored_then_failed)
    with pytest.raises(ConnectionError):
        store.add([_node(embed, 0)])
    monkeypatch.undo()
    assert client.count("c").count == 1
    assert RECORD_KEY in (client.get_collection("c").config.metadata or {})
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_b)


def test_a_first_async_add_cancelled_after_its_upsert_records_the_model(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    """An ``asyncio.wait_for`` timeout while Qdrant's reply to the first upsert was on its way:
    the collection held the points and no record, and another model's store wrote into it."""
    embed = M3Embedding.from_encoder(enc_a)

    async def run() -> None:
        aclient = AsyncQdrantClient(":memory:")
        real, applied = aclient.upsert, asyncio.Event()

        async def slow_reply(*args: Any, **kwargs: Any) -> Any:
            out = await real(*args, **kwargs)
            applied.set()
            await asyncio.sleep(30)  # the reply, still on its way when the caller gives up
            return out

        store = M3QdrantVectorStore("c", aclient=aclient, sparse_model=embed)
        aclient.upsert = slow_reply  # type: ignore[method-assign]
        add = asyncio.ensure_future(store.async_add([_node(embed, 0)]))
        await applied.wait()
        add.cancel()
        with pytest.raises(asyncio.CancelledError):
            await add
        aclient.upsert = real  # type: ignore[method-assign]
        assert (await aclient.count("c")).count == 1
        info = await aclient.get_collection("c")
        assert RECORD_KEY in (info.config.metadata or {})
        other = M3QdrantVectorStore("c", aclient=aclient, sparse_model=enc_b)
        with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
            await other.async_add([_node(M3Embedding.from_encoder(enc_b), 1)])
        assert (await aclient.count("c")).count == 1
        await aclient.close()

    asyncio.run(run())
