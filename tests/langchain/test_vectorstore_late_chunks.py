"""Chunks from M3LateChunkingSplitter keep their late vectors through add_documents; else raise."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, load

from langchain_m3 import M3LateChunkingSplitter, M3Retriever, M3VectorStore
from langchain_m3.splitter import LATE_CHUNK_KEY, is_late_chunk, late_chunk_vectors
from m3kit import M3Encoder
from m3kit.store import ChunkRecord
from m3kit.testing import SAMPLE_TEXTS
from tests.store.conftest import count_encoded, record_upserts

TEXT = " ".join(SAMPLE_TEXTS[:4]) + " The end. The end."  # a repeated sentence


@pytest.fixture(scope="module")
def splitter(tiny_encoder: M3Encoder) -> M3LateChunkingSplitter:
    # the default pools every head of an M3 model late, so the carried dense vector differs
    # from naive
    return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)


@pytest.fixture
def store(tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.open(tiny_encoder)
    yield s
    s.close()


def _spy(
    store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], list[ChunkRecord]]:
    """Count texts the encoder runs through the model and record what the store writes."""
    return count_encoded(store.index, monkeypatch), record_upserts(store.index, monkeypatch)


def test_split_documents_carry_their_vectors(splitter: M3LateChunkingSplitter) -> None:
    docs = [Document(TEXT, metadata={"src": "a"})]
    chunks = splitter.split_documents(docs)
    pairs = splitter.split_documents_with_vectors(docs)
    assert len(chunks) == len(pairs) > 3
    for doc, (_, ref) in zip(chunks, pairs, strict=True):
        assert is_late_chunk(doc) and doc.metadata["src"] == "a"
        assert set(doc.metadata[LATE_CHUNK_KEY]) == {"chunker", "source", "carry"}
        vectors = late_chunk_vectors(doc)
        assert vectors.text == doc.page_content
        np.testing.assert_allclose(vectors.dense, ref.dense, atol=1e-6)
    # a copy made while the returned Document lives finds its vectors (LangChain's index())
    assert late_chunk_vectors(chunks[0].model_copy()) is late_chunk_vectors(chunks[0])
    elsewhere = chunks[0].model_copy(deep=True)  # as rebuilt in another process
    elsewhere.metadata[LATE_CHUNK_KEY]["carry"] = "0" * 32
    with pytest.raises(ValueError, match="no longer carries"):
        late_chunk_vectors(elsewhere)
    with pytest.raises(ValueError, match="did not come from"):
        late_chunk_vectors(Document("plain"))


def test_the_carry_key_does_not_depend_on_config_settings(
    splitter: M3LateChunkingSplitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key LangChain's index() dedupes late chunks on stays what an m3kit before
    fingerprints held config.json settings wrote: the same chunks are not added twice."""
    import m3kit.fingerprint as fingerprint

    docs = [Document(TEXT)]
    before = [d.metadata[LATE_CHUNK_KEY]["carry"] for d in splitter.split_documents(docs)]
    fingerprint._by_encoder.pop(splitter.encoder, None)
    monkeypatch.setattr(fingerprint, "_architecture", lambda model, folder: None)  # as before
    older = fingerprint.encoder_fingerprint(splitter.encoder)
    assert older.architecture is None
    assert [d.metadata[LATE_CHUNK_KEY]["carry"] for d in splitter.split_documents(docs)] == before
    fingerprint._by_encoder.pop(splitter.encoder, None)


