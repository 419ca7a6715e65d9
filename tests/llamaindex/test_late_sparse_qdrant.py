"""Late-chunked nodes in LlamaIndex's own QdrantVectorStore keep their late-chunked sparse vectors.

``QdrantVectorStore`` asks ``sparse_doc_fn`` for each node's sparse vector by its text alone;
:class:`M3QdrantVectorStore` gives late-chunked nodes the vector they carry instead (no encoding),
on a real ``QdrantVectorStore(enable_hybrid=True)`` over qdrant-client ``:memory:``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from llamaindex_m3 import (
    M3Embedding,
    M3LateChunkingNodeParser,
    M3QdrantVectorStore,
    M3SparseEmbedding,
    M3VectorStore,
    m3_sparse_fns,
)
from llamaindex_m3.node_parser import LATE_METADATA_KEY, SPARSE_METADATA_KEY, node_vectors
from m3kit import M3Encoder
from m3kit.fingerprint import encoder_fingerprint

LONG = [
    Document(
        text=" ".join(
            f"Paragraph {i} of the {topic} notes says something about {topic} number {i}."
            for i in range(12)
        ),
        doc_id=f"doc-{topic}",
        metadata={"topic": topic},
    )
    for topic in ("volcanoes", "honeybees")
]


def _nodes(encoder: M3Encoder) -> list[BaseNode]:
    parser = M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=48)
    nodes = parser.get_nodes_from_documents(LONG)
    assert len(nodes) > 4
    return nodes


def _stored_sparse(
    client: QdrantClient, collection: str
) -> dict[str, tuple[list[int], list[float]]]:
    points, _ = client.scroll(collection, limit=1000, with_vectors=True)
    out = {}
    for p in points:
        sparse = p.vector["text-sparse-new"]  # type: ignore[index]
        out[str(p.id)] = (list(sparse.indices), list(sparse.values))
    return out


def _index(store: QdrantVectorStore, nodes: list[BaseNode], embed: M3Embedding) -> VectorStoreIndex:
    return VectorStoreIndex(
        nodes, embed_model=embed, storage_context=StorageContext.from_defaults(vector_store=store)
    )


def test_store_keeps_the_late_chunked_sparse_vectors(
    tiny_encoder: M3Encoder, calls: list[int]
) -> None:
    nodes = _nodes(tiny_encoder)
    calls.clear()
    embed = M3Embedding.from_encoder(tiny_encoder)
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("late", client=client, sparse_model=embed)
    index = _index(store, nodes, embed)
    assert calls == [], "late-chunked nodes are stored without encoding anything"

    stored = _stored_sparse(client, "late")
    assert sorted(stored) == sorted(n.node_id for n in nodes)
    for node in nodes:
        carried = node_vectors(node).sparse[0]
        indices, values = stored[node.node_id]
        assert indices == carried.indices.tolist()
        np.testing.assert_array_equal(np.asarray(values, np.float32), carried.values)

    # hybrid retrieval works on them (the query is encoded, once per head function)
    hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2).retrieve(
        "honeybees number 7"
    )
    assert hits and hits[0].node.metadata["topic"] == "honeybees"


def test_plain_store_would_reencode_them(tiny_encoder: M3Encoder, calls: list[int]) -> None:
    """Why the subclass exists: the plain store re-encodes each chunk's text alone."""
    nodes = _nodes(tiny_encoder)
    calls.clear()
    embed = M3Embedding.from_encoder(tiny_encoder)
    doc_fn, query_fn = m3_sparse_fns(embed)
    client = QdrantClient(":memory:")
    store = QdrantVectorStore(
        client=client,
        collection_name="plain",
        enable_hybrid=True,
        sparse_doc_fn=doc_fn,
        sparse_query_fn=query_fn,
    )
    _index(store, nodes, embed)
    assert sum(calls) == len(nodes)
    stored = _stored_sparse(client, "plain")
    differ = [
        n.node_id
        for n in nodes
        if stored[n.node_id][0] != node_vectors(n).sparse[0].indices.tolist()
        or not np.allclose(stored[n.node_id][1], node_vectors(n).sparse[0].values)
    ]
    assert differ, "context-free sparse vectors replace the late-chunked ones"


