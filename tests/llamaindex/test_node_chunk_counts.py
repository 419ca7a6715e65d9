"""The ``chunk_count`` of a document whose nodes ``M3VectorStore`` gets in several writes.

``VectorStoreIndex`` writes a document's nodes in batches of ``insert_batch_size``, so
``M3VectorStore.add`` gets one version of a document in several calls. Each call stored its
own running count on the chunks it wrote (2, 4, 5 for batches of 2 of five nodes), and the
chunks written earlier kept theirs; LangChain's reader shows placement keys by that count,
and ``complete_documents`` found no such document complete. Every chunk of the version now
carries the document's count after each write, on both engines, a write that stopped before
the count was set leaves it for the next write of the document to set, and a reindex keeps it.

A node deleted on its own leaves its document's count as it was: the version still has that
many chunks, one of them missing (``complete_documents`` sees the document as incomplete, so
a writer that skips complete documents writes it again), and the node added again takes its
old place rather than a new one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index, M3Store
from m3kit.store.filters import documents_filter
from m3kit.store.schema import CHUNK_COUNT, CHUNK_ID, CHUNK_INDEX, DOC_HASH, DOC_ID
from tests.reliability.killing import index_points

TEXT = " ".join(
    f"Sentence {i} tells of the Amazon river and the rainforest around it." for i in range(12)
)


def _nodes() -> list[BaseNode]:
    """One document split into five or more nodes (of one version)."""
    doc = Document(text=TEXT, id_="d0", metadata={"title": "Rivers"})
    nodes = SentenceSplitter(chunk_size=40, chunk_overlap=10)([doc])
    assert len(nodes) >= 5
    return nodes


def _open(encoder: M3Encoder, where: Path, backend: str, **options: Any) -> M3Index:
    return M3Index.open(encoder, where, collection="c", backend=backend, **options)


def _counts(index: M3Index) -> dict[int, int]:
    """``{chunk_index: chunk_count}`` of document ``d0``."""
    return {
        int(p[CHUNK_INDEX]): int(p[CHUNK_COUNT])
        for p, _ in index_points(index).values()
        if p[DOC_ID] == "d0"
    }


def _batched(encoder: M3Encoder, index: M3Index, nodes: Sequence[BaseNode], size: int) -> None:
    """``nodes`` (copies) through ``VectorStoreIndex`` in batches of ``size``."""
    VectorStoreIndex(
        copy.deepcopy(list(nodes)),
        storage_context=StorageContext.from_defaults(vector_store=M3VectorStore(index=index)),
        embed_model=M3Embedding.from_encoder(encoder),
        insert_batch_size=size,
    )


@pytest.fixture(params=["edge", "client"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_batched_nodes_all_carry_the_documents_count(
    enc_a: M3Encoder, tmp_path: Path, backend: str
) -> None:
    nodes = _nodes()
    with _open(enc_a, tmp_path, backend) as index:
        _batched(enc_a, index, nodes, size=2)
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))
        version = {p[DOC_HASH] for p, _ in index_points(index).values()}
        assert len(version) == 1
        assert index.store.complete_documents({"d0": version.pop()}) == {"d0"}


def test_langchain_reads_a_first_node_added_alone_as_a_chunk(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """Batches of one: the first node was stored with count 1, so LangChain's reader showed
    it as a whole document (no placement keys)."""
    from langchain_m3._documents import hit_document

    nodes = _nodes()
    with _open(enc_a, tmp_path, "edge") as index:
        _batched(enc_a, index, nodes, size=1)
        docs = [hit_document(h) for h in index.store.get(filter=documents_filter(["d0"]))]
    assert len(docs) == len(nodes)
    assert sorted(d.metadata["chunk_index"] for d in docs) == list(range(len(nodes)))


def test_two_add_calls_of_one_version(enc_a: M3Encoder, tmp_path: Path, backend: str) -> None:
    nodes = _nodes()
    with _open(enc_a, tmp_path, backend) as index:
        store = M3VectorStore(index=index)
        store.add(copy.deepcopy(nodes[:2]))
        assert _counts(index) == {0: 2, 1: 2}
        store.add(copy.deepcopy(nodes[2:]))
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))
        # the same nodes again: nothing changes
        store.add(copy.deepcopy(nodes))
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))


def test_a_reindex_keeps_the_count(enc_a: M3Encoder, tmp_path: Path, backend: str) -> None:
    nodes = _nodes()
    with _open(enc_a, tmp_path, backend) as index:
        _batched(enc_a, index, nodes, size=2)
    with _open(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True) as index:
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))


def test_a_count_left_unset_is_set_by_the_next_write(
    enc_a: M3Encoder, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stopped after its chunks were stored, before the document's other chunks
    got the new count (crash-safe: the chunks are there), leaves it to the next write."""
    nodes = _nodes()
    with _open(enc_a, tmp_path, backend) as index:
        store = M3VectorStore(index=index)
        store.add(copy.deepcopy(nodes[:2]))

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(M3Store, "set_chunk_count", crash)
            with pytest.raises(KeyboardInterrupt):
                store.add(copy.deepcopy(nodes[2:]))
        counts = _counts(index)
        assert sorted(counts) == list(range(len(nodes)))  # every chunk stored
        assert counts[0] == 2 and counts[len(nodes) - 1] == len(nodes)
        store.add(copy.deepcopy(nodes[:1]))  # stored already: nothing encoded
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))


