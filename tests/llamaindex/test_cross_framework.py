"""One schema for both adapters: what langchain_m3.M3Retriever writes, llamaindex_m3.M3Retriever
finds (and back), with the same ranking, ids and metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core import Document as LIDocument

import langchain_m3
import llamaindex_m3
from m3kit import M3Encoder

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
    "Photosynthesis turns light into chemical energy.",
]
IDS = ["berlin", "oxygen", "amazon", "photo"]
TOPICS = ["geo", "chem", "geo", "bio"]


def _rankings_agree(location: Path, encoder: M3Encoder, backend: str) -> None:
    """Both retrievers, opened in turn on the same collection, rank identically."""
    lc = langchain_m3.M3Retriever(
        index=llamaindex_m3.M3Retriever.open(
            encoder, location=location, collection="shared", backend=backend
        ).index,
        k=4,
    )
    try:
        li = llamaindex_m3.M3Retriever(lc.index, similarity_top_k=4)
        for text, doc_id, topic in zip(TEXTS, IDS, TOPICS, strict=True):
            lc_docs = lc.invoke(text)
            li_nodes = li.retrieve(text)
            assert lc_docs[0].metadata["doc_id"] == li_nodes[0].node.ref_doc_id == doc_id
            assert li_nodes[0].node.metadata["topic"] == lc_docs[0].metadata["topic"] == topic
            assert [d.id for d in lc_docs] == [n.node.ref_doc_id for n in li_nodes]
            assert [d.metadata["score"] for d in lc_docs] == pytest.approx(
                [n.score for n in li_nodes], abs=1e-6
            )
    finally:
        lc.index.close()


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_langchain_writes_llamaindex_reads(
    tiny_encoder: M3Encoder, tmp_path: Path, backend: str
) -> None:
    docs = [
        LCDocument(t, id=i, metadata={"topic": topic})
        for t, i, topic in zip(TEXTS, IDS, TOPICS, strict=True)
    ]
    written = langchain_m3.M3Retriever.from_documents(
        docs, tiny_encoder, location=tmp_path, collection="shared", backend=backend
    )
    written.index.close()
    with llamaindex_m3.M3Retriever.open(
        tiny_encoder, location=tmp_path, collection="shared", backend=backend, similarity_top_k=1
    ) as reader:
        assert reader.index.count() == len(TEXTS)
        for text, doc_id, topic in zip(TEXTS, IDS, TOPICS, strict=True):
            (hit,) = reader.retrieve(text)
            assert hit.node.get_content() == text
            assert hit.node.ref_doc_id == doc_id and hit.node.metadata["topic"] == topic
    _rankings_agree(tmp_path, tiny_encoder, backend)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_llamaindex_writes_langchain_reads(
    tiny_encoder: M3Encoder, tmp_path: Path, backend: str
) -> None:
    docs = [
        LIDocument(text=t, id_=i, metadata={"topic": topic})
        for t, i, topic in zip(TEXTS, IDS, TOPICS, strict=True)
    ]
    with llamaindex_m3.M3Retriever.from_documents(
        docs, tiny_encoder, location=tmp_path, collection="shared", backend=backend
    ):
        pass
    reader = langchain_m3.M3Retriever.from_documents(
        [], tiny_encoder, location=tmp_path, collection="shared", backend=backend, k=1
    )
    try:
        assert reader.index.count() == len(TEXTS)
        for text, doc_id, topic in zip(TEXTS, IDS, TOPICS, strict=True):
            (doc,) = reader.invoke(text)
            assert doc.page_content == text
            assert doc.metadata["doc_id"] == doc_id and doc.metadata["topic"] == topic
        # re-adding the same documents through the other framework changes nothing
        again = zip(TEXTS, IDS, TOPICS, strict=True)
        reader.add_documents([LCDocument(t, id=i, metadata={"topic": p}) for t, i, p in again])
        assert reader.index.count() == len(TEXTS)
    finally:
        reader.index.close()
    _rankings_agree(tmp_path, tiny_encoder, backend)
