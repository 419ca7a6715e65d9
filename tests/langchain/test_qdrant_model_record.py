"""M3QdrantVectorStore records which m3kit model wrote a collection and refuses another's.

langchain-qdrant records nothing of the embeddings: a collection written with checkpoint A
and opened with B (a fine-tune saved to a new folder), or with A at another ``max_length``,
was searched with B's queries against A's vectors, silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode
from qdrant_client import QdrantClient

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store.stock_record import RECORD_KEY
from m3kit.testing import SAMPLE_TEXTS
from tests.langchain.qdrant_stores import M3KIT_NAMES, hybrid_store

DOCS = [Document(t, metadata={"i": i}) for i, t in enumerate(SAMPLE_TEXTS[:4])]


def test_a_collection_of_another_model_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder, tiny_m3_path: Path, tmp_path: Path
) -> None:
    store = M3QdrantVectorStore.from_documents(
        DOCS,
        embedding=M3Embeddings.from_encoder(enc_a),
        sparse_embedding=M3SparseEmbeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.HYBRID,
        path=str(tmp_path / "q"),
        collection_name="c",
    )
    client = store.client
    meta = client.get_collection("c").config.metadata or {}
    assert set(meta[RECORD_KEY]) == {"dense", "sparse", "sparse_cut", "text_instruction"}
    assert len(hybrid_store(client, enc_a).similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
        hybrid_store(client, enc_b)  # a fine-tune of A, saved to another folder
    shorter = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    with pytest.raises(FingerprintMismatchError, match="another model"):
        hybrid_store(client, shorter)
    # the same model at another precision writes the same vectors (to rounding): accepted
    hybrid_store(client, M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16"))
    # langchain-qdrant's own store still reads the collection
    stock = hybrid_store(client, enc_a, store=QdrantVectorStore)
    assert len(stock.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    client.close()


def test_a_collection_written_by_another_program_is_recorded_at_the_first_write(
    enc_a: M3Encoder, enc_b: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    # langchain-qdrant's own store (records nothing) creates and writes the collection
    stock = QdrantVectorStore.construct_instance(
        embedding=M3Embeddings.from_encoder(enc_a),
        sparse_embedding=M3SparseEmbeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.HYBRID,
        client_options={"location": ":memory:"},
        collection_name="c",
    )
    ours = hybrid_store(stock.client, enc_a)
    stock.add_documents(DOCS[:2])
    with caplog.at_level(logging.WARNING, logger="m3kit.store.stock_record"):
        ours.add_documents(DOCS[2:])
    assert "no record of the model" in caplog.text
    with pytest.raises(FingerprintMismatchError):
        hybrid_store(stock.client, enc_b)


def test_a_collection_m3kit_indexed_with_another_model_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder, tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A collection ``M3Index`` (``m3kit index``, ``M3VectorStore``) wrote records its encoder
    in m3kit's own record: langchain-qdrant's store reads it (``vector_name="dense"``), and
    ``M3QdrantVectorStore`` built on it with another model's embeddings searched A's vectors
    with B's queries, silently (it read only its own record)."""
    from m3kit.store import M3Index

    with M3Index.open(enc_a, tmp_path / "q", collection="c", backend="client") as index:
        index.add_texts(SAMPLE_TEXTS[:4])
    client = QdrantClient(path=str(tmp_path / "q"))

    def reader(enc: M3Encoder) -> QdrantVectorStore:
        return hybrid_store(client, enc, **M3KIT_NAMES)

    assert len(reader(enc_a).similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
        reader(enc_b)
    shorter = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    with pytest.raises(FingerprintMismatchError, match="m3kit indexed it with"):
        reader(shorter)
    # a reindex to B left part-way: the collection holds two models' vectors, none fits it
    from m3kit.fingerprint import encoder_fingerprint

    meta = dict((client.get_collection("c").config.metadata or {})["m3kit"])
    to_b = encoder_fingerprint(enc_b).to_dict()
    client.update_collection("c", metadata={"m3kit": {**meta, "reindex_to": to_b}})
    with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
        reader(enc_a)
    # a reindex to the same model (a late writer's chunks redone) keeps one space: read
    same = {**meta, "reindex_to": meta["fingerprint"]}
    client.update_collection("c", metadata={"m3kit": same})
    assert len(reader(enc_a).similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    client.close()


def test_a_collection_stored_with_another_sparse_cut_is_refused(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """``M3SparseEmbeddings(sparse_top_k=...)`` cuts every stored and queried sparse vector:
    reopened without the cut (or with another), the store wrote full vectors beside the cut
    ones and searched with uncut queries, silently (the record named the model only)."""
    from m3kit.store import M3Index

    def sparse(**cut: int) -> M3SparseEmbeddings:
        return M3SparseEmbeddings.from_encoder(enc_a, **cut)

    store = M3QdrantVectorStore.from_documents(
        DOCS[:2],
        embedding=M3Embeddings.from_encoder(enc_a),
        sparse_embedding=sparse(sparse_top_k=2),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="c",
    )

    def reopen(embeddings: M3SparseEmbeddings, client: QdrantClient, **names: str) -> None:
        hybrid_store(client, enc_a, sparse=embeddings, **names).add_documents(DOCS[2:3])

    reopen(sparse(sparse_top_k=2), store.client)  # the same cut: accepted
    with pytest.raises(ValueError, match="sparse_top_k=2"):
        reopen(sparse(), store.client)
    with pytest.raises(ValueError, match="sparse cut"):
        reopen(sparse(sparse_top_k=3), store.client)
    # a collection m3kit indexed with a cut (recorded in its own record), and one without
    with M3Index.open(enc_a, tmp_path / "q", collection="c", backend="client", sparse_top_k=2):
        pass
    client = QdrantClient(path=str(tmp_path / "q"))

    def reader(embeddings: M3SparseEmbeddings) -> None:  # (it only reads an index: below)
        hybrid_store(client, enc_a, sparse=embeddings, **M3KIT_NAMES)

    reader(sparse(sparse_top_k=2))
    with pytest.raises(ValueError, match="sparse cut"):
        reader(sparse())
    # a cut change left part-way: the chunks hold both cuts, none fits them
    meta = dict((client.get_collection("c").config.metadata or {})["m3kit"])
    pending = {"top_k": 3, "min_weight": 0.0}
    client.update_collection("c", metadata={"m3kit": {**meta, "sparse_cut_to": pending}})
    with pytest.raises(ValueError, match="part-way through a change of its sparse cut"):
        reader(sparse(sparse_top_k=2))
    client.close()


def test_a_collection_m3kit_indexed_is_read_not_written(enc_a: M3Encoder, tmp_path: Path) -> None:
    """A point written into an ``M3Index`` collection through langchain-qdrant's layout has no
    ColBERT vector and no m3kit chunk payload: the index's (ColBERT-reranked) searches never
    returned it, silently, while the write succeeded."""
    from m3kit.store import M3Index

    with M3Index.open(enc_a, tmp_path / "q", collection="c", backend="client") as index:
        index.add_texts(SAMPLE_TEXTS[:4])
    client = QdrantClient(path=str(tmp_path / "q"))
    store = hybrid_store(client, enc_a, **M3KIT_NAMES)
    assert len(store.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    with pytest.raises(ValueError, match="'c' is an m3kit index.*Write through M3VectorStore"):
        store.add_documents([Document(SAMPLE_TEXTS[5])])
    assert client.count("c").count == 4
    client.close()
    with M3Index.open(enc_a, tmp_path / "q", collection="c", backend="client") as index:
        assert len(index.search(SAMPLE_TEXTS[5], k=10)) == 4


def test_m3_embeddings_behind_langchains_cache_are_recorded_and_checked(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    """Wrapped in ``CacheBackedEmbeddings`` (as the README suggests), ``M3Embeddings`` were not
    recognised: the store recorded nothing, and B's vectors went into A's collection."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import LocalFileStore

    def cached(encoder: M3Encoder) -> CacheBackedEmbeddings:
        emb = M3Embeddings.from_encoder(encoder)
        cache = LocalFileStore(tmp_path / "cache")
        return CacheBackedEmbeddings.from_bytes_store(emb, cache, namespace=emb.cache_namespace)

    store = M3QdrantVectorStore.from_documents(
        DOCS,
        embedding=cached(enc_a),
        retrieval_mode=RetrievalMode.DENSE,
        path=str(tmp_path / "q"),
        collection_name="c",
    )
    meta = store.client.get_collection("c").config.metadata or {}
    assert set(meta[RECORD_KEY]) >= {"dense"}
    with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
        M3QdrantVectorStore(
            client=store.client,
            collection_name="c",
            embedding=cached(enc_b),
            retrieval_mode=RetrievalMode.DENSE,
        )
    store.client.close()


def test_late_chunks_of_the_stores_own_model_behind_langchains_cache_are_stored(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    """Behind ``CacheBackedEmbeddings``, every late chunk of the store's own model was refused
    as "late-chunked by another model ... a model that is not M3"."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_core.stores import InMemoryByteStore

    from langchain_m3 import M3LateChunkingSplitter

    emb = M3Embeddings.from_encoder(enc_a)
    cached = CacheBackedEmbeddings.from_bytes_store(
        emb, InMemoryByteStore(), namespace=emb.cache_namespace
    )
    doc = Document(" ".join(SAMPLE_TEXTS[:3]), metadata={"source": "a"})
    chunks = M3LateChunkingSplitter.from_encoder(enc_a, chunk_size=12).split_documents([doc])
    assert len(chunks) > 1
    store = M3QdrantVectorStore.construct_instance(
        embedding=cached,
        sparse_embedding=M3SparseEmbeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.HYBRID,
        client_options={"location": ":memory:"},
        collection_name="c",
    )
    store.add_documents(chunks)
    assert store.client.count("c").count == len(chunks)
    late = M3LateChunkingSplitter.from_encoder(enc_b, chunk_size=12).split_documents([doc])
    with pytest.raises(ValueError, match="late-chunked by another model"):
        store.add_documents(late)  # another model's chunks are still refused
    store.client.close()


@pytest.mark.parametrize("mode", [RetrievalMode.DENSE, RetrievalMode.HYBRID, RetrievalMode.SPARSE])
async def test_a_search_after_the_encoder_changed_in_memory_is_refused(
    tiny_m3_path: Path, mode: RetrievalMode
) -> None:
    """The store checked its embeddings against the collection when built, and at writes;
    searches after the encoder was trained in place encoded queries of the new weights
    against the old vectors, silently (``M3VectorStore`` refused them)."""
    import torch

    from m3kit.errors import EncoderChangedError

    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    store = M3QdrantVectorStore.from_documents(
        DOCS,
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        location=":memory:",
        collection_name="c",
    )
    assert len(store.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    with torch.no_grad():  # a training step in place
        for p in encoder.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    searches = [
        lambda: store.similarity_search(SAMPLE_TEXTS[1], k=2),
        lambda: store.as_retriever().invoke(SAMPLE_TEXTS[1]),
    ]
    if mode is RetrievalMode.DENSE:  # (relevance scores and MMR are dense mode's)
        searches.append(lambda: store.similarity_search_with_relevance_scores(SAMPLE_TEXTS[1]))
        searches.append(lambda: store.max_marginal_relevance_search(SAMPLE_TEXTS[1], k=2))
    for search in searches:
        with pytest.raises(EncoderChangedError, match="changed since this M3QdrantVectorStore"):
            search()
    with pytest.raises(EncoderChangedError):
        await store.asimilarity_search(SAMPLE_TEXTS[1], k=2)


def test_a_store_refuses_searches_once_its_alias_moves_to_another_models_collection(
    enc_a: M3Encoder, enc_b: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blue/green model switch: alias ``docs`` moved from A's collection to B's. A store
    built with A on the alias checked the record only when built, so it went on searching
    B's vectors with A's queries (writes were refused); it checks again now."""
    from qdrant_client import models

    from m3kit.store import stock_record

    first = M3QdrantVectorStore.from_documents(
        DOCS,
        embedding=M3Embeddings.from_encoder(enc_a),
        sparse_embedding=M3SparseEmbeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="v1",
    )
    client = first.client
    params = client.get_collection("v1").config.params
    client.create_collection(
        "v2", vectors_config=params.vectors, sparse_vectors_config=params.sparse_vectors
    )
    hybrid_store(client, enc_b, "v2").add_documents(DOCS)

    def point(alias_to: str) -> None:
        client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=alias_to, alias_name="docs")
                )
            ]
        )

    point("v1")
    store = hybrid_store(client, enc_a, "docs")
    assert len(store.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
    point("v2")
    monkeypatch.setattr(stock_record, "RECHECK_SECONDS", 0.0)
    with pytest.raises(FingerprintMismatchError, match="another model"):
        store.similarity_search(SAMPLE_TEXTS[1], k=2)
    point("v1")  # moved back: searched again
    assert len(store.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
