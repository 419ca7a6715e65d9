"""Reindexing LlamaIndex documents stored as several nodes, each encoded alone.

``M3VectorStore.add`` and ``M3Retriever.add_nodes`` store a document split by a node parser
as several chunks, each encoded on its own text (with its metadata lines and the embedding's
``text_instruction``). A reindex (another encoder, or another sparse cut) refused every such
document, saying it was "chunked by an unknown method (written before m3kit recorded
chunking)". The writers now record the chunking ``{"kind": "nodes"}`` and a reindex re-encodes
each node from the text it was encoded on, as a fresh write with the new encoder or cut
stores it. Late-chunked nodes (pooled from their document) are still refused, saying why.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Retriever, M3VectorStore
from llamaindex_m3.node_parser import chunk_records
from m3kit import M3Encoder
from m3kit.store import M3Index, M3Store
from m3kit.store.schema import CHUNKING, ENCODED_TEXT, SPARSE_CUT
from m3kit.store.sparse_cut import SparseCut
from tests.reliability.killing import Points, assert_same_points, index_points

INSTRUCTION = "passage: "
TEXT = " ".join(
    f"Sentence {i} tells of the Amazon river and the rainforest around it." for i in range(12)
)


def _nodes() -> list[BaseNode]:
    """One document split by ``SentenceSplitter`` into several overlapping nodes."""
    doc = Document(text=TEXT, id_="d0", metadata={"title": "Rivers", "year": 1990})
    nodes = SentenceSplitter(chunk_size=40, chunk_overlap=10)([doc])
    assert len(nodes) >= 3
    return nodes


def _open(encoder: M3Encoder, where: Path, **options: Any) -> M3Index:
    return M3Index.open(encoder, where, collection="c", backend="edge", **options)


def _store_nodes(
    encoder: M3Encoder, where: Path, nodes: Sequence[BaseNode], **options: Any
) -> None:
    """``nodes`` (copies) through ``VectorStoreIndex`` + ``M3VectorStore``, with an instruction."""
    embedding = M3Embedding.from_encoder(encoder, text_instruction=INSTRUCTION)
    with _open(encoder, where, **options) as index:
        store = M3VectorStore(index=index, text_instruction=INSTRUCTION)
        VectorStoreIndex(
            copy.deepcopy(list(nodes)),
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embedding,
        )


def _retriever_nodes(
    encoder: M3Encoder, where: Path, nodes: Sequence[BaseNode], **options: Any
) -> None:
    """``nodes`` (copies) through ``M3Retriever.add_nodes``."""
    with _open(encoder, where, **options) as index:
        M3Retriever(index).add_nodes(copy.deepcopy(list(nodes)))


WRITERS = {"vector_store": _store_nodes, "retriever": _retriever_nodes}


@pytest.fixture(params=sorted(WRITERS))
def write(request: pytest.FixtureRequest) -> Any:
    return WRITERS[str(request.param)]


def _assert_same(got: Points, want: Points) -> None:
    assert len(want) >= 3
    assert_same_points(got, want)


def test_nodes_record_their_chunking(enc_a: M3Encoder, tmp_path: Path, write: Any) -> None:
    write(enc_a, tmp_path, _nodes())
    with _open(enc_a, tmp_path) as index:
        points = index_points(index)
    assert len(points) >= 3
    assert all(payload[CHUNKING] == {"kind": "nodes"} for payload, _ in points.values())


def test_a_cut_change_re_encodes_each_node(
    enc_a: M3Encoder, tmp_path: Path, write: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = _nodes()
    write(enc_a, tmp_path / "old", nodes)
    write(enc_a, tmp_path / "fresh", nodes, sparse_top_k=3)
    with _open(enc_a, tmp_path / "old") as index:
        before = index_points(index)
    with (
        _open(enc_a, tmp_path / "old", sparse_top_k=3, reindex=True) as index,
        _open(enc_a, tmp_path / "fresh") as fresh,
    ):
        got = index_points(index)
        _assert_same(got, index_points(fresh))
        for pid, (payload, vectors) in before.items():
            # positions, chunk ids, node fields, encoded text; the stamp of the new cut
            assert got[pid][0] == {**payload, SPARSE_CUT: SparseCut(3).stamp()}
            np.testing.assert_allclose(got[pid][1]["dense"], vectors["dense"], atol=1e-5)
            np.testing.assert_allclose(got[pid][1]["colbert"], vectors["colbert"], atol=2e-3)
            assert len(got[pid][1]["sparse"][0]) <= 3
        if write is _store_nodes:
            store = M3VectorStore(index=index, text_instruction=INSTRUCTION)
            back = store.get_nodes(node_ids=[n.node_id for n in nodes])
            assert [(n.node_id, n.text, n.start_char_idx, n.end_char_idx) for n in back] == [
                (n.node_id, n.text, n.start_char_idx, n.end_char_idx) for n in nodes
            ]
            embed = MetadataMode.EMBED  # the reader adds its placement keys, hidden from it
            assert [n.get_content(embed) for n in back] == [n.get_content(embed) for n in nodes]
    # the nodes are stored at their version: written again, nothing is encoded or written
    upserts: list[object] = []
    monkeypatch.setattr(M3Store, "upsert", lambda self, records, **kw: upserts.append(records))
    write(enc_a, tmp_path / "old", nodes)
    assert upserts == []


def test_an_encoder_reindex_re_encodes_each_node(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    tmp_path: Path,
    write: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = _nodes()
    write(enc_a, tmp_path / "old", nodes)
    write(enc_b, tmp_path / "fresh", nodes)
    with (
        _open(enc_b, tmp_path / "old", reindex=True) as index,
        _open(enc_b, tmp_path / "fresh") as fresh,
    ):
        got = index_points(index)
        _assert_same(got, index_points(fresh))
        if write is _store_nodes:  # encoded on the metadata lines after the instruction
            assert all(p[ENCODED_TEXT].startswith(INSTRUCTION) for p, _ in got.values())
    upserts: list[object] = []
    monkeypatch.setattr(M3Store, "upsert", lambda self, records, **kw: upserts.append(records))
    write(enc_b, tmp_path / "old", nodes)
    assert upserts == []


def test_a_node_longer_than_the_window_is_cut_as_add_cuts_it(
    tiny_m3_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node longer than the model's window is not refused: the reindex cuts it with a
    warning naming it, as adding it cuts it."""
    enc_a = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=128)
    long = Document(text=" ".join(["rainforest river"] * 600), id_="long")
    nodes = [*_nodes(), *SentenceSplitter(chunk_size=2000, chunk_overlap=0)([long])]
    _retriever_nodes(enc_a, tmp_path / "old", nodes)
    _retriever_nodes(enc_a, tmp_path / "fresh", nodes, sparse_top_k=3)
    with (
        caplog.at_level(logging.WARNING),
        _open(enc_a, tmp_path / "old", sparse_top_k=3, reindex=True) as index,
        _open(enc_a, tmp_path / "fresh") as fresh,
    ):
        assert_same_points(index_points(index), index_points(fresh))
    assert any("'long'" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)


