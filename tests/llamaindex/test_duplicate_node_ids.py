"""One node id given to two nodes of different content in one ``add`` is refused by name,
before anything is encoded (it failed deep in the store with "duplicate (doc_id,
chunk_index) in one upsert", naming no node); copies of one node are stored once."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from llamaindex_m3 import M3VectorStore
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
