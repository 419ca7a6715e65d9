"""Both adapters refuse one item where a list of them is expected, naming the mistake.

A pydantic ``Document`` or node iterates as its field pairs, so one passed alone was refused
as "documents[0] is tuple" (or failed with ``AttributeError: 'tuple' object has no attribute
'metadata'``); one metadata dict for ``metadatas`` failed with ``KeyError: 0``; and a list
for LlamaIndex's ``ref_doc_id`` with ``TypeError: unhashable type: 'list'``. Nothing is
written in any case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from m3kit import M3Encoder


def _calls(enc: M3Encoder) -> dict[str, tuple[Callable[[], Any], Callable[[], int], str]]:
    from langchain_core.documents import Document as LcDocument
    from llama_index.core import Document as LiDocument
    from llama_index.core.schema import TextNode

    import langchain_m3 as lc
    import llamaindex_m3 as li

    lc_store = lc.M3VectorStore.open(enc)
    li_retriever = li.M3Retriever.open(enc)
    li_store = li.M3VectorStore(index=li_retriever.index)
    return {
        "lc metadatas": (
            lambda: lc_store.add_texts(["t"], metadatas={"lang": "en"}),  # type: ignore[arg-type]
            lc_store.index.count,
            r"metadatas is a list of dicts, one per text; wrap a single one as \[dict\]",
        ),
        "lc documents": (
            lambda: lc_store.add_documents(LcDocument("t")),  # type: ignore[arg-type]
            lc_store.index.count,
            r"documents is a list of Documents; wrap a single one as \[document\]",
        ),
        "li nodes": (
            lambda: li_store.add(TextNode(text="t")),  # type: ignore[arg-type]
            li_retriever.index.count,
            r"nodes is a list of nodes; wrap a single one as \[node\]",
        ),
        "li retriever documents": (
            lambda: li_retriever.add_documents(LiDocument(text="t")),  # type: ignore[arg-type]
            li_retriever.index.count,
            r"documents is a list of Documents; wrap a single one as \[document\]",
        ),
        "li ref_doc_id": (
            lambda: li_store.delete(["doc-1"]),  # type: ignore[arg-type]
            li_retriever.index.count,
            r"ref_doc_id: ids are strings, got \['doc-1'\]",
        ),
    }


def test_one_item_where_a_list_is_expected_is_refused_by_name(tiny_encoder: M3Encoder) -> None:
    for name, (call, count, message) in _calls(tiny_encoder).items():
        with pytest.raises(TypeError, match=message):
            call()
        assert count() == 0, name
