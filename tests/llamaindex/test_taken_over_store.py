"""The LlamaIndex vector store refuses to write or search once its index lost the store.

``M3VectorStore`` encodes nodes and queries with its index's encoder and writes and searches
through the shared ``M3Store``, whose check is that of the index opened on it last. An index
opened on the same store with another encoder (``reindex=True``) used to leave the vector
store writing its nodes under the other encoder's identity and ranking the other encoder's
vectors with its own queries.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

from llamaindex_m3 import M3VectorStore
from m3kit import FingerprintMismatchError, M3Encoder
from m3kit.store import M3Index
from tests.store.conftest import open_shared_store


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_vector_store_whose_index_was_taken_over_refuses_writes_and_queries(
    tiny_m3_path: Path, other_tiny_encoder: M3Encoder, backend: str
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with open_shared_store(enc, backend) as store:
        index = M3Index(enc, store)
        vectors = M3VectorStore.from_index(index)
        vectors.add([TextNode(text="the first document.", id_="n1")])
        query = VectorStoreQuery(query_str="the first document.", similarity_top_k=1)
        assert vectors.query(query).ids == ["n1"]

        M3Index(other_tiny_encoder, store, reindex=True)
        with pytest.raises(FingerprintMismatchError, match="open a new index"):
            vectors.query(query)
        with pytest.raises(FingerprintMismatchError, match="open a new index"):
            vectors.add([TextNode(text="the second document.", id_="n2")])
        assert store.count() == 1