def test_late_chunked_nodes_are_still_refused_saying_why(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    doc = Document(text=TEXT, id_="late")
    nodes = M3LateChunkingNodeParser.from_encoder(enc_a, chunk_size=24)([doc])
    assert len(nodes) >= 3
    with _open(enc_a, tmp_path) as index:
        M3VectorStore(index=index).add(nodes)
        before = index_points(index)
    # recorded as a chunking reindex cannot redo, naming the parser (not left unrecorded)
    for payload, _ in before.values():
        assert payload[CHUNKING]["kind"] == "custom"
        assert payload[CHUNKING]["signature"].startswith("M3LateChunkingNodeParser")
    for options in ({"sparse_top_k": 3}, {}):
        encoder = enc_b if not options else enc_a
        with pytest.raises(ValueError) as caught:
            _open(encoder, tmp_path, reindex=True, **options)
        message = str(caught.value)
        assert "'late'" in message and "M3LateChunkingNodeParser" in message
        assert "which reindex cannot redo" in message
        assert "late-chunked" in message and "not stored whole" in message
        assert "written before m3kit recorded chunking" not in message
        with _open(enc_a, tmp_path) as index:
            assert_same_points(index_points(index), before)


@pytest.mark.parametrize("writer", ["vector_store", "retriever", "chunk_records"])
def test_a_one_node_late_chunked_document_is_refused_not_encoded_whole(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path, writer: str
) -> None:
    """A document late-chunked into one node stores one chunk with no recorded chunking, as
    chunks written before chunkings were recorded did. It was taken for such a whole document
    and re-encoded on its text alone: its dense vector (pooled from its document's tokens)
    silently changed, even for a sparse cut change on the same encoder."""
    doc = Document(text="  A short text about rivers and lakes.  ", id_="lone")
    nodes = M3LateChunkingNodeParser.from_encoder(enc_a, chunk_size=200)([doc])
    assert len(nodes) == 1
    with _open(enc_a, tmp_path) as index:
        if writer == "vector_store":
            M3VectorStore(index=index).add(nodes)
        elif writer == "chunk_records":  # the parser's recipe: M3Store.upsert(chunk_records)
            index.store.upsert(chunk_records(nodes), replace=True)
        else:
            M3Retriever(index).add_nodes(nodes)
        before = index_points(index)
    for options in ({"sparse_top_k": 3}, {}):
        encoder = enc_b if not options else enc_a
        with pytest.raises(ValueError) as caught:
            _open(encoder, tmp_path, reindex=True, **options)
        message = str(caught.value)
        assert "'lone'" in message and "nothing was written" in message
        assert "late-chunked" in message or "M3LateChunkingNodeParser" in message
        with _open(enc_a, tmp_path) as index:
            assert_same_points(index_points(index), before)
