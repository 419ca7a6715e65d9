"""``M3LateChunkingNodeParser`` as the leaf level of LlamaIndex's ``HierarchicalNodeParser``.

The leaf parser is given the parent chunks, so each leaf is late-chunked within its parent.
The leaves reach ``M3VectorStore`` and ``M3QdrantVectorStore`` with those vectors (never
encoded alone), keep their parent, source and neighbour links, and ``AutoMergingRetriever``
merges them back into their parents.
"""

from __future__ import annotations

import hashlib
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import (
    HierarchicalNodeParser,
    SentenceSplitter,
    get_leaf_nodes,
    get_root_nodes,
)
from llama_index.core.retrievers import AutoMergingRetriever
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship
from llama_index.core.vector_stores import VectorStoreQuery

from llamaindex_m3 import (
    M3Embedding,
    M3HierarchicalNodeParser,
    M3LateChunkingNodeParser,
    M3QdrantVectorStore,
    M3VectorStore,
)
from llamaindex_m3.node_parser import (
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    EditedNodeError,
    chunk_records,
    node_vectors,
)
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

INTERNAL = {LATE_METADATA_KEY, SPARSE_METADATA_KEY}
DOCS = [
    Document(text=" ".join(SAMPLE_TEXTS[:4]), doc_id="d1", metadata={"src": "a"}),
    Document(text=" ".join(SAMPLE_TEXTS[4:8]), doc_id="d2", metadata={"src": "b"}),
]


@pytest.fixture(scope="module")
def leaf_parser(tiny_encoder: M3Encoder) -> M3LateChunkingNodeParser:
    return M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)


def _hierarchy(leaf_parser: M3LateChunkingNodeParser) -> HierarchicalNodeParser:
    return HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": SentenceSplitter(chunk_size=40, chunk_overlap=0),
            "leaf": leaf_parser,
        },
    )


@pytest.fixture
def nodes(leaf_parser: M3LateChunkingNodeParser) -> list[BaseNode]:
    parsed = _hierarchy(leaf_parser).get_nodes_from_documents(DOCS)
    assert len(get_root_nodes(parsed)) > len(DOCS)  # several parents per document
    return parsed


def _children(parent: BaseNode, nodes: list[BaseNode]) -> list[BaseNode]:
    by_id = {n.node_id: n for n in nodes}
    return [by_id[c.node_id] for c in parent.child_nodes or []]


def _index(nodes: list[BaseNode], store: Any, embed: M3Embedding) -> VectorStoreIndex:
    """The auto-merging set-up: every node in the docstore, the leaves in the vector store."""
    storage = StorageContext.from_defaults(vector_store=store)
    storage.docstore.add_documents(nodes)
    return VectorStoreIndex(get_leaf_nodes(nodes), storage_context=storage, embed_model=embed)


def _check_auto_merging(index: VectorStoreIndex, nodes: list[BaseNode]) -> None:
    leaves, roots = get_leaf_nodes(nodes), get_root_nodes(nodes)
    # every leaf retrieved: each parent has all its children, so each is merged into it
    retriever = AutoMergingRetriever(
        index.as_retriever(similarity_top_k=len(leaves)), index.storage_context
    )
    got = retriever.retrieve(SAMPLE_TEXTS[1])
    assert {hit.node.node_id for hit in got} == {r.node_id for r in roots}


def test_leaves_are_late_chunked_within_their_parent(
    nodes: list[BaseNode], leaf_parser: M3LateChunkingNodeParser, tiny_encoder: M3Encoder
) -> None:
    for parent in get_root_nodes(nodes):
        children = _children(parent, nodes)
        assert len(children) > 1
        # the leaf parser's document is the parent chunk: the same chunks and vectors
        alone = leaf_parser.chunker.chunk([parent.text])[0]
        assert [c.get_content(MetadataMode.NONE) for c in children] == [c.text for c in alone]
        for i, (leaf, chunk) in enumerate(zip(children, alone, strict=True)):
            assert leaf.parent_node is not None and leaf.parent_node.node_id == parent.node_id
            assert leaf.ref_doc_id == parent.ref_doc_id in {"d1", "d2"}
            late = leaf.metadata[LATE_METADATA_KEY]
            assert late["cut_from"] == parent.node_id
            assert (late["index"], late["count"]) == (i, len(children))
            assert late["source"] == hashlib.sha256(parent.text.encode()).hexdigest()[:32]
            # offsets within the parent, as LlamaIndex's own leaves have them
            assert parent.text[leaf.start_char_idx : leaf.end_char_idx] == leaf.text  # type: ignore[attr-defined]
            np.testing.assert_allclose(node_vectors(leaf).dense[0], chunk.dense, atol=1e-6)
            assert leaf.embedding == pytest.approx(chunk.dense.tolist(), abs=1e-6)
        # and not the vector of its text encoded alone
        naive = tiny_encoder.encode([children[1].text], heads="dense").dense[0]
        assert not np.allclose(node_vectors(children[1]).dense[0], naive, atol=1e-4)


