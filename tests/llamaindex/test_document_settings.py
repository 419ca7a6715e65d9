"""``M3Retriever.add_documents`` keeps each document's hidden metadata keys and templates.

Before, the nodes it returned had only its own placement keys hidden and the default
templates: a ``SimpleDirectoryReader`` document's file size and dates (which the reader hides
from the LLM) reached every prompt, where the nodes of LlamaIndex's own
``VectorStoreIndex.from_documents`` (a node parser's, which inherit them) leave them out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.schema import MetadataMode

from llamaindex_m3 import M3Retriever
from m3kit import M3Encoder
from m3kit.store.index_inputs import versioned_documents

TEXT = "Apples are red. Bananas are yellow. Cherries are dark red."


def _document(template: str = "{key}=>{value}") -> Document:
    return Document(
        text=TEXT,
        id_="fruit",
        metadata={"file_path": "/data/fruit.txt", "file_size": 45},
        excluded_llm_metadata_keys=["file_size"],
        excluded_embed_metadata_keys=["file_path", "file_size"],
        metadata_template=template,
    )


@pytest.mark.parametrize(
    "options", [{}, {"chunking": True}, {"late_chunking": True}], ids=["whole", "naive", "late"]
)
def test_retrieved_nodes_keep_the_documents_hidden_keys_and_templates(
    tiny_encoder: M3Encoder, options: dict[str, bool]
) -> None:
    retriever = M3Retriever.from_documents([_document()], tiny_encoder, **options)
    (hit, *_) = retriever.retrieve("red fruit")
    node = hit.node
    assert node.get_content(MetadataMode.LLM).startswith("file_path=>/data/fruit.txt\n\n")
    assert node.get_content(MetadataMode.EMBED).startswith(TEXT[:10])  # every key hidden
    assert node.metadata["file_size"] == 45  # stored, filterable


def test_unchanged_settings_store_nothing_new_and_a_changed_template_replaces(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = M3Retriever.from_documents([_document()], tiny_encoder)
    encoded: list[int] = []
    encode = tiny_encoder.encode_tokenized
    monkeypatch.setattr(
        tiny_encoder, "encode_tokenized", lambda ids, **kw: encoded.append(1) or encode(ids, **kw)
    )
    retriever.add_documents([_document()])
    assert not encoded, "an unchanged document was encoded again"
    retriever.add_documents([_document("{key} = {value}")])
    (hit,) = retriever.retrieve("red fruit")
    assert hit.node.get_content(MetadataMode.LLM).startswith("file_path = /data/fruit.txt\n")
    assert retriever.index.count() == 1


def test_a_plain_documents_version_is_unchanged(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    """Documents without such settings keep the version they were stored with before."""
    retriever = M3Retriever.open(tiny_encoder, location=str(tmp_path / "db"))
    retriever.add_documents([Document(text=TEXT, id_="plain", metadata={"a": 1})])
    _, (doc,) = versioned_documents([TEXT], [{"a": 1}], ["plain"], None)
    assert retriever.index.store.stored_versions(["plain"])["plain"].doc_hash == doc.doc_hash
    retriever.close()


def test_settings_removed_replace_the_document(tiny_encoder: M3Encoder) -> None:
    retriever = M3Retriever.from_documents([_document()], tiny_encoder)
    plain = Document(text=TEXT, id_="fruit", metadata={"file_path": "/data/fruit.txt"})
    retriever.add_documents([plain])
    (hit,) = retriever.retrieve("red fruit")
    assert hit.node.get_content(MetadataMode.LLM).startswith("file_path: /data/fruit.txt\n")


def test_an_unchanged_langchain_round_trip_keeps_them(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's case: the document read back through LangChain and added again was encoded
    again and stored without its hidden keys (LangChain writes no extras)."""
    from langchain_m3 import M3VectorStore

    retriever = M3Retriever.from_documents([_document()], tiny_encoder)
    lc = M3VectorStore(retriever.index)
    docs = lc.similarity_search("red fruit", k=1)
    encoded: list[int] = []
    encode = tiny_encoder.encode_tokenized
    monkeypatch.setattr(
        tiny_encoder, "encode_tokenized", lambda ids, **kw: encoded.append(1) or encode(ids, **kw)
    )
    lc.add_documents(docs)
    assert not encoded, "the unchanged document was encoded again"
    (hit,) = retriever.retrieve("red fruit")
    assert hit.node.get_content(MetadataMode.LLM).startswith("file_path=>/data/fruit.txt\n\n")


def test_a_langchain_metadata_edit_keeps_them_and_updates_in_place(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's case: the edit re-encoded the document and stored it without them."""
    from langchain_m3 import M3VectorStore

    retriever = M3Retriever.from_documents([_document()], tiny_encoder)
    lc = M3VectorStore(retriever.index)
    (doc,) = lc.similarity_search("red fruit", k=1)
    doc.metadata["file_path"] = "/data/other.txt"
    encoded: list[int] = []
    encode = tiny_encoder.encode_tokenized
    monkeypatch.setattr(
        tiny_encoder, "encode_tokenized", lambda ids, **kw: encoded.append(1) or encode(ids, **kw)
    )
    lc.add_documents([doc])
    assert not encoded, "a metadata edit was encoded again"
    (hit,) = retriever.retrieve("red fruit")
    assert hit.node.get_content(MetadataMode.LLM).startswith("file_path=>/data/other.txt\n\n")
    edited = _document()
    edited.metadata["file_path"] = "/data/other.txt"
    encoded.clear()  # (the search encoded its query)
    retriever.add_documents([edited])  # the same document, from LlamaIndex: nothing to do
    assert not encoded


def test_a_langchain_text_edit_keeps_them(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's case: a LangChain write that changed the text of a document LlamaIndex
    stored wrote it without its hidden keys and templates (LangChain keeps no extras), where
    a metadata edit kept them."""
    from langchain_m3 import M3VectorStore

    retriever = M3Retriever.from_documents([_document()], tiny_encoder)
    lc = M3VectorStore(retriever.index)
    (doc,) = lc.similarity_search("red fruit", k=1)
    doc.page_content = "Apples are green."
    lc.add_documents([doc])
    (hit,) = retriever.retrieve("green apples")
    assert hit.node.get_content(MetadataMode.NONE) == "Apples are green."
    assert hit.node.get_content(MetadataMode.LLM).startswith("file_path=>/data/fruit.txt\n\n")
    assert hit.node.excluded_embed_metadata_keys[:2] == ["file_path", "file_size"]
    # the same edit from LlamaIndex, settings and all, is the version stored: nothing new
    edited = _document()
    edited.set_content("Apples are green.")
    encoded: list[int] = []
    encode = tiny_encoder.encode_tokenized
    monkeypatch.setattr(
        tiny_encoder, "encode_tokenized", lambda ids, **kw: encoded.append(1) or encode(ids, **kw)
    )
    assert retriever.add_documents([edited]) == ["fruit"]
    assert not encoded
