"""A collection records the document prefix (``text_instruction``) its vectors were made with.

``M3VectorStore`` encodes documents after its ``M3Embedding``'s ``text_instruction``; nothing
recorded it, so the collection reopened with another prefix (or none), or written through
``langchain_m3``, ``M3Retriever`` or ``m3kit index`` (which never prefix), silently held
prefixed and bare document vectors side by side, and queries ranked both kinds together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.schema import TextNode
from qdrant_client import models

from langchain_m3 import M3Retriever as LangChainRetriever
from langchain_m3 import M3VectorStore as LangChainStore
from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import ChunkRecord, M3Index, M3Store
from m3kit.store.doc_prefix import RECORD_KEY
from m3kit.testing import SAMPLE_TEXTS

PREFIX = "passage: "


def _nodes(embed: M3Embedding, *ids: int) -> list[TextNode]:
    nodes = [TextNode(text=SAMPLE_TEXTS[i], id_=f"n{i}") for i in ids]
    for node in nodes:
        node.embedding = embed.get_text_embedding(node.get_content())
    return nodes


def _prefixed_collection(enc: M3Encoder, folder: Path) -> None:
    embed = M3Embedding.from_encoder(enc, text_instruction=PREFIX)
    with M3VectorStore(embed, location=str(folder)) as store:
        store.add(_nodes(embed, 0, 1))
        assert store.client.store.collection_metadata()[RECORD_KEY] == PREFIX


def test_a_store_of_another_prefix_is_refused(enc_a: M3Encoder, tmp_path: Path) -> None:
    _prefixed_collection(enc_a, tmp_path / "db")
    bare = M3Embedding.from_encoder(enc_a)
    with pytest.raises(ValueError, match=r"'passage: '.*no document prefix"):
        M3VectorStore(bare, location=str(tmp_path / "db"))
    with pytest.raises(ValueError, match="document prefix 'query: '"):
        M3VectorStore(enc_a, location=str(tmp_path / "db"), text_instruction="query: ")
    # the same prefix: opened and written
    embed = M3Embedding.from_encoder(enc_a, text_instruction=PREFIX)
    with M3VectorStore(embed, location=str(tmp_path / "db")) as store:
        store.add(_nodes(embed, 2))
        assert store.client.store.count() == 3


def test_an_emptied_collection_takes_the_next_writers_prefix(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """A collection emptied by ``clear()`` (or deletes) kept its prefix record: every writer
    of another prefix was refused forever ("holds document vectors encoded with ..."), though
    it held none. The next write is its first now, as for a sparse cut; a collection that
    holds chunks still refuses."""
    folder = str(tmp_path / "db")
    _prefixed_collection(enc_a, tmp_path / "db")
    with LangChainStore.open(enc_a, folder) as lc:
        with pytest.raises(ValueError, match="'passage: '"):  # chunks stored: refused
            lc.add_texts([SAMPLE_TEXTS[3]])
        lc.index.store.clear()
        lc.add_texts([SAMPLE_TEXTS[3]])  # bare, into the emptied collection
        assert lc.index.store.collection_metadata()[RECORD_KEY] == ""
    with pytest.raises(ValueError, match=r"no document prefix.*'passage: '"):
        M3VectorStore(M3Embedding.from_encoder(enc_a, text_instruction=PREFIX), location=folder)
    bare = M3Embedding.from_encoder(enc_a)
    with M3VectorStore(bare, location=folder) as store:
        store.clear()
    embed = M3Embedding.from_encoder(enc_a, text_instruction=PREFIX)
    with M3VectorStore(embed, location=folder) as store:  # built on the emptied collection
        store.add(_nodes(embed, 0))
        assert store.client.store.collection_metadata()[RECORD_KEY] == PREFIX
        assert store.client.store.count() == 1


def test_a_plain_store_still_refuses_another_prefix_on_an_emptied_collection(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """A plain ``M3Store`` records no prefix: on an emptied collection it forgot the record
    and left none, so the next bare writer adopted the collection over its prefixed vector."""
    with M3Index.open(enc_a, tmp_path / "db") as index:
        index.add_texts([SAMPLE_TEXTS[0]], doc_ids=["a"])
        index.store.clear()
        schema, collection = index.store.schema, index.store.collection
        text = PREFIX + SAMPLE_TEXTS[1]
        record = ChunkRecord("b", 0, SAMPLE_TEXTS[1], {}, enc_a.encode([text]), encoded_text=text)
    plain = M3Store.open(
        tmp_path / "db",
        collection=collection,
        dense_dim=schema.dense_dim,
        colbert_dim=schema.colbert_dim,
        sparse=schema.sparse,
    )
    with plain, pytest.raises(ValueError, match=r"no document prefix.*'passage: '"):
        plain.upsert([record], text_instruction=PREFIX)
    with M3Index.open(enc_a, tmp_path / "db") as index:
        assert index.store.collection_metadata()[RECORD_KEY] == ""
        assert index.store.count() == 0


def test_a_writer_of_another_prefix_waits_for_a_write_to_an_emptied_collection(
    enc_a: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one store on an emptied collection: the second (no prefix, writing its
    records with ``M3Store.upsert``) read the record while the first (``"passage: "``) was
    writing, found no chunk, took the collection for its own prefix and wrote after it:
    prefixed and bare vectors side by side. The record is read under the store's write lock
    now: the second is refused once the first wrote."""
    import threading

    index = M3Index.open(enc_a, None)
    embed = M3Embedding.from_encoder(enc_a, text_instruction=PREFIX)
    prefixed = M3VectorStore.from_index(index, text_instruction=PREFIX)
    prefixed.add(_nodes(embed, 0))
    index.store.clear()
    refused: list[ValueError] = []

    vectors = enc_a.encode([SAMPLE_TEXTS[3]])
    record = ChunkRecord("bare", 0, SAMPLE_TEXTS[3], {}, vectors)

    def bare_write() -> None:  # (M3Index.add_texts waits for the lock before it reads)
        try:
            index.store.upsert([record])
        except ValueError as e:
            refused.append(e)

    other = threading.Thread(target=bare_write)
    backend = index.store._backend
    real = backend.upsert

    def upsert(batch: Any) -> Any:  # the bare writer starts while this write is under way
        if other.ident is None:
            other.start()
            other.join(0.5)
        return real(batch)

    monkeypatch.setattr(backend, "upsert", upsert)
    prefixed.add(_nodes(embed, 1))
    other.join()
    assert len(refused) == 1 and "no document prefix" in str(refused[0])
    assert index.store.count() == 1
    assert index.store.collection_metadata()[RECORD_KEY] == PREFIX
    index.close()


