"""Copies of late-chunked nodes with another text: the copy does not keep the old text's vector."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.schema import MetadataMode

from llamaindex_m3 import M3Embedding
from llamaindex_m3.node_parser import M3LateChunkingNodeParser, node_vectors

TEXT = (
    "Berlin is the capital and largest city of Germany. It has about 3.8 million inhabitants. "
    "The city lies on the banks of the Spree river."
)
BANANAS = "Bananas are yellow and grow in bunches."


@pytest.mark.parametrize("deep", [False, True])
def test_a_copy_with_another_text_drops_the_late_vector(tiny_encoder: Any, deep: bool) -> None:
    """``node.model_copy(update={"text": ...})`` sets the text without ``__setattr__``, so the
    copy kept its original's late vector and offsets: ``VectorStoreIndex`` (which embeds only
    nodes without an ``embedding``) stored the old text's vector under the new text in a store
    that is not m3kit's. The copy drops them, as an edit of the node does; a copy given the
    chunk's own text (or its own ``embedding``) keeps what it is given."""
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)
    nodes = parser.get_nodes_from_documents([Document(text=TEXT, id_="doc-c")])
    original = nodes[1]
    late, span = list(original.embedding), (original.start_char_idx, original.end_char_idx)
    copy = original.model_copy(update={"text": BANANAS, "id_": "copy"}, deep=deep)
    assert copy.embedding is None and (copy.start_char_idx, copy.end_char_idx) == (None, None)
    assert original.embedding == late and original.text != BANANAS  # the original is untouched
    back = copy.model_copy(update={"text": original.text}, deep=deep)
    assert back.embedding == late and (back.start_char_idx, back.end_char_idx) == span
    given = original.model_copy(update={"text": BANANAS, "embedding": [0.5]}, deep=deep)
    assert given.embedding == [0.5]  # what the caller gave is trusted, as LlamaIndex does
    same = original.model_copy(update={"text": original.text, "metadata": {"k": 1}}, deep=deep)
    assert same.embedding == late
    embed = M3Embedding.from_encoder(tiny_encoder)
    index = VectorStoreIndex([original, copy], embed_model=embed)
    stored = index.storage_context.vector_store
    fresh = embed.get_text_embedding(copy.get_content(metadata_mode=MetadataMode.EMBED))
    np.testing.assert_allclose(stored.get(copy.node_id), fresh, atol=1e-5)
    np.testing.assert_allclose(stored.get(original.node_id), late, atol=1e-6)
    np.testing.assert_allclose(node_vectors(back).dense[0], late, atol=1e-6)


def test_read_back_late_nodes_keep_their_vectors_and_refuse_edits(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late-chunked nodes read back (``get_nodes``: no marker, no vectors) and added again:
    with metadata, their embed text differed from the stored (bare) text, so every chunk was
    re-encoded on its own text, silently losing its document's context; one whose metadata
    was edited too (an edit of its text is encoded on the new text, as before)."""
    from llamaindex_m3 import M3VectorStore
    from m3kit.store import M3Store
    from m3kit.store.filters import documents_filter

    embed = M3Embedding.from_encoder(tiny_encoder)
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)
    doc = Document(text=TEXT, id_="doc-m", metadata={"title": "Berlin"})
    written: list[Any] = []
    upsert = M3Store.upsert

    def spy(self: M3Store, records: Any, **kwargs: Any) -> Any:
        records = list(records)
        written.extend(records)
        return upsert(self, records, **kwargs)

    with M3VectorStore(embed) as store:
        store.add(parser.get_nodes_from_documents([doc]))

        def stored() -> dict[str, Any]:  # what says which vectors a chunk holds
            found = store.client.store.points(filter=documents_filter(["doc-m"]))
            keys = ("page_content", "metadata", "chunking", "doc_hash", "encoded_text")
            return {pid: [p.get(k) for k in keys] for pid, p in found.items()}

        before = stored()
        back = store.get_nodes()
        monkeypatch.setattr(M3Store, "upsert", spy)
        store.add(back)  # unchanged: nothing is encoded again
        assert written == []
        edited = back[0]
        edited.metadata["title"] = "Berlin, edited"
        with pytest.raises(
            ValueError, match="changes the metadata of a late-chunked chunk of document 'doc-m'"
        ):
            store.add([edited])
        assert written == []
        assert stored() == before


def test_late_chunks_of_either_adapter_keep_their_vectors_when_added_back(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangChain's late chunks read back through LlamaIndex and added again were re-encoded on
    their own text (8 of 8); a hand-built node without a span (same id and text, new
    metadata) slipped past the metadata-edit refusal and was re-encoded alone."""
    from langchain_core.documents import Document as LcDocument
    from llama_index.core.schema import TextNode

    from langchain_m3 import M3LateChunkingSplitter
    from langchain_m3 import M3VectorStore as LcStore
    from llamaindex_m3 import M3VectorStore
    from m3kit.store import M3Store

    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)
    chunks = splitter.split_documents([LcDocument(TEXT, id="doc-l", metadata={"t": "x"})])
    written: list[Any] = []
    upsert = M3Store.upsert

    def spy(self: M3Store, records: Any, **kwargs: Any) -> Any:
        records = list(records)
        written.extend(records)
        return upsert(self, records, **kwargs)

    with LcStore.open(tiny_encoder) as lc:
        lc.add_documents(chunks)
        store = M3VectorStore.from_index(lc.index)
        back = store.get_nodes()
        monkeypatch.setattr(M3Store, "upsert", spy)
        store.add(back)
        assert written == []  # (all were re-encoded alone)
        node = back[0]
        assert isinstance(node, TextNode)
        hand = TextNode(
            id_=node.node_id,
            text=node.text,
            metadata={**node.metadata, "t": "edited"},
            relationships=node.relationships,
        )
        with pytest.raises(ValueError, match="changes the metadata of a late-chunked chunk"):
            store.add([hand])
        assert written == []
