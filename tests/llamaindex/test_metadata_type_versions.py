"""A LlamaIndex document whose metadata changes only in type (``"2024"`` -> ``2024``) is a
new version in ``M3VectorStore``: its nodes replace the stored ones.

LlamaIndex's ``Document.hash`` reads each metadata value as ``str(value)``, so ``{"year":
"2024"}`` and ``{"year": 2024}`` hash alike. The store took that hash alone as the document's
version: re-inserting the document with the corrected type added its node beside the stored
one, so a search returned the text twice and a filter on the old value still found it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from llamaindex_m3 import M3Embedding, M3VectorStore

TEXT = "Berlin is the capital of Germany."


def _filters(key: str, value: object, operator: str = "==") -> MetadataFilters:
    return MetadataFilters(
        filters=[MetadataFilter(key=key, value=value, operator=FilterOperator(operator))]
    )


@pytest.mark.parametrize("backend", ["edge", "client"])
@pytest.mark.parametrize(
    ("before", "after"),
    [("2024", 2024), (1, "1"), (None, "None"), (["a"], "['a']"), (1, 1.0)],
    ids=["str-to-int", "int-to-str", "none-to-str", "list-to-str", "int-to-float"],
)
def test_a_metadata_type_change_replaces_the_stored_nodes(
    tiny_embedding: M3Embedding, tmp_path: Path, backend: str, before: object, after: object
) -> None:
    old = Document(text=TEXT, id_="berlin", metadata={"year": before})
    new = Document(text=TEXT, id_="berlin", metadata={"year": after})
    if str(before) == str(after):  # the case: LlamaIndex's own hash does not tell them apart
        assert old.hash == new.hash
    with M3VectorStore(tiny_embedding, location=str(tmp_path), backend=backend) as store:
        context = StorageContext.from_defaults(vector_store=store)
        for doc in (old, new):
            VectorStoreIndex.from_documents(
                [doc], storage_context=context, embed_model=tiny_embedding
            )
        assert store.client.store.count() == 1
        (node,) = store.get_nodes(filters=_filters("doc_id", "berlin"))
        assert node.metadata["year"] == after and type(node.metadata["year"]) is type(after)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_an_unchanged_document_is_still_skipped(
    tiny_embedding: M3Embedding, tmp_path: Path, backend: str, calls: list[int]
) -> None:
    doc = Document(text=TEXT, id_="berlin", metadata={"year": 2024, "lang": "en"})
    with M3VectorStore(tiny_embedding, location=str(tmp_path), backend=backend) as store:
        context = StorageContext.from_defaults(vector_store=store)
        VectorStoreIndex.from_documents([doc], storage_context=context, embed_model=tiny_embedding)
        calls.clear()
        again = Document(text=TEXT, id_="berlin", metadata={"year": 2024, "lang": "en"})
        VectorStoreIndex.from_documents(
            [again], storage_context=context, embed_model=tiny_embedding
        )
        assert store.client.store.count() == 1
        # the node is embedded by LlamaIndex's embed model (one pass) and, stored unchanged,
        # not encoded by the store
        assert len(calls) <= 1
        (node,) = store.get_nodes(filters=_filters("year", 2020, ">="))
        assert node.metadata["year"] == 2024


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_metadata_with_int_and_str_keys_is_stored_and_skipped_when_unchanged(
    tiny_embedding: M3Embedding, tmp_path: Path, backend: str, calls: list[int]
) -> None:
    """A pandas row with integer column names, nested beside a loader's own key: the core and
    LangChain store it (keys as strings), while every LlamaIndex write failed with
    "TypeError: '<' not supported between instances of 'str' and 'int'" (``sort_keys``)."""
    meta = {"row": {0: "alice", 1: 42, "source": "people.csv"}}
    doc = Document(text=TEXT, id_="people", metadata=meta)
    with M3VectorStore(tiny_embedding, location=str(tmp_path), backend=backend) as store:
        context = StorageContext.from_defaults(vector_store=store)
        VectorStoreIndex.from_documents([doc], storage_context=context, embed_model=tiny_embedding)
        calls.clear()
        again = Document(text=TEXT, id_="people", metadata=meta)
        VectorStoreIndex.from_documents(
            [again], storage_context=context, embed_model=tiny_embedding
        )
        assert store.client.store.count() == 1 and len(calls) <= 1  # not encoded by the store
        (node,) = store.get_nodes(filters=_filters("doc_id", "people"))
        assert node.metadata["row"] == {"0": "alice", "1": 42, "source": "people.csv"}
        # the node as read back, added again, replaces its chunk (its text for the embedding
        # model reads "'0': 'alice'", not "0: 'alice'": encoded again)
        store.add([node])
        assert store.client.store.count() == 1
