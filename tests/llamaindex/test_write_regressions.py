"""Writes of new nodes vs nodes read back from the store; the version of what is encoded;
node ids unique across documents in ``M3Retriever.add_nodes``; a node written again with
other encoded text or node fields (``M3VectorStore.add``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores import MetadataFilters

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from llamaindex_m3.node_records import node_record
from m3kit.encoder import M3Encoder
from m3kit.store import M3Index, output_row
from m3kit.store.filters import documents_filter
from m3kit.store.schema import DOC_HASH, ENCODED_TEXT, EXTRA

HIDDEN = ["chunk_index"]


def _node(text: str, doc: str, chunk_index: int, node_id: str) -> TextNode:
    """A user's node with its own ``chunk_index``, hidden from the embedding and the LLM."""
    return TextNode(
        text=text,
        id_=node_id,
        metadata={"chunk_index": chunk_index, "section": "s"},
        excluded_embed_metadata_keys=list(HIDDEN),
        excluded_llm_metadata_keys=list(HIDDEN),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc, hash=f"h-{doc}")},
    )


@pytest.fixture()
def store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    with M3VectorStore(tiny_embedding) as s:
        yield s


def test_vector_store_keeps_a_new_nodes_hidden_chunk_index(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """Hiding an id from the embedding and the LLM does not make a node one read back."""
    node = _node("Oxygen has the atomic number 8.", "doc-a", 7, "n-7")
    node.embedding = tiny_embedding.get_text_embedding(node.get_content(MetadataMode.EMBED))
    assert store.add([node]) == ["n-7"]
    (payload,) = store.client.store.points(filter=documents_filter(["doc-a"])).values()
    assert payload["metadata"] == {"chunk_index": 7, "section": "s"}
    (back,) = store.get_nodes(["n-7"])
    assert back.metadata["chunk_index"] == 7
    # read back and written again: still the user's 7, stored once
    assert store.add([back]) == ["n-7"] and store.client.count() == 1
    (payload,) = store.client.store.points(filter=documents_filter(["doc-a"])).values()
    assert payload["metadata"] == {"chunk_index": 7, "section": "s"}


def test_retriever_new_version_with_hidden_chunk_index_replaces_the_document(
    tiny_encoder: M3Encoder,
) -> None:
    """A new 2-node version of a 3-chunk document is no 'read back' partial write."""
    texts = ["Oxygen is a gas.", "Berlin is a city.", "The cat sat on the mat."]
    with M3Retriever.open(tiny_encoder) as r:
        r.add_nodes([_node(t, "doc-b", 10 + i, f"old-{i}") for i, t in enumerate(texts)])
        assert r.index.count() == 3
        new = [_node(t, "doc-b", 20 + i, f"new-{i}") for i, t in enumerate(texts[:2])]
        new = [n.model_copy(update={"text": n.text + " Edited."}) for n in new]
        assert r.add_nodes(new) == ["new-0", "new-1"]
        stored = r.index.store.points(filter=documents_filter(["doc-b"])).values()
        assert sorted(p["metadata"]["chunk_index"] for p in stored) == [20, 21]


def test_retriever_refuses_a_node_id_stored_in_another_document(
    tiny_encoder: M3Encoder,
) -> None:
    with M3Retriever.open(tiny_encoder) as r:
        r.add_nodes([_node("Oxygen is a gas.", "doc-c", 0, "shared-id")])
        with pytest.raises(ValueError, match="'shared-id' is stored in document 'doc-c'"):
            r.add_nodes([_node("Berlin is a city.", "doc-d", 0, "shared-id")])
        with pytest.raises(ValueError, match="given to nodes of documents"):
            r.add_nodes([_node("A.", "doc-e", 0, "twice"), _node("B.", "doc-f", 0, "twice")])
        assert r.index.count() == 1


def _stored_encodes(r: M3Retriever | M3Index, text: str) -> bool:
    """The one stored chunk's sparse vector is ``text``'s (a tiny random model's dense vectors
    are all alike; the sparse ones name the tokens)."""
    index = r.index if isinstance(r, M3Retriever) else r
    want = index.encoder.encode([text], heads=["sparse"], show_progress=False).sparse[0]
    (hit,) = index.store.query(sparse=want, k=1, rerank=False)
    return bool(hit.score == pytest.approx(sum(w * w for w in want.to_dict().values()), rel=1e-4))


def test_both_write_paths_store_a_node_alike(store: M3VectorStore) -> None:
    """``M3Retriever.add_nodes`` and ``M3VectorStore.add`` store the same chunk for a node (one
    record builder): text, span, metadata, node fields, encoded text; only the version differs
    (each path versions documents its own way)."""
    node = _node("Oxygen has the atomic number 8.", "doc-p", 0, "p-0")
    node.metadata["title"] = "Oxygen"  # shown to the embedding: an encoded_text is stored
    node.start_char_idx, node.end_char_idx = 4, 35
    store.add([node.model_copy()])
    (stored,) = store.client.store.points(filter=documents_filter(["doc-p"])).values()
    store.clear()
    M3Retriever(store.client).add_nodes([node.model_copy()])
    (added,) = store.client.store.points(filter=documents_filter(["doc-p"])).values()
    assert added[ENCODED_TEXT] == node.get_content(MetadataMode.EMBED)
    assert added[EXTRA]["relationships"] and added["start"] == 4
    assert {k: v for k, v in added.items() if k != DOC_HASH} == {
        k: v for k, v in stored.items() if k != DOC_HASH
    }


def test_retriever_version_covers_the_encoded_text(tiny_encoder: M3Encoder) -> None:
    """Un-hiding a metadata key from the embedding changes what is encoded: a new version."""
    node = TextNode(
        text="It has the atomic number 8.",
        id_="t-1",
        metadata={"title": "Oxygen"},
        excluded_embed_metadata_keys=["title"],
    )
    with M3Retriever.open(tiny_encoder) as r:
        r.add_nodes([node])
        shown = node.model_copy(update={"excluded_embed_metadata_keys": []})
        assert _stored_encodes(r, node.get_content(MetadataMode.EMBED))
        r.add_nodes([shown])
        assert _stored_encodes(r, shown.get_content(MetadataMode.EMBED))
        assert r.index.count() == 1


def _legacy_hash(nodes: list[TextNode]) -> str:
    """The version ``add_nodes`` stored before it versioned the encoded text (53406bc)."""
    h = hashlib.sha256()
    for node in nodes:
        blob = [node.text, node.start_char_idx, node.end_char_idx, node.metadata, "text", None]
        h.update(json.dumps(blob, sort_keys=True).encode())
    return h.hexdigest()


def test_retriever_rewrites_a_document_stored_with_bare_text_vectors(
    tiny_encoder: M3Encoder,
) -> None:
    """Stored by a version that encoded MetadataMode.NONE: encoded once more, on EMBED text."""
    node = TextNode(text="It has the atomic number 8.", id_="o-1", metadata={"title": "Oxygen"})
    with M3Retriever.open(tiny_encoder) as r:
        heads = sorted(r.index.store.heads)
        bare = tiny_encoder.encode([node.text], heads=heads, show_progress=False)
        versions = {"o-1": _legacy_hash([node])}
        old = node_record("o-1", 0, node, output_row(bare, 0), versions, [(0, node)])
        r.index.store.upsert([old], replace=True)
        assert _stored_encodes(r, node.text)
        r.add_nodes([node])
        assert _stored_encodes(r, node.get_content(MetadataMode.EMBED))
        assert r.index.count() == 1


def test_doc_finds_chunks_by_id_after_renames() -> None:
    """``WriteDoc.index_of`` is a dict lookup kept true when a chunk takes a new node id."""
    from llamaindex_m3.write_docs import WriteDoc

    doc = WriteDoc(version="v")
    for i in range(5000):
        doc.set_id(i, f"id-{i}")
    assert doc.index_of("id-4999") == 4999 and doc.index_of("nope") is None
    doc.set_id(3, "renamed")
    assert doc.index_of("renamed") == 3 and doc.index_of("id-3") is None
    assert doc.ids_at[3] == "renamed"


def test_vector_store_rewrites_a_node_whose_encoded_text_changed(store: M3VectorStore) -> None:
    """Same id, text and metadata, a key no longer hidden from the embedding: encoded again
    (the node was taken as stored unchanged: old vectors, old hidden keys, old encoded_text)."""
    node = _node("It has the atomic number 8.", "doc-o", 0, "o-1")
    node.metadata["title"] = "Oxygen"
    node.excluded_embed_metadata_keys.append("title")
    store.add([node])
    assert _stored_encodes(store.client, node.get_content(MetadataMode.EMBED))
    shown = node.model_copy(update={"excluded_embed_metadata_keys": list(HIDDEN)})
    assert store.add([shown]) == ["o-1"] and store.client.count() == 1
    assert _stored_encodes(store.client, shown.get_content(MetadataMode.EMBED))
    (back,) = store.get_nodes(["o-1"])
    assert back.get_content(MetadataMode.EMBED) == shown.get_content(MetadataMode.EMBED)
    store.add([back])  # read back and written again: unchanged
    assert _stored_encodes(store.client, shown.get_content(MetadataMode.EMBED))


def test_vector_store_keeps_the_latest_node_fields(store: M3VectorStore) -> None:
    """Same id, text and metadata, other relationships / hidden keys / template: the stored
    node is the latest (it came back as first written, as if the write had not happened)."""
    node = _node("Neon glows red in a discharge tube.", "doc-n", 0, "ne-1")
    store.add([node])
    later = node.model_copy(deep=True)
    later.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id="ne-2")
    later.excluded_llm_metadata_keys.append("section")
    later.text_template = "[{metadata_str}] {content}"
    store.add([later])
    (back,) = store.get_nodes(["ne-1"])
    assert back.next_node is not None and back.next_node.node_id == "ne-2"
    assert "section" in back.excluded_llm_metadata_keys
    assert back.get_content(MetadataMode.LLM) == later.get_content(MetadataMode.LLM)


