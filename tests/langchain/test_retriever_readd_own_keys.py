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
