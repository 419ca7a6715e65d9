"""LangChain ``M3VectorStore.add_documents`` checks every document before it writes any.

The documents go to the core's ``add_texts`` in several calls (by kind: plain or late-chunked,
and by whether they have ids), and each call checked only its own: metadata that is not JSON
in a later group failed after the earlier groups were stored, naming "text 0" of its group
rather than the document. ``Document(id="")`` means "no id", as in langchain-core's
``add_documents`` and ``InMemoryVectorStore`` (it was refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_m3 import M3LateChunkingSplitter, M3VectorStore


@pytest.fixture
def store(tiny_encoder: Any) -> M3VectorStore:
    return M3VectorStore.open(tiny_encoder)


@pytest.mark.parametrize("bad", [np.float32(0.5), float("nan"), {1}, b"x"])
def test_bad_metadata_in_a_later_group_writes_nothing(store: M3VectorStore, bad: Any) -> None:
    docs = [
        Document("first doc with an id", id="A", metadata={"ok": 1}),
        Document("second doc without one", metadata={"ok": 2}),
        Document("third doc without one", metadata={"bad": bad}),
    ]
    # named down to the key (a 30-column row's cell): the message said "metadata of documents[2]"
    with pytest.raises(ValueError, match=r"metadata of documents\[2\]\['bad'\] \(.+\) is not JSON"):
        store.add_documents(docs)
    assert store.index.count() == 0


def test_bad_metadata_after_late_chunks_writes_nothing(
    store: M3VectorStore, tiny_encoder: Any
) -> None:
    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=8)
    chunks = splitter.split_documents(
        [Document("Late chunk source one. Another sentence here.", metadata={"s": 1})]
    )
    bad = Document("plain", metadata={"b": np.float32(0.5)})
    with pytest.raises(
        ValueError, match=rf"metadata of documents\[{len(chunks)}\]\['b'\] \(.+\) is not JSON"
    ):
        store.add_documents([*chunks, bad])
    assert store.index.count() == 0


def test_an_empty_document_id_is_no_id(store: M3VectorStore) -> None:
    ids = store.add_documents([Document("x", id=""), Document("y", id="")])
    assert all(ids) and len(set(ids)) == 2  # content ids, as for id=None
    assert [d.page_content for d in store.get_by_ids(ids)] == ["x", "y"]
    with pytest.raises(ValueError, match="ids must be non-empty strings"):
        store.add_documents([Document("z")], ids=[""])  # an explicit empty id stays an error


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([Document("first", id="A"), Document("second " + chr(0xD83D))], r"text of documents\[1\]"),
        ([Document("first"), Document("second", id="B" + chr(0xD83D))], r"id of documents\[1\]"),
    ],
)
def test_a_text_or_id_qdrant_refuses_in_a_later_group_writes_nothing(
    store: M3VectorStore, docs: list[Document], message: str
) -> None:
    """Texts and ids were checked per group, inside the core's ``add_texts``: the earlier
    group was stored, and the error named "text 0" / "doc_ids[0]" of the later one."""
    with pytest.raises(ValueError, match=message + " .*not valid UTF-8"):
        store.add_documents(docs)
    assert store.index.count() == 0


def test_a_single_string_of_ids_is_refused(store: M3VectorStore) -> None:
    """The core's ``add_texts`` took each character of ``doc_ids="ab"`` for an id."""
    with pytest.raises(TypeError, match=r"doc_ids is a sequence of ids, not a single string"):
        store.index.add_texts(["one", "two"], doc_ids="ab")
    assert store.index.count() == 0
