"""The LangChain vector store refuses to search once its index lost the store.

``similarity_search_by_vector`` searches through the shared ``M3Store``, whose check is that
of the index opened on it last: after an index with another encoder took the store over
(``reindex=True``), a vector of this store's model used to be compared with the other
model's vectors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_m3 import M3VectorStore
from m3kit import FingerprintMismatchError, M3Encoder
from m3kit.store import M3Index
from tests.store.conftest import open_shared_store


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_vector_store_whose_index_was_taken_over_refuses_searches(
    tiny_m3_path: Path, other_tiny_encoder: M3Encoder, backend: str
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with open_shared_store(enc, backend) as store:
        vectors = M3VectorStore(M3Index(enc, store))
        vectors.add_texts(["the first document."], ids=["x"])
        query = [float(v) for v in enc.encode(["the first document."], query=True).dense[0]]
        assert vectors.similarity_search_by_vector(query, k=1)[0].id == "x"

        M3Index(other_tiny_encoder, store, reindex=True)
        with pytest.raises(FingerprintMismatchError, match="open a new index"):
            vectors.similarity_search_by_vector(query, k=1)
        with pytest.raises(FingerprintMismatchError, match="open a new index"):
            vectors.similarity_search("the first document.", k=1)
        with pytest.raises(FingerprintMismatchError, match="open a new index"):
            vectors.add_texts(["the second document."], ids=["y"])
        assert store.count() == 1