def test_leaves_link_to_both_neighbours_within_their_parent(nodes: list[BaseNode]) -> None:
    # LlamaIndex's post-processing of nodes cut from a node (not a Document) drops every NEXT
    for parent in get_root_nodes(nodes):
        children = _children(parent, nodes)
        assert NodeRelationship.PREVIOUS not in children[0].relationships
        assert NodeRelationship.NEXT not in children[-1].relationships
        for before, after in pairwise(children):
            assert before.next_node is not None and before.next_node.node_id == after.node_id
            assert after.prev_node is not None and after.prev_node.node_id == before.node_id
            assert not INTERNAL & set(before.next_node.metadata)
            assert before.next_node.metadata == {"src": parent.metadata["src"]}


def test_parents_do_not_carry_their_childrens_vectors(nodes: list[BaseNode]) -> None:
    for parent in get_root_nodes(nodes):
        links = parent.child_nodes or []
        assert links and all(not INTERNAL & set(link.metadata) for link in links)
        assert all(link.metadata == {"src": parent.metadata["src"]} for link in links)
        assert SPARSE_METADATA_KEY not in parent.to_json()
    # the leaves keep their own
    assert all(set(leaf.metadata) >= INTERNAL for leaf in get_leaf_nodes(nodes))


def test_m3_vector_store_keeps_the_late_vectors_and_auto_merges(
    nodes: list[BaseNode], tiny_embedding: M3Embedding, calls: list[int]
) -> None:
    leaves = get_leaf_nodes(nodes)
    store = M3VectorStore(tiny_embedding)
    try:
        index = _index(nodes, store, tiny_embedding)
        assert calls == []  # no leaf encoded again: each kept its late-chunked vectors
        got = store.get_nodes()
        assert {n.node_id for n in got} == {n.node_id for n in leaves}
        by_id = {n.node_id: n for n in got}
        for leaf in leaves:
            back = by_id[leaf.node_id]
            assert back.ref_doc_id == leaf.ref_doc_id
            assert back.parent_node is not None and leaf.parent_node is not None
            assert back.parent_node.node_id == leaf.parent_node.node_id
        # the stored dense vector of a leaf is its late one
        leaf = leaves[3]
        late = node_vectors(leaf).dense[0]
        hit = store.query(VectorStoreQuery(query_embedding=late.tolist(), similarity_top_k=1))
        assert hit.ids == [leaf.node_id]
        assert hit.similarities == [pytest.approx(1.0, abs=1e-5)]
        _check_auto_merging(index, nodes)
        # the leaves are stored under their document: delete_ref_doc removes them
        index.delete_ref_doc("d1")
        left = store.get_nodes()
        assert left and {n.ref_doc_id for n in left} == {"d2"}
        assert len(left) == sum(n.ref_doc_id == "d2" for n in leaves)
    finally:
        store.close()


def test_parsing_again_stores_nothing_new_and_merges_into_the_new_parents(
    leaf_parser: M3LateChunkingNodeParser, tiny_embedding: M3Embedding, calls: list[int]
) -> None:
    # a repeated passage: two parents of equal text, their leaves of equal text and span
    doc = Document(text=" ".join(SAMPLE_TEXTS[:3] * 2), doc_id="d1")
    hierarchy = HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": SentenceSplitter(chunk_size=48, chunk_overlap=0),
            "leaf": leaf_parser,
        },
    )
    store = M3VectorStore(tiny_embedding)
    try:
        for _ in range(2):  # each parse draws new node ids
            nodes = hierarchy.get_nodes_from_documents([doc])
            roots = get_root_nodes(nodes)
            assert len(roots) == 2 and roots[0].text.strip() == roots[1].text.strip()
            calls.clear()
            index = _index(nodes, store, tiny_embedding)
            assert calls == []
            stored = {n.node_id for n in store.get_nodes()}
            assert stored == {n.node_id for n in get_leaf_nodes(nodes)}
            _check_auto_merging(index, nodes)
    finally:
        store.close()


def test_qdrant_vector_store_keeps_the_late_vectors_and_auto_merges(
    nodes: list[BaseNode], tiny_embedding: M3Embedding, calls: list[int]
) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    store = M3QdrantVectorStore("leaves", client=client, sparse_model=tiny_embedding)
    index = _index(nodes, store, tiny_embedding)
    assert calls == []
    points, _ = client.scroll("leaves", limit=1000, with_vectors=True)
    leaves = {n.node_id: n for n in get_leaf_nodes(nodes)}
    assert {str(p.id) for p in points} == set(leaves)
    for p in points:
        assert isinstance(p.vector, dict)
        dense = p.vector[store.dense_vector_name]
        np.testing.assert_allclose(dense, node_vectors(leaves[str(p.id)]).dense[0], atol=1e-5)
    _check_auto_merging(index, nodes)