@pytest.mark.parametrize("which", ["last", "middle"])
def test_a_deleted_node_keeps_the_count_and_comes_back_in_its_place(
    enc_a: M3Encoder, tmp_path: Path, backend: str, which: str
) -> None:
    nodes = _nodes()
    gone = len(nodes) - 1 if which == "last" else 2
    with _open(enc_a, tmp_path, backend) as index:
        store = M3VectorStore(index=index)
        _batched(enc_a, index, nodes, size=2)
        store.delete_nodes([nodes[gone].node_id])
        left = dict.fromkeys(set(range(len(nodes))) - {gone}, len(nodes))
        assert _counts(index) == left
        version = {p[DOC_HASH] for p, _ in index_points(index).values()}.pop()
        assert index.store.complete_documents({"d0": version}) == set()  # one is missing
        store.add(copy.deepcopy([nodes[gone]]))
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))
        by_id = {p[CHUNK_ID]: p[CHUNK_INDEX] for p, _ in index_points(index).values()}
        assert by_id[nodes[gone].node_id] == gone
        assert index.store.complete_documents({"d0": version}) == {"d0"}


def test_a_new_node_fills_a_deleted_ones_place(enc_a: M3Encoder, tmp_path: Path) -> None:
    nodes = _nodes()
    with _open(enc_a, tmp_path, "edge") as index:
        store = M3VectorStore(index=index)
        store.add(copy.deepcopy(nodes))
        store.delete_nodes([nodes[1].node_id])
        extra = copy.deepcopy(nodes[1])
        extra.id_ = "an-extra-node"
        extra.set_content("Sentence 99 is new.")
        store.add([extra])
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))
        by_id = {p[CHUNK_ID]: p[CHUNK_INDEX] for p, _ in index_points(index).values()}
        assert by_id["an-extra-node"] == 1


def test_a_retriever_document_missing_a_deleted_node_is_written_again(
    enc_a: M3Encoder, tmp_path: Path, backend: str
) -> None:
    """``add_nodes`` skips a document stored whole at its version; one whose node was deleted
    is not whole, so adding its nodes again restores the node (its count was not lowered)."""
    nodes = _nodes()
    with _open(enc_a, tmp_path, backend) as index:
        M3Retriever(index).add_nodes(copy.deepcopy(nodes))
        M3VectorStore(index=index).delete_nodes([nodes[-1].node_id])
        assert len(_counts(index)) == len(nodes) - 1
        M3Retriever(index).add_nodes(copy.deepcopy(nodes))
        assert _counts(index) == dict.fromkeys(range(len(nodes)), len(nodes))
