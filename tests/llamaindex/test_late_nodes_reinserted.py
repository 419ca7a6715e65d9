"""A late-chunked node inserted again without its late embedding is refused, not re-embedded.

LlamaIndex keeps nodes without their embeddings in its docstore and in
``QdrantVectorStore``'s query results; ``VectorStoreIndex.insert_nodes`` embeds such a node's
text alone. For a late-chunked node, ``M3QdrantVectorStore`` stored that text-alone dense
vector beside the sparse vector the node carries (its document's context), silently. Such an
embedding (one an ``M3Embedding`` made from a text alone) is now refused, naming the node and
the way out (``get_nodes``, which returns the stored vectors). On a real ``QdrantVectorStore``
over qdrant-client ``:memory:``.
"""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery
from qdrant_client import QdrantClient

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3QdrantVectorStore
from m3kit import M3Encoder
from tests.llamaindex.test_late_sparse_qdrant import LONG


def _dense(client: QdrantClient) -> dict[str, np.ndarray]:
    points, _ = client.scroll("late", limit=1000, with_vectors=True)
    return {str(p.id): np.asarray(p.vector["text-dense"]) for p in points}  # type: ignore[index]


def _indexed(
    encoder: M3Encoder,
    docs: list[Document] = LONG,
    dense_pooling: str | None = None,
    **index_kwargs: bool,
) -> tuple[VectorStoreIndex, QdrantClient, M3Embedding]:
    embed = M3Embedding.from_encoder(encoder)
    parser = M3LateChunkingNodeParser.from_encoder(
        encoder, chunk_size=48, dense_pooling=dense_pooling
    )
    nodes = parser.get_nodes_from_documents(docs)
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("late", client=client, sparse_model=embed)
    index = VectorStoreIndex(
        nodes,
        embed_model=embed,
        storage_context=StorageContext.from_defaults(vector_store=store),
        **index_kwargs,
    )
    return index, client, embed


def test_a_queried_late_node_inserted_again_is_refused(tiny_encoder: M3Encoder) -> None:
    index, client, _ = _indexed(tiny_encoder)
    before = _dense(client)
    node = index.as_retriever(similarity_top_k=2).retrieve("volcanoes number 3")[0].node
    assert node.embedding is None  # QdrantVectorStore's queries return no vectors
    node.metadata["reviewed"] = True
    with pytest.raises(ValueError, match=f"node {node.node_id} .*text alone.*get_nodes"):
        index.insert_nodes([node])
    after = _dense(client)
    assert set(after) == set(before)
    np.testing.assert_array_equal(after[node.node_id], before[node.node_id])


def test_a_docstore_copy_inserted_again_is_refused(tiny_encoder: M3Encoder) -> None:
    index, client, _ = _indexed(tiny_encoder, store_nodes_override=True)
    before = _dense(client)
    node_id = next(iter(before))
    node = index.docstore.get_node(node_id)
    assert node.embedding is None  # LlamaIndex stores nodes without their embeddings
    node.metadata["reviewed"] = True
    with pytest.raises(ValueError, match="text alone"):
        index.insert_nodes([node])
    np.testing.assert_array_equal(_dense(client)[node_id], before[node_id])


def test_a_docstore_copy_whose_dense_vector_is_its_chunks_alone_is_taken(
    tiny_encoder: M3Encoder,
) -> None:
    """With dense pooled naive (late heads sparse + ColBERT), the dense vector is the chunk's
    own: embedding its text again is right, and the node is stored (the review caught the
    refusal refusing it)."""
    index, client, _ = _indexed(tiny_encoder, dense_pooling="naive", store_nodes_override=True)
    node_id = next(iter(_dense(client)))
    node = index.docstore.get_node(node_id)
    node.metadata["reviewed"] = True
    index.insert_nodes([node])
    stored = client.retrieve("late", [node_id])[0].payload
    assert stored is not None and '"reviewed": true' in stored["_node_content"]


def test_a_node_from_get_nodes_is_written_again_with_its_stored_vectors(
    tiny_encoder: M3Encoder,
) -> None:
    index, client, embed = _indexed(tiny_encoder)
    before = _dense(client)
    node_id = next(iter(before))
    store = index.vector_store
    (node,) = store.get_nodes(node_ids=[node_id])
    alone = np.asarray(embed.get_text_embedding(node.get_content()))
    assert not np.allclose(alone, before[node_id], atol=1e-3), "late != text alone here"
    node.metadata["reviewed"] = True
    index.insert_nodes([node])
    np.testing.assert_allclose(_dense(client)[node_id], before[node_id], atol=1e-6)
    query = VectorStoreQuery(query_embedding=before[node_id].tolist(), similarity_top_k=1)
    (hit,) = store.query(query).nodes  # type: ignore[misc]
    assert hit.node_id == node_id and hit.metadata["reviewed"] is True


def test_a_one_chunk_document_whose_text_was_embedded_before_is_stored(
    tiny_encoder: M3Encoder,
) -> None:
    """A late vector is never a text-alone one, even where the chunk is the whole document."""
    doc = Document(text="Honeybees dance to show where the flowers are.", doc_id="short")
    embed = M3Embedding.from_encoder(tiny_encoder)
    embed.get_text_embedding(doc.text)  # remembered as made from the text alone
    _, client, _ = _indexed(tiny_encoder, [doc])
    assert len(_dense(client)) == 1


def test_a_vector_the_parser_made_late_is_not_taken_for_a_text_alone_one(
    tiny_encoder: M3Encoder,
) -> None:
    """A mean-pooled model's one-chunk document: its late vector can be its text's, bit for
    bit; that node is not refused."""
    from llamaindex_m3.embedding_origins import embedded_alone, remember, remember_late
    from m3kit.fingerprint import encoder_fingerprint

    alone, both = [0.25, -0.5, 0.75, 0.125], [0.5, 0.5, -0.25, 0.625]
    remember([alone, both], encoder_fingerprint(tiny_encoder))
    remember_late(both)
    assert embedded_alone(alone) and not embedded_alone(both)
    assert not embedded_alone([0.1, 0.2, 0.3, 0.4])  # made by nothing here
