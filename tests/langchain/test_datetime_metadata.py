"""Dates, times and UUIDs in metadata are stored as langchain-qdrant stores them (the strings
qdrant-client writes), not refused as "not JSON": LangChain's
``TimeWeightedVectorStoreRetriever`` stamps every document it adds with datetimes."""

from __future__ import annotations

import datetime
import uuid

import pytest
from langchain_classic.retrievers import TimeWeightedVectorStoreRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.documents import content_doc_id

_UTC = datetime.timezone.utc
_META = {
    "created_at": datetime.datetime(2026, 12, 5, 9, 30, 0, 123, tzinfo=_UTC),
    "local": datetime.datetime(2026, 12, 5, 9, 30),
    "day": datetime.date(2026, 12, 5),
    "at": {"time": datetime.time(8, 15)},
    "runs": [uuid.UUID(int=7), "plain"],
    "n": 3,
}


def _as_langchain_qdrant_stores(metadata: dict[str, object]) -> dict[str, object]:
    store = QdrantVectorStore.construct_instance(
        DeterministicFakeEmbedding(size=8), client_options={"location": ":memory:"}
    )
    (doc_id,) = store.add_documents([Document("x", metadata=metadata)])
    (doc,) = store.get_by_ids([doc_id])
    # the point's id and collection, which langchain-qdrant shows with the metadata
    return {k: v for k, v in doc.metadata.items() if k not in ("_id", "_collection_name")}


def test_metadata_dates_times_and_uuids_read_back_as_langchain_qdrant_reads_them(
    tiny_encoder: M3Encoder,
) -> None:
    native = _as_langchain_qdrant_stores(_META)
    assert native["created_at"] == "2026-12-05T09:30:00.000123Z"  # what the reference writes
    with M3VectorStore.open(tiny_encoder) as store:
        (doc_id,) = store.add_documents([Document("Stamped text.", metadata=_META)])
        (doc,) = store.get_by_ids([doc_id])
        assert doc.metadata == native
        # the same document again: the same content id, nothing duplicated
        assert store.add_documents([Document("Stamped text.", metadata=_META)]) == [doc_id]
        assert store.index.store.count() == 1
        # a filter on the stored string finds it
        assert store.similarity_search("text", k=1, filter={"day": "2026-12-05"})


def test_the_core_index_stores_them_the_same_way(tiny_encoder: M3Encoder) -> None:
    with M3Index.open(tiny_encoder) as index:
        (doc_id,) = index.add_texts(["Stamped text."], metadatas=[_META])
        (hit,) = index.search("text", k=1)
        assert hit.doc_id == doc_id
        assert hit.metadata["created_at"] == "2026-12-05T09:30:00.000123Z"
        assert hit.metadata["runs"] == ["00000000-0000-0000-0000-000000000007", "plain"]
        # Qdrant reads the stored strings as datetimes: a datetime range finds the text
        for bound, found in (("2026-12-05T09:00:00Z", 1), ("2026-12-05T10:00:00Z", 0)):
            when = models.FieldCondition(
                key="metadata.created_at", range=models.DatetimeRange(gt=bound)
            )
            assert len(index.search("text", k=1, filter=models.Filter(must=[when]))) == found


def test_time_weighted_retriever_over_the_store(tiny_encoder: M3Encoder) -> None:
    with M3VectorStore.open(tiny_encoder) as store:
        retriever = TimeWeightedVectorStoreRetriever(vectorstore=store, decay_rate=0.01, k=2)
        retriever.add_documents(
            [Document("Bread is baked in an oven."), Document("Rivers flow to the sea.")]
        )
        docs = retriever.invoke("Where do rivers go?")
        assert {d.page_content for d in docs} == {
            "Bread is baked in an oven.",
            "Rivers flow to the sea.",
        }
        # the memory stream's documents, with the datetimes the retriever keeps there
        assert all(isinstance(d.metadata["last_accessed_at"], datetime.datetime) for d in docs)


def test_ids_filters_and_parent_ids_read_them_as_stored(tiny_encoder: M3Encoder) -> None:
    """The id rule, a dict filter and a UUID parent id see a date or UUID as the string it is
    stored as (they refused it, or a filter on the value was an error)."""
    with M3Index.open(tiny_encoder) as index:
        (doc_id,) = index.add_texts(["Stamped text."], metadatas=[_META])
        assert content_doc_id("Stamped text.", _META) == doc_id
        for value in (_META["created_at"], [_META["day"], "x"], uuid.UUID(int=7)):
            key = "runs" if isinstance(value, uuid.UUID) else "created_at"
            if isinstance(value, list):
                key = "day"
            assert [h.doc_id for h in index.search("text", k=1, filter={key: value})] == [doc_id]
    parent = uuid.UUID(int=42)
    with M3VectorStore.open(tiny_encoder) as store:
        store.add_texts(["one", "two"], [{"parent": parent}] * 2, parent_id_key="parent")
        store.add_texts(["three"], [{"parent": parent}], parent_id_key="parent")
        # the parent's old children replaced: matched by the stored string
        assert [d.page_content for d in store.similarity_search("t", k=5)] == ["three"]
        assert store.similarity_search("t", k=5)[0].metadata["parent"] == str(parent)


def test_langchain_documents_name_the_missing_date(tiny_encoder: M3Encoder) -> None:
    pd = pytest.importorskip("pandas")
    store = M3VectorStore.open(tiny_encoder)
    docs = [Document("alpha"), Document("beta", metadata={"published": pd.NaT})]
    with pytest.raises(ValueError, match=r"metadata of documents\[1\]: 'published': a missing"):
        store.add_documents(docs)
    assert store.index.count() == 0