def test_a_store_built_before_the_prefix_was_recorded_is_refused_at_its_add(
    enc_a: M3Encoder,
) -> None:
    """Two stores on one index, built on the empty collection: the first write records its
    prefix, the other's add (sync or async) is refused, nothing written."""
    index = M3Index.open(enc_a, None)
    prefixed = M3VectorStore.from_index(index, text_instruction=PREFIX)
    bare = M3VectorStore.from_index(index)
    embed = M3Embedding.from_encoder(enc_a)
    prefixed.add(_nodes(embed, 0))
    with pytest.raises(ValueError, match="nothing was written"):
        bare.add(_nodes(embed, 1))
    import asyncio

    with pytest.raises(ValueError, match="prefix"):
        asyncio.run(bare.async_add(_nodes(embed, 2)))
    assert index.store.count() == 1
    index.close()


def test_writers_that_never_prefix_are_refused(
    enc_a: M3Encoder, tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LangChain's store, M3Retriever, M3Index.add_texts and ``m3kit index`` write bare
    document vectors: refused on a prefixed collection (reading it is sound)."""
    _prefixed_collection(enc_a, tmp_path / "db")
    with LangChainStore.open(enc_a, tmp_path / "db") as store:
        assert store.similarity_search(SAMPLE_TEXTS[0], k=1)  # reading: fine
        with pytest.raises(ValueError, match="'passage: '"):
            store.add_texts([SAMPLE_TEXTS[3]])
        with pytest.raises(ValueError, match="'passage: '"):
            store.index.add_texts([SAMPLE_TEXTS[3]])
        with pytest.raises(ValueError, match="'passage: '"):
            LangChainRetriever(index=store.index).add_texts([SAMPLE_TEXTS[3]])
    with (
        M3Retriever.open(enc_a, location=tmp_path / "db") as retriever,
        pytest.raises(ValueError, match="'passage: '"),
    ):
        retriever.add_documents([Document(text=SAMPLE_TEXTS[3])])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(SAMPLE_TEXTS[3])
    capsys.readouterr()
    where = ["--path", str(tmp_path / "db"), "--model", str(tiny_m3_path), "--dtype", "fp32"]
    assert main(["index", str(docs), *where, "-q"]) == 1
    assert "document prefix 'passage: '" in capsys.readouterr().err
    with M3Index.open(enc_a, str(tmp_path / "db")) as index:
        assert index.store.count() == 2


def test_none_and_empty_are_the_same(enc_a: M3Encoder, tmp_path: Path) -> None:
    with LangChainStore.open(enc_a, tmp_path / "db") as store:
        store.add_texts([SAMPLE_TEXTS[0]])
        assert store.index.store.collection_metadata()[RECORD_KEY] == ""
    embed = M3Embedding.from_encoder(enc_a, text_instruction="")
    with M3VectorStore(embed, location=str(tmp_path / "db")) as store:
        store.add(_nodes(embed, 1))
    with pytest.raises(ValueError, match="no document prefix"):
        M3VectorStore(enc_a, location=str(tmp_path / "db"), text_instruction=PREFIX)


def _drop_record(enc: M3Encoder, folder: Path) -> None:
    """As an m3kit from before the prefix was recorded left the collection."""
    with M3Index.open(enc, str(folder)) as index:
        meta = index.store.collection_metadata()
        del meta[RECORD_KEY]
        index.store.set_collection_metadata(meta)


def test_an_older_record_is_taken_as_bare_only_when_provably_so(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """No chunk encoded on other text than it stores: no writer prefixed it (no prefix is
    recorded, a prefixed writer refused); else the first writer's prefix is adopted."""
    with LangChainStore.open(enc_a, tmp_path / "bare") as store:
        store.add_texts([SAMPLE_TEXTS[0]])
    _drop_record(enc_a, tmp_path / "bare")
    embed = M3Embedding.from_encoder(enc_a, text_instruction=PREFIX)
    store = M3VectorStore(embed, location=str(tmp_path / "bare"))  # (nothing recorded yet)
    with pytest.raises(ValueError, match="no document prefix"):
        store.add(_nodes(embed, 1))
    assert store.client.store.collection_metadata()[RECORD_KEY] == ""
    store.close()
    _prefixed_collection(enc_a, tmp_path / "prefixed")
    _drop_record(enc_a, tmp_path / "prefixed")
    with M3VectorStore(embed, location=str(tmp_path / "prefixed")) as store:
        store.add(_nodes(embed, 2))  # adopted
        assert store.client.store.collection_metadata()[RECORD_KEY] == PREFIX
    with (
        LangChainStore.open(enc_a, tmp_path / "prefixed") as lc,
        pytest.raises(ValueError, match="'passage: '"),
    ):
        lc.add_texts([SAMPLE_TEXTS[3]])


def test_a_prefixed_collection_of_an_older_m3kit_is_not_taken_as_bare(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """An m3kit from before chunks stored their ``encoded_text`` (and their sparse-cut stamp)
    left a prefixed collection with no chunk holding one: it was recorded as bare at its next
    write (the prefixed writer refused, told to drop its prefix), so a bare writer then mixed
    its vectors in. Now the prefixed write is refused, nothing recorded, until the prefix is
    recorded explicitly."""
    from qdrant_client import QdrantClient

    from m3kit.store.doc_prefix import record_prefix
    from m3kit.store.schema import ENCODED_TEXT, SPARSE_CUT

    embed = M3Embedding.from_encoder(enc_a, text_instruction=PREFIX)
    where = {"location": str(tmp_path / "db"), "collection_name": "c", "backend": "client"}
    with M3VectorStore(embed, **where) as store:
        store.add(_nodes(embed, 0, 1))
        meta = store.client.store.collection_metadata()
        del meta[RECORD_KEY]
        store.client.store.set_collection_metadata(meta)
    client = QdrantClient(path=str(tmp_path / "db"))
    client.delete_payload("c", keys=[ENCODED_TEXT, SPARSE_CUT], points=models.Filter())
    client.close()
    with M3VectorStore(embed, **where) as store:
        with pytest.raises(ValueError, match=r"cannot tell it.*record_prefix\(store, 'passage: '"):
            store.add(_nodes(embed, 2))
        m3 = store.client.store
        assert RECORD_KEY not in m3.collection_metadata()
        assert m3.count() == 2
        with pytest.raises(ValueError, match="'query: '"):  # (checked once recorded)
            record_prefix(m3, PREFIX)
            record_prefix(m3, "query: ")
        store.add(_nodes(embed, 2))
        assert m3.collection_metadata()[RECORD_KEY] == PREFIX
        assert m3.count() == 3
    with (
        LangChainStore.open(enc_a, tmp_path / "db", collection="c", backend="client") as lc,
        pytest.raises(ValueError, match="'passage: '"),
    ):
        lc.add_texts([SAMPLE_TEXTS[3]])


def test_an_unstamped_collection_is_recorded_bare_by_a_bare_writer(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """Chunks that cannot tell their prefix: a writer without one records none, as before."""
    from qdrant_client import QdrantClient

    from m3kit.store.schema import SPARSE_CUT

    where = {"collection": "c", "backend": "client"}
    with M3Index.open(enc_a, tmp_path / "db", **where) as index:
        index.add_texts([SAMPLE_TEXTS[0]])
        meta = index.store.collection_metadata()
        del meta[RECORD_KEY]
        index.store.set_collection_metadata(meta)
    client = QdrantClient(path=str(tmp_path / "db"))
    client.delete_payload("c", keys=[SPARSE_CUT], points=models.Filter())
    client.close()
    with M3Index.open(enc_a, tmp_path / "db", **where) as index:
        index.add_texts([SAMPLE_TEXTS[1]])
        assert index.store.collection_metadata()[RECORD_KEY] == ""
