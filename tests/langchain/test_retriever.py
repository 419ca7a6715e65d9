"""M3Retriever: LangChain's standard retriever suite, hybrid ranking, filters, k, writing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests
from qdrant_client import models

from langchain_m3 import M3Embeddings, M3Retriever
from m3kit import M3Encoder
from m3kit.store import Backend, Fusion, M3Index
from m3kit.testing import SAMPLE_TEXTS

TOPICS = ("geo", "chem", "math", "misc")
DOCS = [
    Document(text, metadata={"topic": TOPICS[i % 4], "n": i}) for i, text in enumerate(SAMPLE_TEXTS)
]
#: (backend, location) pairs: the embedded engine in a folder, qdrant-client in memory / folder.
BACKENDS = {"edge": (Backend.EDGE, True), "client": (Backend.CLIENT, False)}


@pytest.fixture(scope="module")
def tiny_index(tiny_encoder: M3Encoder) -> Iterator[M3Index]:
    index = M3Index.open(tiny_encoder, ":memory:", collection="standard")
    index.add_texts([d.page_content for d in DOCS], [d.metadata for d in DOCS])
    yield index
    index.close()


@pytest.fixture(params=list(BACKENDS))
def retriever(
    request: pytest.FixtureRequest, tiny_encoder: M3Encoder, tmp_path: Path
) -> Iterator[M3Retriever]:
    kind, on_disk = BACKENDS[request.param]
    r = M3Retriever.from_documents(
        DOCS, tiny_encoder, location=tmp_path / "db" if on_disk else None, backend=kind
    )
    yield r
    r.index.close()


class TestM3RetrieverStandard(RetrieversIntegrationTests):
    _index: M3Index

    @pytest.fixture(autouse=True)
    def _shared_index(self, tiny_index: M3Index) -> None:
        self._index = tiny_index

    @property
    def retriever_constructor(self) -> type[M3Retriever]:
        return M3Retriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self._index, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "the capital of Germany"


@pytest.mark.parametrize("fusion", list(Fusion))
def test_source_document_first(retriever: M3Retriever, fusion: Fusion) -> None:
    for doc in DOCS[::2]:  # every other document: queries are what this test costs
        got = retriever.invoke(doc.page_content, fusion=fusion, k=3)
        assert got[0].page_content == doc.page_content, (fusion, doc.page_content)
        assert got[0].metadata["topic"] == doc.metadata["topic"]
        assert got[0].metadata["chunk_index"] == 0
        assert got[0].metadata["score"] >= got[1].metadata["score"] >= got[2].metadata["score"]
        assert len({(d.id, d.metadata["chunk_index"]) for d in got}) == 3


@pytest.mark.parametrize(
    ("flt", "allowed"),
    [
        ({"topic": "chem"}, {"chem"}),
        ({"topic": ["geo", "math"]}, {"geo", "math"}),
        (
            models.Filter(
                must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=4, lte=7))]
            ),
            set(TOPICS),
        ),
    ],
)
def test_filters_restrict_results(
    retriever: M3Retriever, flt: dict[str, Any] | models.Filter, allowed: set[str]
) -> None:
    matching = [
        d
        for d in DOCS
        if d.metadata["topic"] in allowed
        and (not isinstance(flt, models.Filter) or 4 <= d.metadata["n"] <= 7)
    ]
    got = retriever.invoke(DOCS[5].page_content, k=len(DOCS), filter=flt)
    assert sorted(d.page_content for d in got) == sorted(d.page_content for d in matching)
    # the same filter set at construction
    fixed = M3Retriever(index=retriever.index, k=len(DOCS), filter=flt)
    assert sorted(d.page_content for d in fixed.invoke("x")) == sorted(
        d.page_content for d in matching
    )


def test_k_at_construction_and_invoke(retriever: M3Retriever) -> None:
    assert len(retriever.invoke("Berlin")) == 4  # default k
    assert len(M3Retriever(index=retriever.index, k=7).invoke("Berlin")) == 7
    assert len(retriever.invoke("Berlin", k=2)) == 2
    assert len(retriever.invoke("Berlin", k=100)) == len(DOCS)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke("Berlin", k=0)
    with pytest.raises(ValueError):
        M3Retriever(index=retriever.index, k=0)


@pytest.mark.parametrize("bad", [True, 2.0, "3"])
def test_k_that_is_not_an_int_is_refused_at_construction(
    retriever: M3Retriever, bad: object
) -> None:
    # invoke(k=True) was refused while M3Retriever(k=True) searched for one hit, silently
    with pytest.raises(ValueError, match=f"k must be a positive integer, got {bad!r}"):
        retriever.invoke("Berlin", k=bad)
    with pytest.raises(ValueError, match=f"k must be a positive integer, got {bad!r}"):
        M3Retriever(index=retriever.index, k=bad)
    with pytest.raises(ValueError, match=f"k must be a positive integer, got {bad!r}"):
        M3Retriever.from_documents([], retriever.index.encoder, k=bad)


async def test_async_with_overrides(retriever: M3Retriever) -> None:
    got = await retriever.ainvoke(
        DOCS[2].page_content, k=2, fusion="dbsf", filter={"topic": "math"}
    )
    assert len(got) == 2 and got[0].page_content == DOCS[2].page_content
    assert all(d.metadata["topic"] == "math" for d in got)


async def test_async_text_writes_equal_the_sync_ones(tiny_encoder: M3Encoder) -> None:
    """``add_texts`` and ``delete`` had no async twin (``aadd_documents`` had one)."""
    texts = [d.page_content for d in DOCS]
    metas = [d.metadata for d in DOCS]
    sync = M3Retriever(index=M3Index.open(tiny_encoder, ":memory:"))
    r = M3Retriever(index=M3Index.open(tiny_encoder, ":memory:"))
    assert await r.aadd_texts(texts, metas) == sync.add_texts(texts, metas)
    ids = await r.aadd_texts(texts[:1], ids=["mine"])
    await r.adelete([*ids, "doc-absent"])
    assert r.index.count() == sync.index.count() == len(DOCS)
    sync.index.close()
    r.index.close()


def test_score_threshold(retriever: M3Retriever) -> None:
    everything = retriever.invoke(DOCS[0].page_content, k=len(DOCS), fusion="m3")
    cut = everything[2].metadata["score"]
    kept = retriever.invoke(DOCS[0].page_content, k=len(DOCS), fusion="m3", score_threshold=cut)
    assert [d.page_content for d in kept] == [d.page_content for d in everything[:3]]


def test_ids_readd_and_delete(tiny_encoder: M3Encoder) -> None:
    r = M3Retriever(index=M3Index.open(tiny_encoder, ":memory:"), k=10)
    docs = [
        Document(d.page_content, id=f"doc-{i}", metadata=d.metadata) for i, d in enumerate(DOCS)
    ]
    assert r.add_documents(docs) == [f"doc-{i}" for i in range(len(DOCS))]
    assert r.add_documents(docs) == [f"doc-{i}" for i in range(len(DOCS))]
    assert r.index.count() == len(DOCS), "re-adding the same documents stores nothing new"
    r.add_documents(
        [Document("Completely new text about Saturn.", metadata={"topic": "x"})], ids=["doc-0"]
    )
    assert r.index.count() == len(DOCS), "same id: the old version is replaced"
    top = r.invoke("Completely new text about Saturn.", k=1)[0]
    assert (top.metadata["doc_id"], top.metadata["topic"]) == ("doc-0", "x")
    with pytest.raises(TypeError, match="not a single string"):
        r.delete("doc-0")  # type: ignore[arg-type]
    r.delete(["doc-0", "doc-1"])
    assert r.index.count() == len(DOCS) - 2
    # a returned Document's id is its document's id: deleting what a search found works
    found = r.invoke(DOCS[4].page_content, k=2)
    assert [d.id for d in found] == [d.metadata["doc_id"] for d in found]
    r.delete([d.id for d in found if d.id is not None])
    assert r.index.count() == len(DOCS) - 4
    assert not {d.id for d in found} & {d.id for d in r.invoke(DOCS[4].page_content, k=10)}
    with pytest.raises(ValueError, match="some documents have an id"):
        r.add_documents([Document("a", id="x"), Document("b")])
    ids = r.add_texts(["plain text one", "plain text two"], [{"topic": "t"}, {"topic": "t"}])
    assert len(set(ids)) == 2 and r.index.count() == len(DOCS) - 2
    r.index.close()


def test_from_texts_with_embeddings_object(tiny_encoder: M3Encoder) -> None:
    r = M3Retriever.from_texts(
        ["alpha beta", "gamma delta"],
        M3Embeddings.from_encoder(tiny_encoder),
        [{"i": 0}, {"i": 1}],
        k=1,
        fusion="m3",
    )
    assert r.index.encoder is tiny_encoder
    assert r.invoke("gamma delta")[0].metadata["i"] == 1
    r.index.close()


def test_minilm_dense_only(minilm_encoder: M3Encoder) -> None:
    texts = [d.page_content for d in DOCS if d.page_content.isascii()]
    r = M3Retriever.from_texts(texts, minilm_encoder, k=1)
    assert r.invoke("Which city is the German capital?")[0].page_content == texts[4]
    assert r.invoke("Who invented things with electricity?")[0].page_content.startswith("Nikola")
    r.index.close()


def test_late_chunking(tiny_encoder: M3Encoder) -> None:
    from m3kit.late_chunking import LateChunker

    long_doc = Document(" ".join(SAMPLE_TEXTS[:11]), id="long", metadata={"kind": "long"})
    short_doc = Document("A short note about tea.", id="short", metadata={"kind": "short"})
    r = M3Retriever(index=M3Index.open(tiny_encoder, ":memory:"), k=3)
    chunker = LateChunker(tiny_encoder, chunk_size=24)
    expected = chunker.chunk([long_doc.page_content])[0]
    assert len(expected) > 2, "the long document must really be split"

    assert r.add_documents([long_doc, short_doc], late_chunking=chunker) == ["long", "short"]
    assert r.index.count() == len(expected) + 1
    r.add_documents([long_doc, short_doc], late_chunking=chunker)
    assert r.index.count() == len(expected) + 1, "re-adding adds nothing"

    target = expected[2]
    top = r.invoke(target.text, fusion="m3")[0]
    assert top.page_content == target.text
    assert top.metadata["doc_id"] == "long"
    assert top.metadata["chunk_index"] == target.index == 2
    assert top.metadata["kind"] == "long"
    assert long_doc.page_content[target.start : target.end] == target.text

    # late_chunking=True: a LateChunker with its defaults (bigger chunks)
    default_chunks = LateChunker(tiny_encoder).chunk([long_doc.page_content])[0]
    assert len(default_chunks) < len(expected)
    r.add_documents([long_doc], late_chunking=True)
    assert r.index.count() == len(default_chunks) + 1, "new chunking replaced the old chunks"
    r.index.close()


def test_re_adding_returned_documents_stores_them_unchanged(tiny_encoder: M3Encoder) -> None:
    """A document ``invoke`` returned, added back, is the stored document: nothing is written.

    The keys the retriever adds to what it returns (``score``, ``doc_id``, ``chunk_index``)
    used to be stored as the document's own metadata: the document was encoded again and
    ``M3VectorStore`` (which returns metadata as stored) showed a stale ``score``.
    """
    from langchain_m3 import M3VectorStore

    original = Document("Berlin is the capital.", id="b", metadata={"t": "geo"})
    r = M3Retriever.from_documents([original], tiny_encoder)
    try:
        hits = r.invoke("capital")
        assert set(hits[0].metadata) == {"t", "score", "doc_id", "chunk_index"}
        written: list[Any] = []
        upsert = r.index.store.upsert

        def spy(records, *args, **kwargs):  # type: ignore[no-untyped-def]
            records = list(records)
            written.extend(records)
            return upsert(records, *args, **kwargs)

        r.index.store.upsert = spy  # type: ignore[method-assign]
        assert r.add_documents(hits) == ["b"]
        assert written == []
        assert M3VectorStore(r.index).get_by_ids(["b"])[0].metadata == {"t": "geo"}
        # a document of the user's own with such keys (not what invoke shows for it) keeps them
        own = Document("Oxygen is O.", id="o", metadata={"score": 5.0, "doc_id": "x"})
        r.add_documents([own])
        assert M3VectorStore(r.index).get_by_ids(["o"])[0].metadata == own.metadata
    finally:
        r.index.close()
