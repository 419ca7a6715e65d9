"""``M3VectorStore.get_nodes`` returns each node with its stored dense vector, as upstream.

LlamaIndex's ``QdrantVectorStore.get_nodes`` scrolls with the vectors and sets each node's
``embedding`` to its stored dense vector; ``M3VectorStore`` returned ``None``, so nodes read
back to copy into another store (or to inspect) had lost their vectors. Query results carry
no embedding, as upstream's (it queries without vectors).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.schema import BaseNode, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Retriever, M3VectorStore
from m3kit import M3Encoder

TEXTS = {
    "oxygen": "Oxygen has the atomic number 8.",
    "berlin": "Berlin is the capital of Germany.",
    "amazon": "The Amazon is the largest river by discharge.",
}
BACKENDS = ("edge", "client")


def _unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def _nodes(embed: M3Embedding, *, tilt: float = 0.0) -> list[TextNode]:
    """The nodes of :data:`TEXTS`, each with its own embedding (turned ``tilt`` away from the
    model's, still the same model's by the store's check)."""
    rng = np.random.default_rng(0)
    nodes = []
    for node_id, text in TEXTS.items():
        own = np.asarray(embed.get_text_embedding(text))
        own = own + tilt * np.linalg.norm(own) * _unit(list(rng.standard_normal(own.shape)))
        nodes.append(TextNode(text=text, id_=node_id, embedding=own.tolist()))
    return nodes


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    with M3VectorStore(tiny_embedding, backend=request.param) as s:
        s.add(_nodes(tiny_embedding, tilt=0.2))
        yield s


def _embeddings(nodes: list[BaseNode]) -> dict[str, list[float]]:
    out = {}
    for node in nodes:
        assert isinstance(node.embedding, list), node.node_id
        assert all(isinstance(x, float) for x in node.embedding)
        out[node.node_id] = node.embedding
    return out


async def test_get_nodes_carry_the_stored_dense_vector(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    want = {n.node_id: _unit(n.embedding or []) for n in _nodes(tiny_embedding, tilt=0.2)}
    reads = {
        "all": store.get_nodes(),
        "by id": store.get_nodes(list(TEXTS)),
        "async all": await store.aget_nodes(),
        "async by id": await store.aget_nodes(list(TEXTS)),
    }
    for how, nodes in reads.items():
        got = _embeddings(nodes)
        assert set(got) == set(TEXTS), how
        for node_id, vector in got.items():  # the node's own (unit) vector, float32 precision
            np.testing.assert_allclose(vector, want[node_id], atol=1e-6, err_msg=how)
    # ... the vector the dense search ranks by: its score is the cosine to it
    query_vector = tiny_embedding.get_query_embedding("the capital of Germany")
    result = store.query(VectorStoreQuery(query_embedding=query_vector, similarity_top_k=3))
    stored = _embeddings(store.get_nodes())
    assert result.ids and result.similarities and len(result.ids) == 3
    for node_id, score in zip(result.ids, result.similarities, strict=True):
        assert score == pytest.approx(float(_unit(query_vector) @ stored[node_id]), abs=1e-5)
    # query results carry no embedding, as upstream's QdrantVectorStore (queried without)
    assert [n.embedding for n in result.nodes or []] == [None] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_nodes_of_encoded_text_are_the_encoders_vectors(
    backend: str, tiny_embedding: M3Embedding
) -> None:
    with M3VectorStore(tiny_embedding, backend=backend) as store:
        store.add([TextNode(text=text, id_=node_id) for node_id, text in TEXTS.items()])
        for node_id, vector in _embeddings(store.get_nodes()).items():
            want = _unit(tiny_embedding.get_text_embedding(TEXTS[node_id]))
            np.testing.assert_allclose(vector, want, atol=1e-6)


@pytest.mark.parametrize("target", BACKENDS)
async def test_copied_nodes_keep_their_dense_vector(
    store: M3VectorStore, target: str, tiny_embedding: M3Embedding
) -> None:
    """Nodes read back and added to another store keep their dense vector; the other store
    computes its sparse / ColBERT vectors from their text (same model: same scores)."""
    with M3VectorStore(tiny_embedding, backend=target, collection_name="copy") as copy:
        copy.add(await store.aget_nodes())
        original, copied = _embeddings(store.get_nodes()), _embeddings(copy.get_nodes())
        assert set(copied) == set(TEXTS)
        for node_id, vector in copied.items():
            np.testing.assert_allclose(vector, original[node_id], atol=1e-6)
        for mode in ("sparse", "hybrid"):
            query = VectorStoreQuery(
                query_str="capital of Germany",
                query_embedding=tiny_embedding.get_query_embedding("capital of Germany"),
                mode=VectorStoreQueryMode(mode),
                similarity_top_k=3,
            )
            want, got = store.query(query), copy.query(query)
            assert got.ids == want.ids, mode
            # the embedded engine stores ColBERT vectors in float16, qdrant-client in float32
            assert got.similarities == pytest.approx(want.similarities, abs=1e-3), mode
        assert copy.client.count() == 3
        copy.add(copy.get_nodes())  # read back and added again unchanged: nothing new
        assert copy.client.count() == 3


def test_read_back_edited_node_is_encoded_afresh(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """A node read back carries the stored vector of its old text; edited and added again,
    its new text is encoded (the old vector is not kept for it)."""
    (back,) = store.get_nodes(["amazon"])
    new_text = "Mount Everest is the highest mountain above sea level."
    back.set_content(new_text)
    store.add([back])
    (again,) = store.get_nodes(["amazon"])
    assert again.get_content() == new_text and store.client.count() == 3
    want = _unit(tiny_embedding.get_text_embedding(new_text))
    np.testing.assert_allclose(again.embedding or [], want, atol=1e-6)


def test_retriever_encodes_an_edited_read_back_node_afresh(tiny_embedding: M3Embedding) -> None:
    """``M3Retriever.add_nodes`` drops the stale vector of an edited node as the store does."""
    with M3Retriever.open(tiny_embedding) as retriever:
        store = M3VectorStore.from_index(retriever.index)
        store.add([TextNode(text=text, id_=node_id) for node_id, text in TEXTS.items()])
        (back,) = store.get_nodes(["amazon"])
        new_text = "Mount Everest is the highest mountain above sea level."
        back.set_content(new_text)
        retriever.add_nodes([back])
        (again,) = store.get_nodes(["amazon"])
        assert again.get_content() == new_text and store.client.count() == 3
        want = _unit(tiny_embedding.get_text_embedding(new_text))
        np.testing.assert_allclose(again.embedding or [], want, atol=1e-6)


def test_late_chunked_nodes_come_back_without_embedding_and_copy(
    tiny_encoder: M3Encoder, tiny_embedding: M3Embedding
) -> None:
    """A late-chunked node's vector was pooled in its document's context, far (by cosine)
    from its text's own: handed to another store it would be refused as another model's.
    It comes back without one, and the copy encodes its text."""
    text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(12))
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="doc")])
    with M3VectorStore(tiny_embedding) as store, M3VectorStore(tiny_embedding) as copy:
        store.add(nodes)
        back = store.get_nodes()
        assert len(back) == len(nodes) > 1 and [n.embedding for n in back] == [None] * len(back)
        copy.add(back)
        hits = copy.client.store.get(filter={"doc_id": "doc"}, dense=True)
        assert len(hits) == len(nodes)
        for hit in hits:
            want = _unit(tiny_embedding.get_text_embedding(hit.text))
            np.testing.assert_allclose(hit.dense or [], want, atol=1e-6)