def test_a_document_parsed_again_with_other_embedded_metadata_is_encoded_again(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """Same document (same hash), new node ids, a metadata key now hidden from the embedding:
    the stored chunk takes the new node and its vectors, not only its id."""
    storage = StorageContext.from_defaults(vector_store=store)
    meta = {"file_path": "/data/iron.txt"}
    first = Document(text="Iron is a metal that rusts.", id_="iron", metadata=meta)
    VectorStoreIndex.from_documents([first], storage_context=storage, embed_model=tiny_embedding)
    again = Document(
        text=first.text, id_="iron", metadata=meta, excluded_embed_metadata_keys=["file_path"]
    )
    assert again.hash == first.hash
    VectorStoreIndex.from_documents([again], storage_context=storage, embed_model=tiny_embedding)
    assert store.client.count() == 1
    assert _stored_encodes(store.client, first.text)
    (back,) = store.get_nodes(filters=None)
    assert back.get_content(MetadataMode.EMBED) == first.text


def test_retriever_unchanged_document_takes_the_latest_node_ids_and_fields(
    tiny_encoder: M3Encoder,
) -> None:
    """A document parsed again (new random node ids, other node fields), unchanged otherwise:
    skipped without encoding, but retrieve returns the ids add_nodes returned (it returned the
    first parse's ids, and the first parse's relationships and hidden keys)."""

    def parse(prefix: str) -> list[TextNode]:
        nodes = [
            _node(t, "doc-r", i, f"{prefix}-{i}")
            for i, t in enumerate(["Oxygen is a gas.", "Iron is a metal."])
        ]
        nodes[0].relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=f"{prefix}-1")
        return nodes

    with M3Retriever.open(tiny_encoder, similarity_top_k=2) as r:
        r.add_nodes(parse("old"))
        again = parse("new")
        again[1].excluded_llm_metadata_keys.append("section")
        assert r.add_nodes(again) == ["new-0", "new-1"] and r.index.count() == 2
        got = {h.node.node_id: h.node for h in r.retrieve("Oxygen is a gas.")}
        assert sorted(got) == ["new-0", "new-1"]
        assert got["new-0"].next_node is not None and got["new-0"].next_node.node_id == "new-1"
        assert "section" in got["new-1"].excluded_llm_metadata_keys


def test_delete_nodes_with_an_empty_filter_list_names_it(store: M3VectorStore) -> None:
    """``filters=MetadataFilters(filters=[])`` filters nothing: refused (it would delete every
    node), and the error said "give point ids, a filter or both" to a caller who gave one."""
    store.add([TextNode(text="Oxygen is O.", id_="keep")])
    with pytest.raises(ValueError, match=r"filters is an empty MetadataFilters.*clear\(\)"):
        store.delete_nodes(filters=MetadataFilters(filters=[]))
    assert [n.node_id for n in store.get_nodes()] == ["keep"]
