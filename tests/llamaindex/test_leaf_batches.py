"""Leaves of one document written in several batches each keep a chunk of their own.

``M3LateChunkingNodeParser`` as a ``HierarchicalNodeParser``'s leaf level gives each leaf its
character offsets within its parent, so two leaves of different parents can have the same
text at the same offsets. ``VectorStoreIndex`` writes nodes in batches of
``insert_batch_size``; a leaf of a later batch equal (text, offsets, metadata) to a stored leaf
of another parent took that leaf's chunk over as "a new parse of it", so the earlier leaf was
silently lost.
"""

from __future__ import annotations

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter, get_leaf_nodes

from llamaindex_m3 import (
    M3Embedding,
    M3HierarchicalNodeParser,
    M3LateChunkingNodeParser,
    M3VectorStore,
)

TEXT = " ".join(f"Sentence {i} is about oxygen and more words here." for i in range(8))


def test_equal_leaves_of_other_parents_in_later_batches_are_all_stored(
    tiny_embedding: M3Embedding,
) -> None:
    hierarchy = M3HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": SentenceSplitter(chunk_size=48, chunk_overlap=0),
            "leaf": M3LateChunkingNodeParser.from_encoder(tiny_embedding.encoder, chunk_size=16),
        },
    )
    nodes = hierarchy.get_nodes_from_documents([Document(text=TEXT, id_="a")])
    leaves = get_leaf_nodes(nodes)
    spans = [(n.get_content(), n.start_char_idx, n.end_char_idx) for n in leaves]
    assert len(set(spans)) < len(spans)  # equal leaves under different parents
    for batch_size in (2048, 1):
        with M3VectorStore(tiny_embedding) as store:
            ctx = StorageContext.from_defaults(vector_store=store)
            index = VectorStoreIndex(
                leaves,
                storage_context=ctx,
                embed_model=tiny_embedding,
                insert_batch_size=batch_size,
            )
            stored = sorted(n.node_id for n in store.get_nodes())
            assert stored == sorted(n.node_id for n in leaves), batch_size
            # the same leaves again (one batch each) store nothing new
            index.insert_nodes(leaves)
            assert store.client.count() == len(leaves)
            # a new parse of the document takes the stored chunks over, one each
            parsed = hierarchy.get_nodes_from_documents([Document(text=TEXT, id_="a")])
            again = get_leaf_nodes(parsed)
            for leaf in again:
                index.insert_nodes([leaf])
            assert sorted(n.node_id for n in store.get_nodes()) == sorted(n.node_id for n in again)
