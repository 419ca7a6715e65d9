"""M3Retriever: a call's explicit ``filter=None`` / ``score_threshold=None`` switches the
retriever's default off for that call (as LangChain's ``VectorStoreRetriever`` merges a call's
kwargs over its ``search_kwargs``); a call that does not pass them keeps the default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Retriever
from m3kit import M3Encoder
from m3kit.store import M3Index

TOPICS = ("geo", "chem")
TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has atomic number 8.",
    "Paris is the capital of France.",
    "Water is made of hydrogen and oxygen.",
]


@pytest.fixture(scope="module")
def index(tiny_encoder: M3Encoder) -> Iterator[M3Index]:
    idx = M3Index.open(tiny_encoder, ":memory:", collection="call_defaults")
    idx.add_texts(TEXTS, [{"topic": TOPICS[i % 2]} for i in range(len(TEXTS))])
    yield idx
    idx.close()


def _topics(docs: list[Document]) -> set[str]:
    return {d.metadata["topic"] for d in docs}


def test_explicit_filter_none_drops_the_default_filter(index: M3Index) -> None:
    retriever = M3Retriever(index=index, k=len(TEXTS), filter={"topic": "geo"})
    assert _topics(retriever.invoke("capital")) == {"geo"}  # not passed: the default
    assert _topics(retriever.invoke("capital", filter=None)) == set(TOPICS)
    assert _topics(retriever.invoke("capital", filter={"topic": "chem"})) == {"chem"}
    assert _topics(retriever.invoke("capital")) == {"geo"}  # the default is untouched


async def test_explicit_filter_none_drops_the_default_filter_async(index: M3Index) -> None:
    retriever = M3Retriever(index=index, k=len(TEXTS), filter={"topic": "geo"})
    assert _topics(await retriever.ainvoke("capital")) == {"geo"}
    assert _topics(await retriever.ainvoke("capital", filter=None)) == set(TOPICS)


def test_explicit_score_threshold_none_drops_the_default(index: M3Index) -> None:
    retriever = M3Retriever(index=index, k=len(TEXTS), fusion="m3")
    everything = retriever.invoke(TEXTS[0])
    assert len(everything) == len(TEXTS)
    cut = everything[1].metadata["score"]
    held = M3Retriever(index=index, k=len(TEXTS), fusion="m3", score_threshold=cut)
    assert len(held.invoke(TEXTS[0])) == 2  # not passed: the default
    assert len(held.invoke(TEXTS[0], score_threshold=None)) == len(TEXTS)


async def test_explicit_score_threshold_none_drops_the_default_async(index: M3Index) -> None:
    retriever = M3Retriever(index=index, k=len(TEXTS), fusion="m3")
    cut = (await retriever.ainvoke(TEXTS[0]))[1].metadata["score"]
    held = M3Retriever(index=index, k=len(TEXTS), fusion="m3", score_threshold=cut)
    assert len(await held.ainvoke(TEXTS[0])) == 2
    assert len(await held.ainvoke(TEXTS[0], score_threshold=None)) == len(TEXTS)


def test_explicit_none_keeps_k_and_ranking_defaults(index: M3Index) -> None:
    # None is no k and, for a ranking setting, means "the index's" that the retriever's own
    # value already stands in front of: a call's None keeps the retriever's value
    retriever = M3Retriever(index=index, k=1, fusion="m3", weights=(0.0, 0.0, 1.0))
    given = retriever.invoke(TEXTS[2])
    none = retriever.invoke(
        TEXTS[2], k=None, fusion=None, weights=None, rerank=None, candidates=None
    )
    assert len(none) == 1
    assert [(d.page_content, d.metadata["score"]) for d in none] == [
        (d.page_content, d.metadata["score"]) for d in given
    ]


def test_an_empty_filter_mapping_is_refused_naming_filter_none(index: M3Index) -> None:
    retriever = M3Retriever(index=index, k=len(TEXTS), filter={"topic": "geo"})
    with pytest.raises(ValueError, match=r"empty filter mapping .* pass filter=None"):
        retriever.invoke("capital", filter={})
    with pytest.raises(ValueError, match=r"empty filter mapping .* pass filter=None"):
        M3Retriever(index=index, filter={})
