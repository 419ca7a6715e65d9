"""The same store test-suite on every backend (edge folder, client memory, client folder)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from m3kit.errors import SchemaMismatchError
from m3kit.store import ChunkRecord, Fusion, M3Index, M3Store, output_row, point_id
from m3kit.store.filters import chunk_ids_filter
from tests.store.conftest import PATH_BACKENDS, add_corpus

FUSION_CASES = [(f, rerank) for f in Fusion for rerank in (True, False)]


def test_schema_created_with_encoder_heads(open_index: Any, tiny_encoder: Any) -> None:
    index = open_index(tiny_encoder)
    schema = index.store.schema
    assert schema.dense_dim == tiny_encoder.dense_dim
    assert schema.colbert_dim == tiny_encoder.colbert_dim
    assert schema.sparse is True
    assert index.count() == 0
    assert "colbert: multivector" in repr(index.store)


def test_query_copied_from_document_finds_it_first(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus)
    for fusion, rerank in FUSION_CASES:
        for row in corpus[::10]:
            hits = index.search(row["text"], k=5, fusion=fusion, rerank=rerank)
            assert hits[0].doc_id == row["id"], (fusion, rerank, [h.doc_id for h in hits])
            assert hits[0].text == row["text"]
            assert hits[0].metadata == row["metadata"]
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_upsert_is_idempotent(open_index: Any, tiny_encoder: Any) -> None:
    store: M3Store = open_index(tiny_encoder).store
    texts = ["alpha beta gamma.", "delta epsilon.", "zeta eta theta iota."]
    out = tiny_encoder.encode(texts)
    records = [
        ChunkRecord(f"doc{i // 2}", i % 2, t, {"i": i}, output_row(out, i))
        for i, t in enumerate(texts)
    ]
    first = store.upsert(records)
    assert first == [point_id(r.doc_id, r.chunk_index) for r in records]
    assert store.count() == 3
    second = store.upsert(records)
    assert second == first
    assert store.count() == 3
    with pytest.raises(ValueError, match="duplicate"):
        store.upsert([records[0], records[0]])


def test_chunks_are_found_by_the_writers_own_ids(open_index: Any, tiny_encoder: Any) -> None:
    store: M3Store = open_index(tiny_encoder).store
    texts = ["alpha beta gamma.", "delta epsilon.", "zeta eta theta iota."]
    out = tiny_encoder.encode(texts)
    records = [
        ChunkRecord(f"doc{i}", 0, t, {"i": i}, output_row(out, i), chunk_id=f"node-{i}")
        for i, t in enumerate(texts)
    ]
    ids = store.upsert(records)
    found = store.find(["node-2", "nope", ids[0], "node-0"])  # own ids and point ids, mixed
    assert [h.text for h in found] == [texts[2], texts[0]]  # each chunk once, first asked
    assert [h.text for h in store.find(["node-1"], filter={"i": 2})] == []
    with pytest.raises(TypeError, match="not a single string"):
        store.find("node-1")
    store.delete_points(filter=chunk_ids_filter(["node-1"]))
    assert store.count() == 2 and store.find(["node-1"]) == []


def test_writer_fields_are_set_in_place(open_index: Any, tiny_encoder: Any) -> None:
    # a writer storing a chunk again unchanged under a new id of its own (a LlamaIndex node
    # parsed again) renames it without rewriting it
    store: M3Store = open_index(tiny_encoder).store
    texts = ["alpha beta gamma.", "delta epsilon."]
    out = tiny_encoder.encode(texts)
    records = [
        ChunkRecord(f"doc{i}", 0, t, {"i": i}, output_row(out, i), chunk_id=f"node-{i}")
        for i, t in enumerate(texts)
    ]
    ids = store.upsert(records)
    before = store.query(dense=out.dense[0], k=2)
    store.set_writer_fields({ids[0]: {"chunk_id": "node-0b", "extra": {"links": ["node-1"]}}})
    (hit,) = store.find(["node-0b"])
    assert (hit.id, hit.text, hit.metadata, hit.extra) == (
        ids[0],
        texts[0],
        {"i": 0},
        {"links": ["node-1"]},
    )
    assert store.find(["node-0"]) == [] and store.count() == 2
    after = store.query(dense=out.dense[0], k=2)  # vectors untouched
    assert [(h.id, round(h.score, 5)) for h in after] == [(h.id, round(h.score, 5)) for h in before]
    with pytest.raises(ValueError, match="only 'chunk_id' and 'extra'"):
        store.set_writer_fields({ids[1]: {"text": "x"}})
    with pytest.raises(ValueError, match="not a point id"):
        store.set_writer_fields({"node-1": {"chunk_id": "y"}})
    with pytest.raises(ValueError, match="non-empty string"):
        store.set_writer_fields({ids[1]: {"chunk_id": ""}})
    with pytest.raises(ValueError, match="must be a mapping"):
        store.set_writer_fields({ids[1]: {"extra": None}})
    assert [h.text for h in store.find(["node-1"])] == [texts[1]]  # nothing half-applied
    # a point that is gone, or holds another version than the one given: left alone
    gone = point_id("doc-gone", 0)
    store.set_writer_fields({gone: {"chunk_id": "g"}, ids[1]: {"chunk_id": "node-1b"}})
    assert store.count() == 2 and [h.text for h in store.find(["node-1b"])] == [texts[1]]
    store.set_writer_fields({ids[1]: {"chunk_id": "node-1c"}}, versions={ids[1]: "other"})
    assert store.find(["node-1c"]) == [] and len(store.find(["node-1b"])) == 1
    version = store.points([ids[1]])[ids[1]]["doc_hash"]
    store.set_writer_fields({ids[1]: {"chunk_id": "node-1c"}}, versions={ids[1]: version})
    assert [h.text for h in store.find(["node-1c"])] == [texts[1]]


def test_delete_documents(open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus[:10])
    gone = [corpus[2]["id"], corpus[5]["id"]]
    index.delete([*gone, "never-added"])
    assert index.count() == 8
    hits = index.search(corpus[2]["text"], k=10)
    assert not {h.doc_id for h in hits} & set(gone)
    stored = index.store.document_metadata()  # one entry per document, its metadata
    kept = [row for row in corpus[:10] if row["id"] not in gone]
    assert stored == {row["id"]: row["metadata"] for row in kept}


def test_delete_refuses_one_string(open_index: Any, tiny_encoder: Any) -> None:
    # a string is a sequence of characters: delete("ab") used to delete documents "a" and "b"
    index = open_index(tiny_encoder)
    index.add_texts(["first text", "second text", "third text"], doc_ids=["a", "b", "ab"])
    with pytest.raises(TypeError, match="not a single string"):
        index.delete("ab")
    with pytest.raises(TypeError, match="a document id is a str or an int"):
        index.delete([1.5])  # an int is an id, as add_texts takes it (test_argument_types.py)
    assert index.count() == 3
    # a None id used to become the id "None": two unrelated texts overwrote each other
    with pytest.raises(ValueError, match=r"doc_ids\[1\] is None"):
        index.add_texts(["one", "two"], doc_ids=["x", None])
    assert index.count() == 3


def test_filters_restrict_results(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus)
    query = corpus[0]["text"]
    for fusion, rerank in [(Fusion.RRF, True), (Fusion.DBSF, False), (Fusion.M3, False)]:
        hits = index.search(query, k=40, fusion=fusion, rerank=rerank, filter={"group": "b"})
        assert hits and all(h.metadata["group"] == "b" for h in hits)
        assert len(hits) == sum(r["metadata"]["group"] == "b" for r in corpus)
        hits = index.search(query, k=40, fusion=fusion, rerank=rerank, filter={"n": [1, 4, 7]})
        assert sorted(h.metadata["n"] for h in hits) == [1, 4, 7]
        qf = models.Filter(
            must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=10, lt=20))],
            must_not=[
                models.FieldCondition(key="metadata.group", match=models.MatchValue(value="a"))
            ],
        )
        hits = index.search(query, k=40, fusion=fusion, rerank=rerank, filter=qf)
        want = {
            r["id"]
            for r in corpus
            if 10 <= r["metadata"]["n"] < 20 and r["metadata"]["group"] != "a"
        }
        assert {h.doc_id for h in hits} == want
    with pytest.raises(ValueError, match="not supported"):
        index.search(query, filter={"n": {"nested": 1}})


@pytest.mark.parametrize("backend_id", PATH_BACKENDS, indirect=True)
def test_other_dimension_is_refused_and_collection_untouched(
    open_index: Any,
    tiny_encoder: Any,
    minilm_encoder: Any,
    corpus: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus[:5])
    kind = index.store.backend
    index.close()
    with pytest.raises(SchemaMismatchError) as err:
        M3Index.open(minilm_encoder, tmp_path / "db", backend=kind)
    msg = str(err.value)
    assert "expected" in msg and "found" in msg
    assert "size=384" in msg and "size=32" in msg
    with pytest.raises(SchemaMismatchError, match="colbert"):
        M3Store.open(
            tmp_path / "db",
            collection="m3kit",
            dense_dim=32,
            colbert_dim=None,
            sparse=True,
            backend=kind,
        )
    again = open_index(tiny_encoder)
    assert again.count() == 5


@pytest.mark.parametrize("backend_id", PATH_BACKENDS, indirect=True)
def test_path_store_reopens_with_same_data(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    index = open_index(tiny_encoder)
    add_corpus(index, corpus)
    before = index.search(corpus[4]["text"], k=5, fusion="m3")
    index.close()
    reopened = open_index(tiny_encoder)
    assert reopened.count() == len(corpus)
    after = reopened.search(corpus[4]["text"], k=5, fusion="m3")
    assert [h.id for h in after] == [h.id for h in before]
    assert [h.score for h in after] == pytest.approx([h.score for h in before], rel=1e-6, abs=1e-6)
    assert [(h.text, h.metadata) for h in after] == [(h.text, h.metadata) for h in before]


async def test_async_equals_sync(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    index = open_index(tiny_encoder)
    ids = await index.aadd_texts(
        [r["text"] for r in corpus[:12]], [r["metadata"] for r in corpus[:12]]
    )
    assert ids == index.add_texts(
        [r["text"] for r in corpus[:12]], [r["metadata"] for r in corpus[:12]]
    )
    for fusion in Fusion:
        query = corpus[5]["text"]
        sync = index.search(query, k=4, fusion=fusion)
        got = await asyncio.gather(*(index.asearch(query, k=4, fusion=fusion) for _ in range(3)))
        # Same hits; scores equal up to the engine's float summation order (qdrant-client's
        # numpy MaxSim may differ in the last bits between calls).
        for g in got:
            assert [h.id for h in g] == [h.id for h in sync], fusion
            assert [h.score for h in g] == pytest.approx(
                [h.score for h in sync], rel=1e-6, abs=1e-6
            )
        q = tiny_encoder.encode([query], query=True)
        vec = {"dense": q.dense[0], "sparse": q.sparse[0], "colbert": q.colbert[0]}
        async_hits = await index.store.aquery(**vec, k=4, fusion=fusion)
        sync_hits = index.store.query(**vec, k=4, fusion=fusion)
        assert [h.id for h in async_hits] == [h.id for h in sync_hits]
        assert [h.score for h in async_hits] == pytest.approx(
            [h.score for h in sync_hits], abs=1e-6
        )


def test_dense_only_encoder(
    open_index: Any, minilm_encoder: Any, corpus: list[dict[str, Any]]
) -> None:
    index = open_index(minilm_encoder, collection="minilm")
    assert index.store.schema.sparse is False and index.store.schema.colbert_dim is None
    add_corpus(index, corpus[:15])
    for fusion in Fusion:
        hits = index.search(corpus[6]["text"], k=3, fusion=fusion)
        assert hits[0].doc_id == corpus[6]["id"]
    plain = index.search(corpus[6]["text"], k=1)[0]
    q = minilm_encoder.encode([corpus[6]["text"]], query=True).dense[0]
    doc = minilm_encoder.encode([corpus[6]["text"]]).dense[0]
    assert plain.score == pytest.approx(float(np.dot(q, doc)), abs=1e-4)
    # m3 over the dense head alone scores the cosine (not 0.4 x cosine), so a threshold
    # keeps an exact match whichever heads a collection holds
    m3 = index.search(corpus[6]["text"], k=3, fusion="m3", score_threshold=0.9)
    assert [h.doc_id for h in m3] == [corpus[6]["id"]]
    assert m3[0].score == pytest.approx(plain.score, abs=1e-4)
    with pytest.raises(ValueError, match="weight 0"):
        index.search("x", fusion="m3", weights=(0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="ColBERT"):
        index.search("x", rerank=True)


def test_bad_query_input_is_named(open_index: Any, tiny_encoder: Any) -> None:
    store: M3Store = open_index(tiny_encoder).store
    with pytest.raises(ValueError, match="dimensions"):
        store.query(dense=np.zeros(7, dtype=np.float32))
    with pytest.raises(ValueError, match="dense query vector or a non-empty sparse"):
        store.query()
    with pytest.raises(ValueError, match="k must be"):
        store.query(dense=np.ones(32, dtype=np.float32), k=0)


def test_chunker_of_another_model_is_refused(
    open_index: Any, tiny_encoder: Any, other_tiny_encoder: Any
) -> None:
    # its vectors would be stored under this encoder's fingerprint, in another vector space
    from m3kit.late_chunking import LateChunker

    index = open_index(tiny_encoder)
    with pytest.raises(ValueError, match="another model than the index's .*weights"):
        index.add_texts(["A text to chunk late."], chunker=LateChunker(other_tiny_encoder))
    assert index.count() == 0
    index.add_texts(["A text to chunk late."], chunker=LateChunker(tiny_encoder))
    assert index.count() == 1


def test_filter_keys_with_spaces(open_index: Any, tiny_encoder: Any) -> None:
    # LangChain's MarkdownHeaderTextSplitter writes keys such as "Header 1": a filter on one
    # used to fail with "invalid JSON path"; a dotted key matches a flat key of that name where
    # a chunk has one (it matched nothing: "file.name" was read as file -> name), else the
    # nested path
    index = open_index(tiny_encoder)
    index.add_texts(
        ["alpha beta.", "gamma delta.", "epsilon zeta."],
        metadatas=[
            {"Header 1": "Intro", "a": {"b": 1}},
            {"Header 1": "Usage", "a": {"b": 2}},
            {"a.b": 1, "file.name": "z.pdf", "a": {"b": 2}},  # the flat key wins
        ],
        doc_ids=["x", "y", "z"],
    )

    def found(f: dict[str, Any]) -> list[str]:
        return sorted(h.doc_id for h in index.search("alpha", k=5, filter=f))

    assert found({"Header 1": "Usage"}) == ["y"]
    assert found({"a.b": 1}) == ["x", "z"]
    assert found({"a.b": [2, 3]}) == ["y"]
    assert found({"file.name": "z.pdf"}) == ["z"]
    assert found({"file.name": "other.pdf"}) == []
    with pytest.raises(ValueError, match="cannot be addressed"):
        index.search("alpha", k=5, filter={'say "hi"': 1})


def test_filter_keys_with_brackets_that_are_no_array_access(
    open_index: Any, tiny_encoder: Any
) -> None:
    """``"[draft]"``, ``"attrs[color]"``, ``"x[-1]"`` were left unquoted in the payload path,
    so every filter on them failed with "invalid JSON path" (or "Invalid path"); array access
    (``items[].n``) is still read as Qdrant reads it."""
    index = open_index(tiny_encoder)
    keys = ["[draft]", "attrs[color]", "x[-1]", "a]b"]
    index.add_texts(
        ["alpha beta.", "gamma delta.", "epsilon zeta.", "eta theta."],
        metadatas=[{k: "v", "items": [{"n": i}]} for i, k in enumerate(keys)],
        doc_ids=["d0", "d1", "d2", "d3"],
    )

    def found(f: dict[str, Any]) -> list[str]:
        return sorted(h.doc_id for h in index.search("alpha", k=5, filter=f))

    for i, key in enumerate(keys):
        assert found({key: "v"}) == [f"d{i}"]
    assert found({"items[].n": 2}) == ["d2"]