def test_nodes_rebuilt_from_json_and_mixed_batches(
    tiny_encoder: M3Encoder, calls: list[int]
) -> None:
    """Docstore round trip (metadata only) and plain nodes in the same batch, order kept."""
    late = [TextNode.from_json(n.to_json()) for n in _nodes(tiny_encoder)]
    assert all(isinstance(n.metadata[SPARSE_METADATA_KEY], dict) for n in late)
    plain = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents(
        [Document(text="Oxygen has the atomic number 8. Iron is Fe.", doc_id="plain")]
    )
    mixed = [plain[0], *late[:3], *plain[1:], *late[3:]]
    calls.clear()
    embed = M3Embedding.from_encoder(tiny_encoder)
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("mixed", client=client, sparse_model=embed, batch_size=4)
    ids = store.add(_embedded(mixed, embed))
    assert ids == [n.node_id for n in mixed]
    # plain nodes: one forward pass (dense + sparse handed over); late ones: none
    assert sum(calls) == len(plain)
    stored = _stored_sparse(client, "mixed")
    for node in late:
        sparse = node.metadata[SPARSE_METADATA_KEY]
        assert stored[node.node_id][0] == sparse["indices"]
        np.testing.assert_allclose(stored[node.node_id][1], sparse["values"], rtol=1e-7)
    for node in plain:
        alone = tiny_encoder.encode([node.get_content()], heads="sparse").sparse[0]
        assert stored[node.node_id][0] == alone.indices.tolist()


def _embedded(nodes: list[BaseNode], embed: M3Embedding) -> list[BaseNode]:
    todo = [n for n in nodes if n.embedding is None]
    vectors = embed.get_text_embedding_batch([n.get_content(metadata_mode="embed") for n in todo])  # type: ignore[arg-type]
    for node, vector in zip(todo, vectors, strict=True):
        node.embedding = vector
    return nodes


def test_late_node_without_sparse_and_own_arguments(tiny_encoder: M3Encoder) -> None:
    node = _nodes(tiny_encoder)[0]
    del node.metadata[SPARSE_METADATA_KEY]
    rebuilt = TextNode.from_json(node.to_json())
    assert isinstance(rebuilt.metadata[LATE_METADATA_KEY], dict)
    store = M3QdrantVectorStore("x", client=QdrantClient(":memory:"), sparse_model=tiny_encoder)
    with pytest.raises(
        ValueError, match=f"node {rebuilt.node_id} is late-chunked without a sparse"
    ):
        store.add([rebuilt])
    with pytest.raises(TypeError, match="sets \\['enable_hybrid', 'sparse_doc_fn'\\] itself"):
        M3QdrantVectorStore(
            "y",
            client=QdrantClient(":memory:"),
            sparse_model=tiny_encoder,
            enable_hybrid=False,
            sparse_doc_fn=lambda texts: ([], []),
        )


def test_store_refuses_nodes_of_another_model(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder
) -> None:
    foreign = _nodes(other_tiny_encoder)
    store = M3QdrantVectorStore("x", client=QdrantClient(":memory:"), sparse_model=tiny_encoder)
    for node in (foreign[0], TextNode.from_json(foreign[0].to_json())):
        with pytest.raises(
            ValueError, match=f"node {node.node_id} was late-chunked by another model"
        ):
            store.add([node])
    # the identity an m3kit before `architecture` stamped is this model's
    legacy = TextNode.from_json(_nodes(tiny_encoder)[0].to_json())
    fingerprint = encoder_fingerprint(tiny_encoder)
    assert fingerprint.legacy_identity != fingerprint.identity
    legacy.metadata[LATE_METADATA_KEY]["encoder"] = fingerprint.legacy_identity
    assert store.add([legacy]) == [legacy.node_id]


async def test_async_add_refuses_nodes_of_another_model_before_anything_is_written(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder
) -> None:
    from qdrant_client import AsyncQdrantClient

    aclient = AsyncQdrantClient(":memory:")
    store = M3QdrantVectorStore("x", aclient=aclient, sparse_model=tiny_encoder)
    foreign = _nodes(other_tiny_encoder)
    with pytest.raises(ValueError, match=f"node {foreign[0].node_id} was late-chunked by another"):
        await store.async_add([*_nodes(tiny_encoder), foreign[0]])
    assert not await aclient.collection_exists("x")  # refused before the collection was made
    own = _nodes(tiny_encoder)
    assert await store.async_add(own) == [n.node_id for n in own]


def test_store_cuts_carried_sparse_as_its_model_cuts(
    tiny_encoder: M3Encoder, tiny_m3_path: Path
) -> None:
    """``sparse_top_k`` / ``sparse_min_weight`` apply to late chunks as to the other nodes."""
    sparse = M3SparseEmbedding(
        model_name=str(tiny_m3_path), dtype="fp32", sparse_top_k=3, sparse_min_weight=0.05
    )
    nodes = _nodes(tiny_encoder)
    assert max(len(node_vectors(n).sparse[0]) for n in nodes) > 3
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("cut", client=client, sparse_model=sparse)
    store.add(nodes)
    stored = _stored_sparse(client, "cut")
    for node in nodes:
        want = tiny_encoder.sparse_vector(
            node_vectors(node).sparse[0].indices,
            node_vectors(node).sparse[0].values,
            top_k=3,
            min_weight=0.05,
        )
        assert 0 < len(stored[node.node_id][0]) <= 3
        assert stored[node.node_id][0] == want.indices.tolist()
        np.testing.assert_array_equal(np.asarray(stored[node.node_id][1], np.float32), want.values)


