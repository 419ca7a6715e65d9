"""``M3VectorStore.as_retriever``: arguments LangChain's ``VectorStoreRetriever`` has no field
for are refused (it ignored them: ``as_retriever(k=1, filter=...)`` searched 4 unfiltered
hits), and ``search_kwargs``' weights are held as the retriever's own (left out when a call's
fusion is a rank fusion, as ``M3Retriever``'s are; they were the call's own: an error)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has atomic number 8.",
    "Paris is the capital of France.",
    "Water is made of hydrogen and oxygen.",
]
WEIGHTS = (0.2, 0.5, 0.3)


@pytest.fixture(scope="module")
def index(tiny_encoder: M3Encoder) -> Iterator[M3Index]:
    idx = M3Index.open(tiny_encoder, ":memory:", collection="as_retriever_args")
    idx.add_texts(TEXTS, [{"topic": "geo" if i % 2 == 0 else "chem"} for i in range(4)])
    yield idx
    idx.close()


def test_search_arguments_outside_search_kwargs_are_refused(index: M3Index) -> None:
    store = M3VectorStore(index)
    with pytest.raises(ValueError, match=r"\['filter', 'k'\] in search_kwargs"):
        store.as_retriever(k=1, filter={"topic": "chem"})
    with pytest.raises(ValueError, match="unknown as_retriever argument"):
        store.as_retriever(fusoin="m3")
    retriever = store.as_retriever(search_kwargs={"k": 1}, tags=["mine"], name="r")
    assert len(retriever.invoke("capital")) == 1
    assert "mine" in (retriever.tags or [])


async def test_weights_in_search_kwargs_are_left_out_for_a_calls_rank_fusion(
    index: M3Index,
) -> None:
    store = M3VectorStore(index)
    held = M3Retriever(index=index, k=3, fusion="m3", weights=WEIGHTS)
    want = [d.page_content for d in held.invoke("capital", fusion="rrf")]
    retriever = store.as_retriever(search_kwargs={"k": 3, "fusion": "m3", "weights": WEIGHTS})
    assert [d.page_content for d in retriever.invoke("capital", fusion="rrf")] == want
    got = await retriever.ainvoke("capital", fusion="rrf")
    assert [d.page_content for d in got] == want
    with pytest.raises(ValueError, match="weights"):  # a call's own weights still are checked
        retriever.invoke("capital", fusion="rrf", weights=WEIGHTS)
