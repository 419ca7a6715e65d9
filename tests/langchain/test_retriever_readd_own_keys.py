"""A document ``M3Retriever`` returned, added back, keeps the user's own ``score`` /
``doc_id`` / ``chunk_index`` metadata that the returned ``Document`` showed over."""

from __future__ import annotations

from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder


def test_readded_result_keeps_own_keys(tiny_encoder: M3Encoder) -> None:
    own = {"score": 5, "doc_id": "P1", "chunk_index": 7, "lang": "en"}
    retriever = M3Retriever.from_documents(
        [Document("A review of the film: five stars.", id="r1", metadata=dict(own))],
        tiny_encoder,
        k=1,
    )
    store = M3VectorStore(retriever.index)
    assert store.get_by_ids(["r1"])[0].metadata == own
    (hit,) = retriever.invoke("film review")
    # shown over the user's keys (documented), but not written over them
    assert hit.metadata["doc_id"] == "r1" and hit.metadata["chunk_index"] == 0
    assert retriever.add_documents([hit, hit]) == ["r1", "r1"]  # twice in one call too
    assert store.get_by_ids(["r1"])[0].metadata == own
    # edited text, added back: the edit is stored, the user's own keys stay
    edited = hit.model_copy(update={"page_content": "A review of the film: four stars."})
    retriever.add_documents([edited])
    (stored,) = store.get_by_ids(["r1"])
    assert stored.page_content == "A review of the film: four stars."
    assert stored.metadata == own
    # a document without such keys of its own is still stored without the shown ones
    retriever.add_documents([Document("Plain text.", id="p", metadata={"lang": "de"})])
    (plain,) = retriever.invoke("Plain text.", filter={"lang": "de"})
    retriever.add_documents([plain.model_copy(update={"page_content": "Plain text, edited."})])
    assert store.get_by_ids(["p"])[0].metadata == {"lang": "de"}
    retriever.index.close()


def test_a_result_added_back_through_the_store_is_the_stored_document(
    tiny_encoder: M3Encoder,
) -> None:
    """``store.as_m3_retriever()``'s results added back with ``store.add_documents`` were
    stored with the ``score`` / ``doc_id`` / ``chunk_index`` the retriever shows, which then
    read as the user's own keys for good."""
    with M3VectorStore.open(tiny_encoder) as store:
        store.add_documents([Document("Oxygen is a gas.", id="ox", metadata={"t": "chem"})])
        (hit,) = store.as_m3_retriever(k=1).invoke("oxygen")
        assert set(hit.metadata) == {"t", "score", "doc_id", "chunk_index"}
        edited = hit.model_copy(update={"metadata": {**hit.metadata, "t": "chemistry"}})
        assert store.add_documents([edited]) == ["ox"]
        assert store.get_by_ids(["ox"])[0].metadata == {"t": "chemistry"}


def test_a_new_document_keeps_its_own_score_doc_id_and_chunk_index(
    tiny_encoder: M3Encoder,
) -> None:
    """A document whose id is not stored was not returned by a retriever of this store: its
    ``score`` / ``doc_id`` / ``chunk_index`` are the user's and are stored (they were dropped
    when they had the shape the retriever shows)."""
    own = {"doc_id": "r1", "chunk_index": 0, "score": 4.5, "lang": "en"}
    with M3VectorStore.open(tiny_encoder) as store:
        retriever = store.as_m3_retriever()
        assert retriever.add_documents([Document("A film review.", id="r1", metadata=own)])
        assert store.add_documents([Document("A book review.", id="r2", metadata=own)])
        got = {d.id: d.metadata for d in store.get_by_ids(["r1", "r2"])}
        assert got == {"r1": own, "r2": own}