def test_misspelt_store_argument_is_refused(tiny_encoder: M3Encoder) -> None:
    """``QdrantVectorStore.__init__`` swallows unknown keywords (``**kwargs``, unused): a
    misspelt ``dense_vector_nam="dense"`` left the store on ``text-dense``, silently."""
    client = QdrantClient(":memory:")
    with pytest.raises(TypeError, match=r"unexpected arguments \['dense_vector_nam'\]"):
        M3QdrantVectorStore("x", client=client, sparse_model=tiny_encoder, dense_vector_nam="dense")
    store = M3QdrantVectorStore(
        "x", client=client, sparse_model=tiny_encoder, dense_vector_name="dense", batch_size=8
    )
    assert (store.dense_vector_name, store.batch_size) == ("dense", 8)


def test_a_live_node_that_lost_its_marker_is_still_checked(
    tiny_encoder: M3Encoder, calls: list[int]
) -> None:
    """A node the parser made in this process whose metadata was replaced (its marker gone)
    still holds its late-chunked vectors: edited, it is refused as ``M3VectorStore`` and
    ``M3Embedding`` refuse it (it was stored with the late dense vector of its old text);
    unchanged, it keeps its late sparse vector instead of being encoded alone."""
    from llamaindex_m3.node_parser import EditedNodeError

    edited, kept = _nodes(tiny_encoder)[:2]
    for node in (edited, kept):
        node.metadata = {"topic": node.metadata["topic"]}  # a transform keeping only its keys
    edited.text = "A text about something else entirely."
    embed = M3Embedding.from_encoder(tiny_encoder)
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("lost", client=client, sparse_model=embed)
    with pytest.raises(EditedNodeError, match=f"node {edited.node_id} .* text was changed"):
        store.add([edited])
    assert not client.collection_exists("lost")
    calls.clear()
    assert store.add([kept]) == [kept.node_id]
    assert calls == []  # its late sparse vector, not its text encoded alone
    late = node_vectors(kept).sparse[0]
    stored = _stored_sparse(client, "lost")[kept.node_id]
    assert stored[0] == late.indices.tolist()
    np.testing.assert_allclose(stored[1], late.values, rtol=1e-6)


def test_a_live_node_of_another_model_that_lost_its_marker_is_refused(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """The marker is where a node records which model made its vectors: a node made in this
    process by another model, whose metadata a transform replaced, passed as one "parsed
    before m3kit stamped nodes" and was stored with that model's vectors."""
    from m3kit.store import M3Index

    node = _nodes(other_tiny_encoder)[0]
    node.metadata = {"topic": node.metadata["topic"]}  # a transform keeping only its keys
    store = M3QdrantVectorStore("x", client=QdrantClient(":memory:"), sparse_model=tiny_encoder)
    with pytest.raises(ValueError, match=f"node {node.node_id} was late-chunked by another"):
        store.add([node])
    with M3Index.open(tiny_encoder, tmp_path) as index:
        with pytest.raises(ValueError, match=f"node {node.node_id} was late-chunked by another"):
            M3VectorStore(index=index).add([node])
        assert index.count() == 0


def test_from_dict_of_its_own_to_dict_rebuilds_the_store(tiny_encoder: M3Encoder) -> None:
    """``to_dict()`` holds ``enable_hybrid``, ``fastembed_sparse_model`` and the fixed fields
    (``stores_text`` ...): ``from_dict`` / ``from_json`` of it were refused ("sets
    ['enable_hybrid', ...] itself ... use llama_index's QdrantVectorStore") where the stock
    store rebuilds. The values this class sets are accepted; others still are not."""
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore(
        "x", client=client, sparse_model=tiny_encoder, dense_vector_name="dense", batch_size=8
    )
    for rebuilt in (
        M3QdrantVectorStore.from_dict(store.to_dict(), client=client, sparse_model=tiny_encoder),
        M3QdrantVectorStore.from_json(store.to_json(), client=client, sparse_model=tiny_encoder),
    ):
        assert rebuilt.to_dict() == store.to_dict()
        assert (rebuilt.dense_vector_name, rebuilt.batch_size) == ("dense", 8)
    for changed in ({"enable_hybrid": False}, {"fastembed_sparse_model": "Qdrant/bm25"}):
        with pytest.raises(TypeError, match=f"sets \\['{next(iter(changed))}'\\] itself"):
            M3QdrantVectorStore("y", client=client, sparse_model=tiny_encoder, **changed)
    with pytest.raises(TypeError, match=r"unexpected arguments \['stores_text'\]"):
        M3QdrantVectorStore("y", client=client, sparse_model=tiny_encoder, stores_text=False)