def test_add_documents_stores_carried_vectors_without_encoding(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = splitter.split_documents([Document(TEXT, id="src", metadata={"src": "a"})])
    encoded, written = _spy(store, monkeypatch)
    ids = store.add_documents(chunks)
    assert encoded == []  # nothing encoded again
    assert len(ids) == len(set(ids)) == len(chunks)  # the repeated "The end." chunks differ
    assert len(written) == len(chunks)
    for record, doc in zip(written, chunks, strict=True):
        ref = late_chunk_vectors(doc)
        np.testing.assert_array_equal(record.vectors.dense[0], ref.dense)
        assert record.vectors.sparse[0] == ref.sparse
        np.testing.assert_array_equal(record.vectors.colbert[0], ref.colbert)
        assert LATE_CHUNK_KEY not in record.metadata  # the marker is not stored
    # stored as the splitter's chunks (offsets in metadata), marker dropped
    got = store.get_by_ids(ids)
    assert [d.page_content for d in got] == [d.page_content for d in chunks]
    assert got[2].metadata == {k: v for k, v in chunks[2].metadata.items() if k != LATE_CHUNK_KEY}
    # adding the same chunks again writes nothing
    written.clear()
    assert store.add_documents(chunks) == ids
    assert written == [] and encoded == []
    # the naive vector of a chunk differs from its late-chunked one (the test means something)
    naive = store.index.encoder.encode([chunks[2].page_content], heads="dense").dense[0]
    assert not np.allclose(naive, late_chunk_vectors(chunks[2]).dense, atol=1e-6)


def test_equal_chunks_of_two_sources_are_two_documents(
    splitter: M3LateChunkingSplitter, store: M3VectorStore
) -> None:
    # two sources opening with the same sentence give chunks of equal text and metadata; each
    # carries its own source's context, so without ids they must not share one content id
    # (the second overwrote the first, and deleting one source deleted the other's chunk)
    head = "Confidential internal memo for the whole team. "
    a = Document(head + SAMPLE_TEXTS[4])
    b = Document(head + SAMPLE_TEXTS[7])
    chunks_a, chunks_b = splitter.split_documents([a]), splitter.split_documents([b])
    assert chunks_a[0].page_content == chunks_b[0].page_content
    assert {k: v for k, v in chunks_a[0].metadata.items() if k != LATE_CHUNK_KEY} == {
        k: v for k, v in chunks_b[0].metadata.items() if k != LATE_CHUNK_KEY
    }
    ids = store.add_documents(chunks_a + chunks_b)
    assert len(set(ids)) == len(ids) == store.index.count()
    assert store.add_documents(chunks_a + chunks_b) == ids, "re-adding stores nothing new"
    assert store.index.count() == len(ids)
    store.delete(ids[: len(chunks_a)])
    left = store.get_by_ids(ids[len(chunks_a) :])
    assert [d.page_content for d in left] == [d.page_content for d in chunks_b]


def test_chunks_stored_under_their_earlier_content_ids_are_replaced(
    splitter: M3LateChunkingSplitter, store: M3VectorStore
) -> None:
    # before a chunk's content id named its source, a chunk without an id was stored under
    # content_doc_id(text, metadata); re-adding it must not leave that copy beside the new one
    from m3kit.store.documents import content_doc_id

    head = "Confidential internal memo for the whole team. "
    a = splitter.split_documents([Document(head + SAMPLE_TEXTS[4])])
    b = splitter.split_documents([Document(head + SAMPLE_TEXTS[7])])

    def legacy(chunks: list[Document]) -> list[str]:
        metas = [{k: v for k, v in c.metadata.items() if k != LATE_CHUNK_KEY} for c in chunks]
        return [content_doc_id(c.page_content, m) for c, m in zip(chunks, metas, strict=True)]

    store.add_documents(a, ids=legacy(a))  # what the earlier version stored
    store.add_documents(b, ids=legacy(b))  # b's header chunk took a's id over
    shared = set(legacy(a)) & set(legacy(b))
    assert shared and store.index.count() == len(a) + len(b) - len(shared)
    ids = store.add_documents(a + b)
    assert store.index.count() == len(ids) == len(a) + len(b), "no earlier copy left"
    assert store.get_by_ids(legacy(a) + legacy(b)) == []


def test_afrom_documents_keeps_carried_vectors(
    splitter: M3LateChunkingSplitter, tiny_encoder: M3Encoder
) -> None:
    # LangChain's default afrom_documents rebuilds the documents from text and metadata,
    # which dropped the carried vectors (a ValueError where from_documents stores them)
    chunks = splitter.split_documents([Document(TEXT, id="src", metadata={"src": "a"})])
    with M3VectorStore.from_documents(chunks, tiny_encoder) as sync:
        want = sync.get_by_ids(["src"])
    with asyncio.run(M3VectorStore.afrom_documents(chunks, tiny_encoder)) as got:
        assert got.get_by_ids(["src"]) == want and got.index.count() == len(chunks)


def test_mixed_batch_and_resplit_source(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = splitter.split_documents([Document(TEXT)])
    encoded, written = _spy(store, monkeypatch)
    plain = Document("A plain note.", id="note")
    ids = store.add_documents([chunks[0], plain, chunks[1]])
    assert ids[1] == "note" and encoded == [1]  # only the plain document was encoded
    # the same chunk text cut from an edited source is re-written (its context changed)
    edited = splitter.split_documents([Document(TEXT + " More.")])
    assert edited[0].page_content == chunks[0].page_content
    written.clear()
    store.add_documents([edited[0]])
    assert len(written) == 1


@pytest.mark.parametrize(
    "rebuild",
    [
        lambda d: d.model_copy(),
        lambda d: Document(**d.model_dump()),
        lambda d: load(dumpd(d), allowed_objects=[Document]),
    ],
    ids=["model_copy", "model_dump", "json"],
)
def test_chunk_without_its_vectors_raises(
    splitter: M3LateChunkingSplitter,
    store: M3VectorStore,
    rebuild,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    chunk = splitter.split_documents([Document(TEXT)])[0]
    lost = rebuild(chunk)
    del chunk  # the Document the splitter returned is gone: its vectors with it
    gc.collect()
    assert is_late_chunk(lost)
    encoded, _ = _spy(store, monkeypatch)
    with pytest.raises(ValueError, match=r"documents\[1\].*no longer carries its vectors"):
        store.add_documents([Document("fine"), lost])
    assert encoded == [] and store.index.count() == 0  # nothing written, nothing encoded
    # dropping the marker is the explicit way to store it as a plain text
    del lost.metadata[LATE_CHUNK_KEY]
    store.add_documents([lost])
    assert encoded == [1]


def test_edited_or_foreign_chunks_raise(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, tiny_m3_xlmr_path: Path
) -> None:
    chunk = splitter.split_documents([Document(TEXT)])[0]
    chunk.page_content += " edited"
    with pytest.raises(ValueError, match="page_content was changed"):
        store.add_documents([chunk])
    other = M3LateChunkingSplitter.from_encoder(
        M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32"), chunk_size=12
    )
    foreign = other.split_documents([Document(TEXT)])
    with pytest.raises(ValueError, match="another model"):
        store.add_documents(foreign)
    assert store.index.count() == 0


def test_dense_only_chunks_in_a_colbert_store_raise(
    minilm_encoder: M3Encoder, store: M3VectorStore
) -> None:
    dense_only = M3LateChunkingSplitter.from_encoder(minilm_encoder, chunk_size=12)
    with pytest.raises(ValueError, match="without \\['colbert', 'sparse'\\]"):
        store.add_documents(dense_only.split_documents([Document(TEXT)]))


def test_m3_retriever_keeps_carried_vectors(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = M3Retriever(index=store.index)
    chunks = splitter.split_documents([Document(TEXT, id="src")])
    encoded, written = _spy(store, monkeypatch)
    retriever.add_documents(chunks)
    assert encoded == [] and len(written) == len(chunks)
    stray = chunks[0].model_copy(deep=True)  # as rebuilt in another process
    stray.metadata[LATE_CHUNK_KEY]["carry"] = "0" * 32
    with pytest.raises(ValueError, match="no longer carries"):
        retriever.add_documents([stray])


async def test_async_add_keeps_carried_vectors(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = await splitter.atransform_documents([Document(TEXT)])
    encoded, written = _spy(store, monkeypatch)
    ids = await store.aadd_documents(chunks)
    assert encoded == [] and len(written) == len(ids) == len(chunks)


@pytest.fixture(params=["edge", "client"])
def any_store(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.open(tiny_encoder, ":memory:", backend=request.param)
    yield s
    s.close()


def test_read_back_chunks_keep_their_late_vectors(
    splitter: M3LateChunkingSplitter, any_store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = any_store
    # a splitter chunk is stored without its marker, so get_by_ids / a search return it as a
    # plain Document: added back (LangChain's upsert) it was encoded on its own text, its
    # late-chunked vectors replaced with context-free ones, even when nothing had changed
    chunks = splitter.split_documents([Document(TEXT, metadata={"src": "a"})])
    ids = store.add_documents(chunks)
    back = store.get_by_ids(ids[1:3])
    assert not any(is_late_chunk(d) for d in back)
    encoded, written = _spy(store, monkeypatch)
    assert store.add_documents(back) == ids[1:3]  # unchanged: kept as stored
    assert encoded == [] and written == []
    late = late_chunk_vectors(chunks[1]).dense.tolist()
    (hit, score), *_ = store.similarity_search_with_score_by_vector(late, k=1)
    assert hit.id == ids[1] and score == pytest.approx(1.0, abs=1e-5)
    edited = back[0].model_copy(update={"metadata": {**back[0].metadata, "tag": "x"}})
    with pytest.raises(ValueError, match="encoded on its own text"):
        store.add_documents([edited])
    # the retriever's shape: its score / doc_id / chunk_index, shown over the chunk's own
    # chunk_index (its place in the source), are not stored and the stored one is kept, so
    # added back unchanged it is kept as stored (it lost chunk_index and was refused)
    (shown,) = M3Retriever(index=store.index, k=1).invoke(chunks[1].page_content)
    assert shown.id is not None
    stored = store.get_by_ids([shown.id])
    assert M3Retriever(index=store.index).add_documents([shown]) == [shown.id]
    assert store.get_by_ids([shown.id]) == stored
    tagged = shown.model_copy(update={"metadata": {**shown.metadata, "tag": "x"}})
    with pytest.raises(ValueError, match="encoded on its own text"):
        M3Retriever(index=store.index).add_documents([tagged])
    assert written == []  # (the search encoded its query)
    # a new text under a chunk's id is an edit: encoded (on its own, there is no source)
    store.add_documents([Document("A new text.", id=ids[1])])
    assert [d.page_content for d in store.get_by_ids([ids[1]])] == ["A new text."]


@pytest.mark.parametrize(
    ("before", "after"),
    [(1, True), (0, False), (1, 1.0)],
    ids=["int-bool", "zero-false", "int-float"],
)
def test_read_back_chunk_with_metadata_of_another_type_is_not_kept_as_stored(
    splitter: M3LateChunkingSplitter, any_store: M3VectorStore, before: object, after: object
) -> None:
    # the stored metadata was compared with ==, where True == 1 == 1.0: a read-back chunk
    # whose metadata changed only in type was "kept as stored", the change silently dropped
    # (a filter on the new value then missed it)
    store = any_store
    chunks = splitter.split_documents([Document(TEXT, metadata={"src": "a", "flag": before})])
    ids = store.add_documents(chunks)
    (back,) = store.get_by_ids(ids[1:2])
    back.metadata["flag"] = after
    with pytest.raises(ValueError, match="encoded on its own text"):
        store.add_documents([back])
    (stored,) = store.get_by_ids(ids[1:2])
    assert type(stored.metadata["flag"]) is type(before)
