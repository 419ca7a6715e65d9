"""``chunking=`` on the LangChain write path: long documents indexed whole, in chunks.

``M3VectorStore.add_documents/add_texts`` and ``M3Retriever.add_documents`` take
``chunking=True`` (the core's sentence packer, :class:`~m3kit.chunking.NaiveChunker`) or a
chunker; without it a long document is one vector, cut with the core's warning. With
``late_chunking=`` too, the chunks ``chunking=`` cuts are pooled late.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker, text_capacity
from m3kit.late_chunking import LateChunker
from tests.store.conftest import record_upserts

TEXT = " ".join(
    f"Note {i}: the {topic} section mentions {topic} fact number {i}."
    for i, topic in enumerate(["lava", "bees", "rings", "bread"] * 6)
)


@pytest.fixture(scope="module")
def small(tiny_m3_path: Path) -> M3Encoder:
    """The tiny M3 with a 64-token window, so TEXT (about 400 tokens) does not fit."""
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=64)


def _spans(encoder: M3Encoder) -> list[str]:
    return [TEXT[s:e] for s, e in NaiveChunker(encoder).spans([TEXT])[0]]


@pytest.mark.parametrize("method", ["add_documents", "add_texts"])
def test_vectorstore_chunking_true_stores_all_the_text(
    small: M3Encoder, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    with M3VectorStore.open(small) as store, caplog.at_level(logging.WARNING):
        if method == "add_documents":
            ids = store.add_documents([Document(page_content=TEXT, id="long")], chunking=True)
        else:
            ids = store.add_texts([TEXT], ids=["long"], chunking=True)
        assert ids == ["long"]
        assert not caplog.records, "nothing is truncated"
        chunks = store.get_by_ids(["long"])
        texts = [d.page_content for d in chunks]
        assert len(texts) > 3 and "".join(texts) == TEXT
        assert texts == _spans(small)  # the core's sentence packer
        assert [d.metadata["chunk_index"] for d in chunks] == list(range(len(texts)))
        assert store.index.count() == len(texts)
        store.add_documents([Document(page_content=TEXT, id="long")], chunking=True)
        assert store.index.count() == len(texts)  # unchanged: nothing new


def test_retriever_chunking_true_and_default_warning(
    small: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    retriever = M3Retriever(index=M3VectorStore.open(small).index, k=100)
    try:
        with caplog.at_level(logging.WARNING, logger="m3kit.chunking"):
            retriever.add_documents([Document(page_content=TEXT, id="whole")])
        (record,) = caplog.records
        message = record.getMessage()
        assert "'whole'" in message and "not indexed" in message
        tokens = len(small.tokenizer(TEXT, add_special_tokens=False).input_ids)
        dropped = tokens - text_capacity(small)
        assert f"last {dropped} tokens" in message
        assert retriever.index.count() == 1
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="m3kit.chunking"):
            retriever.add_documents([Document(page_content=TEXT, id="long")], chunking=True)
        assert not caplog.records
        hits = retriever.invoke("fact", filter=None)
        chunks = sorted(
            (d for d in hits if d.metadata["doc_id"] == "long"),
            key=lambda d: int(d.metadata["chunk_index"]),
        )
        assert [d.page_content for d in chunks] == _spans(small)
        mine = NaiveChunker(small, chunk_size=20)
        retriever.add_documents([Document(page_content=TEXT, id="mine")], chunking=mine)
        assert retriever.index.count() == 1 + len(chunks) + len(mine.spans([TEXT])[0])
    finally:
        retriever.index.close()


def test_chunking_and_late_chunking_pool_the_same_chunks_late(
    small: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with M3VectorStore.open(small, late_chunking=True) as store:
        written = record_upserts(store.index, monkeypatch)
        # the store's default late_chunking + this call's chunking: late pooling of its chunks
        store.add_documents([Document(page_content=TEXT, id="long")], chunking=True)
        assert [r.text for r in written] == _spans(small)
        assert {r.chunking["kind"] for r in written if r.chunking} == {"late"}
        late = LateChunker(small, chunk_size=NaiveChunker(small).chunk_size).chunk([TEXT])[0]
        for record, chunk in zip(written, late, strict=True):
            np.testing.assert_allclose(record.vectors.colbert[0], chunk.colbert, atol=1e-5)
        # the same text and chunks, pooled naively: a new version of the document
        written.clear()
        store.add_documents(
            [Document(page_content=TEXT, id="long")], chunking=True, late_chunking=False
        )
        assert [r.text for r in written] == _spans(small)
        assert {r.chunking["kind"] for r in written if r.chunking} == {"naive"}
        assert store.index.count() == len(written)
        with pytest.raises(ValueError, match="cuts other chunks than chunking="):
            store.add_documents(
                [Document(page_content=TEXT)],
                chunking=NaiveChunker(small, chunk_size=20),
                late_chunking=LateChunker(small, chunk_size=30),
            )
