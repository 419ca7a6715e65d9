"""A parent id key holding a dot or a space replaces the parent's children, in both stores.

``ParentDocumentRetriever`` writes the parent id under its ``id_key`` as one flat metadata
key (``metadata["doc.id"] = parent``). The stale-children delete addressed that key as a
payload path: ``metadata.doc.id`` is the nested ``metadata["doc"]["id"]``, which no child
has, so a re-added parent kept its old children next to the new ones (silently), and
``M3QdrantVectorStore`` built ``metadata.doc id`` unquoted, which Qdrant refuses ("Invalid
path") after the children were written. The same held for ``M3QdrantVectorStore``'s
``metadata_payload_key`` (langchain-qdrant's one payload key holding the metadata): with a dot
(``"lc.meta"``) a re-added parent silently kept its old children past the new ones, with a
space the write raised "Invalid path" after writing the children.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS
from tests.langchain.qdrant_stores import memory_qdrant_store

KEYS = ["doc_id", "doc.id", "doc id", "Header 1.level", "x[0]", "ид-родителя"]


def _children(key: str, parent: str, texts: list[str]) -> list[Document]:
    return [Document(t, metadata={key: parent, "src": "s"}) for t in texts]


def _vector_store_texts(encoder: M3Encoder, backend: str) -> Callable[..., list[str]]:
    store = M3VectorStore.open(encoder, backend=backend)

    def stored(key: str, docs: list[Document] | None = None) -> list[str]:
        if docs is not None:
            store.add_documents(docs, parent_id_key=key)
        return sorted(h.text for h in store.index.store.get(filter=models.Filter()))

    return stored


def _qdrant_store_texts(encoder: M3Encoder, metadata_key: str) -> Callable[..., list[str]]:
    store = memory_qdrant_store(encoder, "children", metadata_payload_key=metadata_key)

    def stored(key: str, docs: list[Document] | None = None) -> list[str]:
        if docs is not None:
            store.add_documents(docs, parent_id_key=key)
        points, _ = store.client.scroll("children", limit=1000)
        return sorted(str(p.payload["page_content"]) for p in points if p.payload)

    return stored


PAYLOAD_KEYS = {
    "qdrant": "metadata",
    "qdrant-custom-payload-key": "meta",
    "qdrant-dotted-payload-key": "lc.meta",
    "qdrant-spaced-payload-key": "my meta",
}


@pytest.fixture(params=["edge", "client", *PAYLOAD_KEYS])
def stored(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Callable[..., list[str]]:
    if request.param in PAYLOAD_KEYS:
        return _qdrant_store_texts(tiny_encoder, PAYLOAD_KEYS[request.param])
    return _vector_store_texts(tiny_encoder, request.param)


@pytest.mark.parametrize("key", KEYS)
def test_a_re_added_parent_keeps_only_its_new_children(
    stored: Callable[..., list[str]], key: str
) -> None:
    stored(key, _children(key, "p", SAMPLE_TEXTS[0:3]) + _children(key, "q", SAMPLE_TEXTS[5:6]))
    assert stored(key, _children(key, "p", SAMPLE_TEXTS[3:4])) == sorted(
        [SAMPLE_TEXTS[3], SAMPLE_TEXTS[5]]
    )


@pytest.mark.parametrize("key", ["", 'say "id"'])
def test_a_key_no_path_can_address_is_refused_before_writing(
    stored: Callable[..., list[str]], key: str
) -> None:
    with pytest.raises(ValueError, match="cannot be addressed"):
        stored(key, _children(key, "p", SAMPLE_TEXTS[0:1]))
    assert stored(key) == []


@pytest.mark.parametrize("metadata_key", ['lc "meta"', ""])
def test_a_payload_key_no_path_can_address_is_refused_before_writing(
    tiny_encoder: M3Encoder, metadata_key: str
) -> None:
    stored = _qdrant_store_texts(tiny_encoder, metadata_key)
    with pytest.raises(ValueError, match="metadata_payload_key .* cannot be addressed"):
        stored("doc_id", _children("doc_id", "p", SAMPLE_TEXTS[0:1]))
    assert stored("doc_id") == []
