"""LangChain ``M3VectorStore`` takes document ids as the core does: a str, or an int as its digits.

It turned any id into its Python text itself (``ids=[1.5]`` stored ``"1.5"``,
``delete([{"a": 1}])`` deleted nothing, silently), while the core refuses such ids by name.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3VectorStore


@pytest.fixture
def store(tiny_encoder: Any) -> M3VectorStore:
    return M3VectorStore.open(tiny_encoder)


def test_int_ids_are_their_digits_everywhere(store: M3VectorStore) -> None:
    assert store.add_documents([Document("one."), Document("two.")], ids=[1, "2"]) == ["1", "2"]
    assert [d.id for d in store.get_by_ids([1])] == ["1"]
    store.delete([1])
    assert [d.id for d in store.get_by_ids(["1", "2"])] == ["2"]


@pytest.mark.parametrize("bad", [1.5, True, {"a": 1}])
def test_ids_of_other_types_are_refused_by_name(store: M3VectorStore, bad: Any) -> None:
    store.add_documents([Document("one.")], ids=["a"])
    with pytest.raises(TypeError, match=r"ids\[1\]: a document id is a str or an int"):
        store.add_documents([Document("two."), Document("three.")], ids=["b", bad])
    with pytest.raises(TypeError, match=r"ids\[1\]: a document id is a str or an int"):
        store.delete(["a", bad])
    with pytest.raises(TypeError, match=r"ids\[1\]: a document id is a str or an int"):
        store.get_by_ids(["a", bad])
    assert [d.id for d in store.get_by_ids(["a"])] == ["a"]


def test_a_doc_id_filter_takes_int_ids_as_their_digits(store: M3VectorStore) -> None:
    # an int id is stored as its digits, so {"doc_id": 7} used to match nothing, silently
    from langchain_m3 import M3Retriever

    store.add_documents([Document("one."), Document("two."), Document("three.")], ids=[7, 8, "x"])
    store.add_documents([Document("four.", metadata={"doc_id": 7})], ids=["own"])
    retriever = M3Retriever(index=store.index, k=10)
    for wanted, shown in (
        (7, {"7", "own"}),  # the store's id, or the user's own metadata key (an int there)
        ([7, 8], {"7", "8", "own"}),
        ("7", {"7"}),
    ):
        found = store.similarity_search("one.", k=10, filter={"doc_id": wanted})
        assert {d.id for d in found} == shown
        got = retriever.invoke("one.", filter={"doc_id": wanted})  # the chunk's id only
        assert {d.id for d in got} == shown - {"own"}
