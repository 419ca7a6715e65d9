"""Incremental indexing on every backend: skip unchanged, replace changed, repair partial writes."""

from __future__ import annotations

from typing import Any

import pytest

from m3kit.store import M3Index
from m3kit.store.filters import documents_filter, ids_filter
from m3kit.store.index import content_doc_id
from m3kit.store.schema import point_id
from tests.store.conftest import EncodeSpy, SentenceChunker

DOCS = {
    "d1": "The Rhine flows north. It reaches the sea in the Netherlands. Barges carry coal.",
    "d2": "Oxygen is an element. Its symbol is O. It has atomic number eight.",
    "d3": "Tesla designed motors. He worked in New York.",
}


def _doc_chunks(index: M3Index, doc_id: str) -> list[tuple[int, str]]:
    hits = index.store._backend.scroll(documents_filter([doc_id]), ["chunk_index", "page_content"])
    return sorted((h.payload["chunk_index"], h.payload["page_content"]) for h in hits)


def test_unchanged_documents_are_not_re_encoded(open_index: Any, tiny_encoder: Any) -> None:
    spy = EncodeSpy(tiny_encoder)
    index = open_index(spy)
    texts, ids = list(DOCS.values()), list(DOCS)
    assert index.add_texts(texts, doc_ids=ids) == ids
    assert sorted(spy.encoded) == sorted(spy.decoded(texts))
    spy.encoded.clear()
    assert index.add_texts(texts, doc_ids=ids) == ids
    assert spy.encoded == []
    assert index.count() == 3
    # Same text, new metadata: a new version, updated in place (its vectors depend on the
    # text only: it was encoded again); others untouched.
    index.add_texts([DOCS["d2"], DOCS["d3"]], metadatas=[{"v": 2}, None], doc_ids=["d2", "d3"])
    assert spy.encoded == []
    assert index.search(DOCS["d2"], k=1, filter={"v": 2})[0].doc_id == "d2"
    assert index.store.document_metadata(["d2"]) == {"d2": {"v": 2}}
    assert index.count() == 3
    index.add_texts([DOCS["d2"]], metadatas=[{"v": 2}], doc_ids=["d2"])  # now at that version
    index.add_texts([DOCS["d2"]], metadatas=[{"v": 1}], doc_ids=["d2"])  # and back
    assert spy.encoded == []
    assert index.store.document_metadata(["d2"]) == {"d2": {"v": 1}}
    # new text and new metadata: encoded
    index.add_texts([DOCS["d3"]], metadatas=[{"v": 3}], doc_ids=["d2"])
    assert spy.encoded == spy.decoded([DOCS["d3"]])
    assert index.search(DOCS["d3"], k=1, filter={"v": 3})[0].doc_id == "d2"
    assert index.count() == 3


def test_default_doc_id_is_content_hash(open_index: Any, tiny_encoder: Any) -> None:
    index = open_index(tiny_encoder)
    ids = index.add_texts(["same text", "other text", "same text"])
    same = content_doc_id("same text")
    assert ids == [same, content_doc_id("other text"), same]
    assert index.count() == 2
    with pytest.raises(ValueError, match="given twice with different content"):
        index.add_texts(["a", "b"], doc_ids=["x", "x"])
    with pytest.raises(ValueError, match="2 metadatas for 1 texts"):
        index.add_texts(["a"], metadatas=[{}, {}])


def test_edited_document_keeps_exactly_its_new_chunks(open_index: Any, tiny_encoder: Any) -> None:
    spy = EncodeSpy(tiny_encoder)
    chunker = SentenceChunker(spy)
    index = open_index(spy)
    index.add_texts(list(DOCS.values()), doc_ids=list(DOCS), late_chunker=chunker)
    assert index.count() == 3 + 3 + 2
    assert [t for _, t in _doc_chunks(index, "d1")] == [
        "The Rhine flows north.",
        " It reaches the sea in the Netherlands.",
        " Barges carry coal.",
    ]
    spy.encoded.clear()
    edited = "The Rhine flows north. Rotterdam is its port."
    index.add_texts([edited, DOCS["d2"]], doc_ids=["d1", "d2"], late_chunker=chunker)
    assert spy.encoded == ["The Rhine flows north.", " Rotterdam is its port."]  # d2 skipped
    assert _doc_chunks(index, "d1") == [
        (0, "The Rhine flows north."),
        (1, " Rotterdam is its port."),
    ]
    assert index.count() == 2 + 3 + 2
    hits = index.search("Barges carry coal.", k=10)
    assert "Barges carry coal." not in {h.text.strip() for h in hits}
    # Emptied document: its chunks go.
    index.add_texts(["   "], doc_ids=["d3"], late_chunker=chunker)
    assert _doc_chunks(index, "d3") == []
    assert index.count() == 2 + 3


def test_partially_written_document_is_repaired(open_index: Any, tiny_encoder: Any) -> None:
    spy = EncodeSpy(tiny_encoder)
    chunker = SentenceChunker(spy)
    index = open_index(spy)
    index.add_texts(list(DOCS.values()), doc_ids=list(DOCS), late_chunker=chunker)
    # Simulate a crash after writing only part of d1: drop its last chunk.
    index.store._backend.delete(ids_filter([point_id("d1", 2)]))
    assert index.count() == 7
    spy.encoded.clear()
    index.add_texts(list(DOCS.values()), doc_ids=list(DOCS), late_chunker=chunker)
    assert len(spy.encoded) == 3  # only d1's three sentences
    assert index.count() == 8
    assert [i for i, _ in _doc_chunks(index, "d1")] == [0, 1, 2]


def test_late_chunker_from_m3kit(open_index: Any, tiny_encoder: Any) -> None:
    """The real LateChunker plugs in: one pass per document, chunks stored with offsets."""
    late_chunking = pytest.importorskip("m3kit.late_chunking")
    chunker = late_chunking.LateChunker(tiny_encoder._encoder, chunk_size=16)
    index = open_index(tiny_encoder)
    text = " ".join(DOCS.values())
    index.add_texts([text], doc_ids=["all"], late_chunker=chunker)
    chunks = chunker.chunk([text])[0]
    assert index.count() == len(chunks) > 1
    hit = index.search(chunks[1].text, k=1)[0]
    assert hit.doc_id == "all"
    assert hit.text == text[chunks[hit.chunk_index].start : chunks[hit.chunk_index].end]
