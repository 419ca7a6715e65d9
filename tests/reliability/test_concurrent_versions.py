"""Two async writes of one document id with different content, at once: the document ends as
one whole version (every chunk of it, and none of the other), whichever writes last.

A replacing write is "write the new chunks, then delete the document's other chunks"; two of
them interleaved could leave chunks of both versions, or a version with the other's tail
deleted. Here both writes are encoded before either writes (the interleaving forced), through
``M3Index.aadd_texts``, LangChain's ``M3VectorStore.aadd_documents`` and LlamaIndex's
``M3VectorStore.async_add``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from langchain_m3 import M3VectorStore
from llamaindex_m3 import M3VectorStore as LlamaStore
from m3kit.chunking import NaiveChunker
from m3kit.store import M3Index
from tests.store.conftest import stored_texts

LONG = "One. Two. Three. Four. Five."
SHORT = "Six. Seven."


def _chunker(encoder: Any) -> NaiveChunker:
    return NaiveChunker(encoder, chunk_size=4)  # LONG: several chunks, more than SHORT


def _alone(encoder: Any, backend: str, text: str) -> dict[str, list[str]]:
    """The document ``x`` as a write of ``text`` alone stores it."""
    reference = M3Index.open(encoder, collection="reference", backend=backend)
    reference.add_texts([text], doc_ids=["x"], chunker=_chunker(encoder))
    stored = stored_texts(reference)
    reference.close()
    return stored


def _hashes(index: M3Index) -> set[str]:
    return {str(h.payload["doc_hash"]) for h in index.store._backend.scroll(None, ["doc_hash"])}


@pytest.mark.parametrize("last", [LONG, SHORT], ids=["long-last", "short-last"])
@pytest.mark.parametrize("entry", ["index", "langchain"])
@pytest.mark.parametrize("backend", ["edge", "client"])
def test_two_writes_of_one_id_at_once_leave_one_whole_version(
    tiny_encoder: Any, backend: str, entry: str, last: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = M3Index.open(tiny_encoder, collection="c", backend=backend)
    chunker = _chunker(tiny_encoder)
    index.add_texts(["Zero. Old."], doc_ids=["x"], chunker=chunker)
    both_encoded = threading.Barrier(2, timeout=30)
    first_written = threading.Event()
    real_records, real_write = index._records, index.write_records

    def records(docs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        out = real_records(docs, *args, **kwargs)
        both_encoded.wait()  # neither writes before both are encoded
        if docs[0].text == last:
            assert first_written.wait(30)
        return out

    def write_records(*args: Any, **kwargs: Any) -> None:
        real_write(*args, **kwargs)
        first_written.set()

    monkeypatch.setattr(index, "_records", records)
    monkeypatch.setattr(index, "write_records", write_records)
    store = M3VectorStore(index, chunking=chunker)

    def add(text: str) -> Any:
        if entry == "index":
            return index.aadd_texts([text], doc_ids=["x"], chunker=chunker)
        return store.aadd_documents([Document(text, id="x")])

    async def adds() -> None:
        await asyncio.gather(add(LONG), add(SHORT))

    asyncio.run(adds())
    assert stored_texts(index) == _alone(tiny_encoder, backend, last)
    (version,) = _hashes(index)
    assert index.store.complete_documents({"x": version}) == {"x"}
    index.close()


def test_the_versions_have_several_chunks(tiny_encoder: Any) -> None:
    long, short = (_alone(tiny_encoder, "client", t)["x"] for t in (LONG, SHORT))
    assert len(long) > len(short) > 1


def _nodes(text: str, version: str) -> list[TextNode]:
    source = RelatedNodeInfo(node_id="x", hash=version)
    return [
        TextNode(text=part, id_=f"{version}-{i}", relationships={NodeRelationship.SOURCE: source})
        for i, part in enumerate(p.strip() for p in text.split(".") if p.strip())
    ]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_two_llamaindex_adds_of_one_document_at_once_leave_one_whole_version(
    tiny_encoder: Any, backend: str
) -> None:
    index = M3Index.open(tiny_encoder, collection="c", backend=backend)
    store = LlamaStore.from_index(index)
    store.add(_nodes("Zero. Old.", "v0"))

    async def adds() -> None:
        await asyncio.gather(
            store.async_add(_nodes(LONG, "long")), store.async_add(_nodes(SHORT, "short"))
        )

    asyncio.run(adds())
    (stored,) = stored_texts(index).values()
    assert stored in (["One", "Two", "Three", "Four", "Five"], ["Six", "Seven"])
    (version,) = _hashes(index)
    assert index.store.complete_documents({"x": version}) == {"x"}
    index.close()
