"""An edited node read back from ``M3VectorStore`` is stored without offsets naming other text."""

from __future__ import annotations

from typing import Any

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import MetadataMode

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3VectorStore
from m3kit.store.filters import documents_filter

TEXT = (
    "Berlin is the capital of Germany. It has many museums. The river Spree flows through "
    "it. Paris is the capital of France. The Seine flows through Paris."
)


def _payloads(store: M3VectorStore) -> dict[str, dict[str, Any]]:
    return dict(store.client.store.points(filter=documents_filter(["d"])))


def _late_store(tiny_encoder: Any, embed: M3Embedding) -> M3VectorStore:
    store = M3VectorStore(embed)
    VectorStoreIndex.from_documents(
        [Document(text=TEXT, id_="d")],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        transformations=[M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)],
    )
    return store


def test_an_edited_node_read_back_is_stored_without_its_old_offsets(
    tiny_encoder: Any, tiny_embedding: M3Embedding
) -> None:
    """The edited chunk was encoded from its new text but kept its old span, which named other
    text of its document; written again, the same edited node matches its stored chunk."""
    with _late_store(tiny_encoder, tiny_embedding) as store:
        node = next(n for n in store.get_nodes() if n.get_content() == "Paris is the capital ")
        node.set_content("Bananas are yellow.")
        node.embedding = tiny_embedding.get_text_embedding(node.get_content(MetadataMode.EMBED))
        store.add([node])
        stored = _payloads(store)
        for payload in stored.values():
            start, end = payload["start"], payload["end"]
            if payload["page_content"] == "Bananas are yellow.":
                assert (start, end) == (None, None)
            else:
                assert TEXT[start:end] == payload["page_content"]
        hits = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
        for hit in hits.as_retriever(similarity_top_k=len(stored)).retrieve("Bananas"):
            start, end = hit.node.start_char_idx, hit.node.end_char_idx
            if start is not None:
                assert TEXT[start:end] == hit.node.get_content()
        assert node.start_char_idx is not None  # the node given is left as it was
        store.add([node])  # the same edited node again: nothing new
        assert _payloads(store) == stored


def test_an_edited_node_keeps_offsets_its_documents_chunks_confirm(
    tiny_encoder: Any, tiny_embedding: M3Embedding
) -> None:
    """Offsets that the stored chunks show to hold the new text (two chunks merged) stay."""
    with _late_store(tiny_encoder, tiny_embedding) as store:
        back = {n.get_content(): n for n in store.get_nodes()}
        node, after = back["Berlin is the capital "], back["of Germany. "]
        node.set_content(node.get_content() + after.get_content())
        node.end_char_idx = after.end_char_idx
        node.embedding = tiny_embedding.get_text_embedding(node.get_content(MetadataMode.EMBED))
        store.add([node])
        (payload,) = (p for p in _payloads(store).values() if p["chunk_id"] == node.node_id)
        assert (payload["start"], payload["end"]) == (0, 34)
        assert payload["page_content"] == TEXT[0:34]
