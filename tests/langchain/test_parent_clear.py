"""``M3VectorStore.clear()`` from another thread never lands inside a parent write.

With ``parent_id_key``, a write of a parent's children can take several requests (one per
``batch_size`` documents, or per kind of document, then the delete of the parent's other
children). ``clear()`` took only the store's write lock, which each request holds alone, so
it could land between two of them: the parent kept the children written after it and none
before (a part of its children, with no error). It now waits for the parent writes under way,
and writes that start meanwhile wait for it: a parent write lands whole before or after it.
"""

from __future__ import annotations

import threading

import pytest
from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from tests.reliability.killing import Gate


def _children(texts: list[str]) -> list[Document]:
    return [Document(t, metadata={"doc_id": "p"}) for t in texts]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_clear_waits_for_a_parent_write_in_several_requests(
    tiny_encoder: M3Encoder, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = M3VectorStore.open(tiny_encoder, backend=backend)
    store.parent_id_key = "doc_id"
    store.add_documents(_children(["old child zero", "old child one"]))
    index = store.index
    gate = Gate(index._records, hold=2)  # 1: new child zero (written); 2: new child one
    monkeypatch.setattr(index, "_records", gate)
    new = ["new child zero", "new child one", "new child two"]
    writer = threading.Thread(
        target=store.add_documents, args=(_children(new),), kwargs={"batch_size": 1}
    )
    writer.start()
    assert gate.held.wait(30), "the write never reached its second request"
    clearer = threading.Thread(target=store.clear)
    clearer.start()
    clearer.join(1.0)  # it lands now, if it can
    gate.release.set()
    writer.join(60)
    clearer.join(60)
    assert not writer.is_alive() and not clearer.is_alive()
    texts = sorted(h.text for h in index.store.get(filter=models.Filter()))
    assert texts == [], f"clear() landed inside the parent write: {texts} left"
    store.close()