def test_ingestion_pipeline_keeps_the_leaves_and_embeds_the_parents(
    leaf_parser: M3LateChunkingNodeParser, tiny_embedding: M3Embedding
) -> None:
    pipeline = IngestionPipeline(transformations=[_hierarchy(leaf_parser), tiny_embedding])
    out = pipeline.run(documents=DOCS)
    leaves, roots = get_leaf_nodes(out), get_root_nodes(out)
    assert leaves and roots and len(leaves) + len(roots) == len(out)
    for leaf in leaves:  # the late-chunked embedding, not the text's
        assert leaf.embedding == pytest.approx(node_vectors(leaf).dense[0].tolist(), abs=1e-6)
    for parent in roots:  # parents are plain nodes: embedded on their text
        want = tiny_embedding.get_text_embedding(parent.get_content(MetadataMode.EMBED))
        assert parent.embedding == pytest.approx(want, abs=1e-5)


def test_chunk_records_refuse_the_leaves_naming_the_stores(nodes: list[BaseNode]) -> None:
    # a leaf is numbered within its parent: M3Store records would collide across parents
    with pytest.raises(ValueError, match=r"late-chunked from node .*M3VectorStore"):
        chunk_records(get_leaf_nodes(nodes))


def test_a_level_after_the_late_chunking_one_is_refused_naming_it(
    leaf_parser: M3LateChunkingNodeParser, tiny_embedding: M3Embedding
) -> None:
    # LlamaIndex gives the pieces another parser cuts from a node that node's embedding and
    # metadata: leaves below a late-chunked level carry their parent's vectors
    upside_down = HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": leaf_parser,
            "leaf": SentenceSplitter(chunk_size=8, chunk_overlap=0),
        },
    )
    nodes = upside_down.get_nodes_from_documents(DOCS[:1])
    leaves = [n for n in get_leaf_nodes(nodes) if n.parent_node is not None]
    assert leaves and all(LATE_METADATA_KEY in n.metadata for n in leaves)
    pattern = "last \\(leaf\\) level"
    with pytest.raises(EditedNodeError, match=pattern):
        IngestionPipeline(transformations=[upside_down, tiny_embedding]).run(documents=DOCS[:1])
    store = M3VectorStore(tiny_embedding)
    try:
        with pytest.raises(EditedNodeError, match=pattern):
            _index(nodes, store, tiny_embedding)
        assert store.get_nodes() == []
    finally:
        store.close()


def test_storing_every_level_is_refused_naming_the_leaves_way(
    nodes: list[BaseNode], tiny_embedding: M3Embedding
) -> None:
    """Parents (encoded alone) and late-chunked leaves of one document are two versions of
    it to the store: refused, and the message said only "add the nodes of one version"."""
    for node in nodes:
        if node.embedding is None:
            node.embedding = tiny_embedding.get_text_embedding(node.get_content("embed"))
    store = M3VectorStore(tiny_embedding)
    try:
        with pytest.raises(ValueError, match=r"store only the leaves \(get_leaf_nodes\)"):
            store.add(nodes)
        assert store.get_nodes() == []
    finally:
        store.close()


async def test_m3_hierarchy_splits_in_async_pipelines(
    leaf_parser: M3LateChunkingNodeParser,
) -> None:
    """LlamaIndex's ``HierarchicalNodeParser`` splits only in ``get_nodes_from_documents``:
    ``aget_nodes_from_documents`` / ``acall`` (``IngestionPipeline.arun``) returned the
    documents unsplit, silently (no leaves, no parents: each document stored as one node).
    ``M3HierarchicalNodeParser`` makes the nodes ``run`` makes, the model off the event loop."""
    hierarchy = M3HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": SentenceSplitter(chunk_size=40, chunk_overlap=0),
            "leaf": leaf_parser,
        },
    )
    want = hierarchy.get_nodes_from_documents(DOCS)
    pipeline = IngestionPipeline(transformations=[hierarchy], disable_cache=True)
    for got in (
        await hierarchy.aget_nodes_from_documents(DOCS),
        await hierarchy.acall(DOCS),
        await pipeline.arun(documents=DOCS),
    ):
        assert [n.get_content() for n in got] == [n.get_content() for n in want]
        assert len(get_leaf_nodes(got)) == len(get_leaf_nodes(want)) > len(DOCS)
        assert len(get_root_nodes(got)) == len(get_root_nodes(want))
        for node, expected in zip(get_leaf_nodes(got), get_leaf_nodes(want), strict=True):
            assert node.embedding == pytest.approx(expected.embedding, abs=1e-6)
