"""``M3Retriever.add_documents(chunking=...)``: long documents indexed whole, in chunks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from llama_index.core import Document

from llamaindex_m3 import M3Retriever
from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker

TEXT = " ".join(
    f"Note {i}: the {topic} section mentions {topic} fact number {i}."
    for i, topic in enumerate(["lava", "bees", "rings", "bread"] * 6)
)


@pytest.fixture(scope="module")
def small(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=64)


def _texts(retriever: M3Retriever, k: int) -> list[str]:
    nodes = retriever.retrieve("fact")  # all chunks when k is above their number
    assert len(nodes) < k
    return [
        n.node.get_content()
        for n in sorted(nodes, key=lambda n: int(n.node.metadata["chunk_index"]))
    ]


def test_chunking_true_indexes_all_of_a_long_document(
    small: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="m3kit.chunking"):
        retriever = M3Retriever.from_documents(
            [Document(text=TEXT, id_="long")], small, chunking=True, similarity_top_k=100
        )
    assert not caplog.records, "nothing is truncated"
    texts = _texts(retriever, 100)
    assert len(texts) > 3 and "".join(texts) == TEXT
    # the same chunks as the core's NaiveChunker; re-adding stores nothing new
    assert texts == [TEXT[s:e] for s, e in NaiveChunker(small).spans([TEXT])[0]]
    count = retriever.index.count()
    retriever.add_documents([Document(text=TEXT, id_="long")], chunking=True)
    assert retriever.index.count() == count


def test_default_warns_and_both_options_pool_the_chunks_late(
    small: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    retriever = M3Retriever.open(small, similarity_top_k=100)
    with caplog.at_level(logging.WARNING, logger="m3kit.chunking"):
        retriever.add_documents([Document(text=TEXT, id_="long")])
    assert any(
        "'long'" in r.getMessage() and "not indexed" in r.getMessage() for r in caplog.records
    )
    assert retriever.index.count() == 1
    # Both: the chunks chunking= cuts (the same spans), pooled late; a new document version.
    retriever.add_documents([Document(text=TEXT, id_="long")], chunking=True, late_chunking=True)
    texts = _texts(retriever, 100)
    assert texts == [TEXT[s:e] for s, e in NaiveChunker(small).spans([TEXT])[0]]
