"""A document another writer stored, changed through ``M3VectorStore`` by nodes that name no
version (read back, or built by hand), is no longer that writer's version: writing the
document again (``M3Index.add_texts``, ``langchain_m3``, a LlamaIndex insert of its source)
replaces what the nodes changed instead of skipping it as stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode

from langchain_m3 import M3VectorStore as LCVectorStore
from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit.chunking import NaiveChunker
from m3kit.encoder import M3Encoder
from m3kit.store import M3Index
from m3kit.store.filters import documents_filter

TEXT = " ".join(f"Sentence {i} is about topic number {i}." for i in range(4))


def _stored(index: M3Index) -> list[tuple[int, str]]:
    """``(chunk_index, text)`` of every stored chunk of document ``d``."""
    payloads = index.store.points(filter=documents_filter(["d"])).values()
    return sorted((p["chunk_index"], p["page_content"]) for p in payloads)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_add_texts_restores_a_chunk_edited_through_llamaindex(
    tiny_encoder: M3Encoder, tiny_embedding: M3Embedding, tmp_path: Path, backend: str
) -> None:
    chunker = NaiveChunker(tiny_encoder, chunk_size=16)
    with M3Index.open(tiny_encoder, tmp_path, backend=backend) as index:
        index.add_texts([TEXT], doc_ids=["d"], chunker=chunker)
        original = _stored(index)
        assert len(original) > 1
        store = M3VectorStore(index=index)
        (node,) = [n for n in store.get_nodes() if n.get_content() == original[1][1]]
        node.set_content("Edited through LlamaIndex.")
        store.add([node])
        assert (1, "Edited through LlamaIndex.") in _stored(index)
        index.add_texts([TEXT], doc_ids=["d"], chunker=chunker)  # the document as it was
        assert _stored(index) == original
        hit = index.search("Edited through LlamaIndex.", k=len(original))
        assert "Edited through LlamaIndex." not in [h.text for h in hit]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_langchain_rewrite_drops_a_node_added_by_hand(
    tiny_encoder: M3Encoder, tiny_embedding: M3Embedding, tmp_path: Path, backend: str
) -> None:
    chunker = NaiveChunker(tiny_encoder, chunk_size=16)
    with M3Index.open(tiny_encoder, tmp_path, backend=backend) as index:
        lc = LCVectorStore(index)
        lc.add_documents([LCDocument(TEXT, id="d")], chunking=chunker)
        original = _stored(index)
        extra = TextNode(
            text="A node added by hand.",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="d")},  # no hash
        )
        extra.embedding = tiny_embedding.get_text_embedding(extra.get_content(MetadataMode.EMBED))
        M3VectorStore(index=index).add([extra])
        assert len(_stored(index)) == len(original) + 1
        lc.add_documents([LCDocument(TEXT, id="d")], chunking=chunker)
        assert _stored(index) == original
        payloads = index.store.points(filter=documents_filter(["d"])).values()
        (version,) = {p["doc_hash"] for p in payloads}
        assert index.store.complete_documents({"d": version}) == {"d"}


def test_llamaindex_insert_again_replaces_a_node_edited_in_place(
    tiny_embedding: M3Embedding,
) -> None:
    """The same within LlamaIndex: the source document inserted again is its version, not the
    edited one (whose edited chunk would stay beside the node it replaced)."""
    with M3VectorStore(tiny_embedding) as store:
        parse = [SentenceSplitter(chunk_size=16, chunk_overlap=0)]
        storage = StorageContext.from_defaults(vector_store=store)
        VectorStoreIndex.from_documents(
            [Document(text=TEXT, id_="d")],
            storage_context=storage,
            embed_model=tiny_embedding,
            transformations=parse,
        )
        original = _stored(store.client)
        back = [n for n in store.get_nodes() if n.get_content() == original[0][1]]
        back[0].set_content("Edited in place.")
        store.add(back)
        VectorStoreIndex.from_documents(
            [Document(text=TEXT, id_="d")],
            storage_context=storage,
            embed_model=tiny_embedding,
            transformations=parse,
        )
        assert _stored(store.client) == original
