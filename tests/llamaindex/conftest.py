"""Fixtures of the LlamaIndex adapter tests: embedding objects sharing the session encoders."""

from __future__ import annotations

import pytest

from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding


@pytest.fixture(scope="session")
def tiny_embedding(tiny_encoder) -> M3Embedding:  # type: ignore[no-untyped-def]
    return M3Embedding.from_encoder(tiny_encoder)


@pytest.fixture(scope="session")
def tiny_sparse(tiny_encoder) -> M3SparseEmbedding:  # type: ignore[no-untyped-def]
    return M3SparseEmbedding.from_encoder(tiny_encoder)
