"""Fixtures of the LlamaIndex adapter tests: embedding objects sharing the session encoders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.schema import TextNode

from llamaindex_m3 import M3VectorStore
from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding

#: The two nodes of :func:`capitals_store`.
CAPITALS = ("Berlin is the capital of Germany.", "Paris is the capital of France.")


@pytest.fixture(scope="session")
def tiny_embedding(tiny_encoder) -> M3Embedding:  # type: ignore[no-untyped-def]
    return M3Embedding.from_encoder(tiny_encoder)


@pytest.fixture(scope="session")
def tiny_sparse(tiny_encoder) -> M3SparseEmbedding:  # type: ignore[no-untyped-def]
    return M3SparseEmbedding.from_encoder(tiny_encoder)


@pytest.fixture
def capitals_store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    """An in-memory ``M3VectorStore`` of ``tiny_embedding`` holding :data:`CAPITALS` as two
    nodes, each with its own embedding (closed after the test)."""
    nodes = [TextNode(text=text) for text in CAPITALS]
    for node in nodes:
        node.embedding = tiny_embedding.get_text_embedding(node.text)
    with M3VectorStore(tiny_embedding) as store:
        store.add(nodes)
        yield store


@pytest.fixture()
def store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    """An in-memory ``M3VectorStore`` of ``tiny_embedding``, collection "docs", empty
    (the vector store tests: test_vector_store.py, test_vector_store_nodes.py)."""
    with M3VectorStore(tiny_embedding, collection_name="docs") as s:
        yield s


@pytest.fixture()
def calls(tiny_encoder, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Sequences per forward pass of the session's tiny encoder while a test runs (``encode``
    goes through ``encode_tokenized``; late chunking through ``token_states``)."""
    seen: list[int] = []
    for name in ("encode_tokenized", "token_states"):
        real = getattr(tiny_encoder, name)

        def spy(texts: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            seen.append(len(texts))
            return _real(texts, *args, **kwargs)

        monkeypatch.setattr(tiny_encoder, name, spy)
    yield seen
    monkeypatch.undo()
