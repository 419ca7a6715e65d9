"""``collection_name=``, langchain-qdrant's (and LangChain's other stores') keyword, names the
collection of ``M3VectorStore.from_texts`` / ``from_documents`` / ``open`` as ``collection=``
does (it was a ``TypeError``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder


def test_collection_name_is_the_collection(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    store = M3VectorStore.from_texts(
        ["Oxygen is a gas."], tiny_encoder, location=tmp_path, collection_name="docs"
    )
    assert store.index.store.collection == "docs"
    store.close()
    # the same collection, opened by either name; another name is another collection
    with M3VectorStore.open(tiny_encoder, tmp_path, collection="docs") as again:
        assert [d.page_content for d in again.similarity_search("oxygen", k=1)] == [
            "Oxygen is a gas."
        ]
    with M3VectorStore.open(tiny_encoder, tmp_path, collection_name="docs", collection="docs"):
        pass
    with M3VectorStore.open(tiny_encoder, tmp_path) as default:
        assert default.index.store.collection == "m3kit"
        assert default.similarity_search("oxygen", k=1) == []


def test_two_different_names_are_refused(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match="collection='a' and collection_name='b'"):
        M3VectorStore.from_texts(["x"], tiny_encoder, collection="a", collection_name="b")
