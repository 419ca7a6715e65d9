"""``M3VectorStore.add`` encodes and writes nodes in groups of whole documents, as
``M3Index.add_texts`` does: it held every node's vectors (ColBERT's one per token) at once, an
``IngestionPipeline``'s whole run (measured on the tiny model: 206 MiB of ColBERT vectors for
20,000 nodes in one write, 6.5 GiB at BGE-M3's 1,024 dimensions)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter

import llamaindex_m3.node_groups as node_groups
from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit.testing import SAMPLE_TEXTS


def _six_documents_nodes() -> list[Any]:
    docs = [
        Document(text=" ".join(SAMPLE_TEXTS[i % 7] for i in range(j, j + 4)), id_=f"d{j}")
        for j in range(6)
    ]
    return SentenceSplitter(chunk_size=24, chunk_overlap=0).get_nodes_from_documents(docs)


def _spied_writes(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The documents of each ``store.upsert`` call (filled as they happen)."""
    writes: list[set[str]] = []
    upsert = store.upsert

    def spy(records: Any, **options: Any) -> Any:
        writes.append({r.doc_id for r in records})
        return upsert(records, **options)

    monkeypatch.setattr(store, "upsert", spy)
    return writes


def test_nodes_are_written_in_groups_of_whole_documents(
    tiny_embedding: M3Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_groups, "WRITE_GROUP_CHARS", 200)
    nodes = _six_documents_nodes()
    with M3VectorStore(tiny_embedding) as store:
        writes = _spied_writes(store._index.store, monkeypatch)
        assert store.add(nodes) == [n.node_id for n in nodes]
        assert len(writes) > 1  # several groups ...
        assert sum(len(w) for w in writes) == 6  # ... each document in one of them, whole
        got = store.get_nodes([n.node_id for n in nodes])
        assert [n.get_content() for n in got] == [n.get_content() for n in nodes]
        writes.clear()
        store.add(nodes)  # unchanged: nothing written again
        assert writes == []


def test_the_retrievers_nodes_are_written_in_groups_too(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamaindex_m3 import M3Retriever

    monkeypatch.setattr(node_groups, "WRITE_GROUP_CHARS", 200)
    nodes = _six_documents_nodes()
    retriever = M3Retriever.open(tiny_encoder)
    writes = _spied_writes(retriever.index.store, monkeypatch)
    assert retriever.add_nodes(nodes) == [n.node_id for n in nodes]
    assert len(writes) > 1 and sum(len(w) for w in writes) == 6
    assert retriever.index.count() == len(nodes)


@pytest.mark.parametrize("bad", ["image", "surrogate"])
def test_a_node_refused_in_a_later_group_writes_nothing(
    tiny_embedding: M3Embedding, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """What needs no encoding is checked for every node first: a textless ``ImageNode`` or a
    text that is not UTF-8 in a later group was refused after the groups before it were
    written (and named by its place in its group)."""
    from llama_index.core.schema import ImageNode, TextNode

    from llamaindex_m3 import M3Retriever

    monkeypatch.setattr(node_groups, "WRITE_GROUP_CHARS", 30)
    nodes = [TextNode(text=f"{SAMPLE_TEXTS[i % 7]} ({i})", id_=f"n{i}") for i in range(6)]
    last = (
        ImageNode(image="aGk=", id_="last")
        if bad == "image"
        else TextNode(text="bad " + chr(0xDC80), id_="last")
    )
    message = "ImageNode without text" if bad == "image" else "node 'last' is not valid UTF-8"
    with M3VectorStore(tiny_embedding) as store:
        with pytest.raises(ValueError, match=message):
            store.add([*nodes, last])
        assert store._index.count() == 0
    retriever = M3Retriever.open(tiny_encoder)
    with pytest.raises(ValueError, match=message):
        retriever.add_nodes([*nodes, last])
    assert retriever.index.count() == 0
