"""One node id given to two nodes of different content in one ``add`` is refused by name,
before anything is encoded (it failed deep in the store with "duplicate (doc_id,
chunk_index) in one upsert", naming no node); copies of one node are stored once."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from llamaindex_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder


def test_duplicate_node_id_named(tiny_encoder: M3Encoder, calls: list[int]) -> None:
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc", hash="v1")}
    first = TextNode(text="Oxygen has the atomic number 8.", id_="dup", relationships=source)
    second = TextNode(text="Iron rusts in water.", id_="dup", relationships=source)
    other = TextNode(text="Neon is a noble gas.", id_="neon", relationships=source)
    with M3VectorStore(tiny_encoder) as store:
        with pytest.raises(ValueError, match=r"'dup' at nodes\[0, 2\].*its own id"):
            store.add([first, other, second])
        assert calls == []  # refused before anything was encoded
        assert store.get_nodes() == []
        # copies of one node are one node
        assert store.add([first, first.model_copy()]) == ["dup", "dup"]
        assert [n.get_content() for n in store.get_nodes()] == [first.text]


def test_retriever_add_nodes_refuses_duplicate_node_id(
    tiny_encoder: M3Encoder, calls: list[int]
) -> None:
    """``M3Retriever.add_nodes`` refuses one node id on nodes of different content as
    ``M3VectorStore.add`` does, before encoding (it stored both, as two chunks of one id, and
    a copy of one node twice)."""
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc", hash="v1")}
    first = TextNode(text="Oxygen has the atomic number 8.", id_="dup", relationships=source)
    second = TextNode(text="Iron rusts in water.", id_="dup", relationships=source)
    other = TextNode(text="Neon is a noble gas.", id_="neon", relationships=source)
    with M3VectorStore(tiny_encoder) as store:
        retriever = M3Retriever(store.client)
        with pytest.raises(ValueError, match=r"'dup' at nodes\[0, 2\].*its own id"):
            retriever.add_nodes([first, other, second])
        assert calls == []  # refused before anything was encoded
        assert store.get_nodes() == []
        # copies of one node are one node: one chunk, encoded once
        assert retriever.add_nodes([first, other, first.model_copy()]) == ["dup", "neon", "dup"]
        assert calls == [2]
        stored = sorted((n.node_id, n.get_content()) for n in store.get_nodes())
        assert stored == [("dup", first.text), ("neon", other.text)]
        # a node id in two documents stays refused
        elsewhere = TextNode(
            text=second.text,
            id_="dup",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc2")},
        )
        with pytest.raises(ValueError, match="'dup' is stored in document 'doc'"):
            retriever.add_nodes([elsewhere])
