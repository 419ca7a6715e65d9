"""A LangChain store opened with another model: the error's advice works from an adapter.

``FingerprintMismatchError`` said "open it with reindex=True", which no adapter entry point
takes (``M3VectorStore.open(..., reindex=True)`` is a ``TypeError``); it now names
``M3Index.open(..., reindex=True)`` and giving that index to the adapter, which works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index


def test_the_reindex_advice_works_from_an_adapter(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    where = str(tmp_path / "db")
    with M3VectorStore.open(tiny_encoder, where) as store:
        store.add_texts(["Apples are red."], ids=["a"])
    with pytest.raises(FingerprintMismatchError) as caught:
        M3VectorStore.open(other_tiny_encoder, where)
    assert "M3Index.open(encoder, ..., reindex=True), then give that index to an adapter" in str(
        caught.value
    )
    with M3VectorStore(M3Index.open(other_tiny_encoder, where, reindex=True)) as store:
        (doc,) = store.similarity_search("red", k=1)
        assert doc.id == "a"
