"""langchain-tests' VectorStoreIntegrationTests for M3VectorStore, sync and async, on both engines
(qdrant-client local mode in memory and in a folder).

The suite's own ``get_embeddings()`` (a ``DeterministicFakeEmbedding(size=6)``) is not used:
M3VectorStore encodes with an M3 model, so the store is built on the tiny M3 checkpoint
(dense + sparse + ColBERT). The suite's ordering assertions hold with it: each query is the
exact text of the document expected first, whose ColBERT MaxSim (the final score) is then the
highest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder


class TestM3VectorStoreEdge(VectorStoreIntegrationTests):
    """Embedded engine (qdrant-edge), in a temporary folder."""

    backend = "edge"
    parent_id_key: str | None = None

    @pytest.fixture
    def vectorstore(self, tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:  # type: ignore[override]
        store = M3VectorStore.open(tiny_encoder, backend=self.backend)
        store.parent_id_key = self.parent_id_key
        try:
            yield store
        finally:
            store.close()


class TestM3VectorStoreClient(TestM3VectorStoreEdge):
    """qdrant-client's local mode, ``:memory:``."""

    backend = "client"

    @pytest.fixture
    def vectorstore(self, tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:  # type: ignore[override]
        store = M3VectorStore.open(tiny_encoder, ":memory:", backend=self.backend)
        try:
            yield store
        finally:
            store.close()


class TestM3VectorStoreClientFolder(TestM3VectorStoreEdge):
    """qdrant-client's local mode persisted in a folder (its on-disk storage)."""

    backend = "client"

    @pytest.fixture
    def vectorstore(  # type: ignore[override]
        self, tiny_encoder: M3Encoder, tmp_path: Path
    ) -> Iterator[M3VectorStore]:
        store = M3VectorStore.open(tiny_encoder, tmp_path / "qdrant", backend=self.backend)
        try:
            yield store
        finally:
            store.close()


class TestM3VectorStoreParentIdKey(TestM3VectorStoreEdge):
    """Embedded engine with ``parent_id_key`` set: documents without that key are written as
    before (test_parent_children.py: the children of a parent)."""

    parent_id_key = "doc_id"
