"""A Qdrant server's connection settings (timeout, request size limit) reach the index from
every LangChain constructor, and are refused without a server."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit.store import ConnectionSettings

#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
TEXTS = ["Berlin is the capital of Germany.", "Oxygen has atomic number 8."]
SETTINGS = ConnectionSettings(timeout=11, max_request_mb=1)


def _check_arrived(index: Any, client_kwargs: list[dict[str, Any]]) -> None:
    assert index.store.connection == SETTINGS
    assert index.store._backend.request_bytes == 1024 * 1024  # writes are split to fit it
    assert client_kwargs[-1]["timeout"] == 11


@pytest.mark.parametrize("build", ["from_texts", "from_documents", "open"])
def test_vector_store_constructors_pass_them(
    build: str,
    qdrant_recorder: Server,
    client_kwargs: list[dict[str, Any]],
    tiny_encoder: Any,
) -> None:
    """``M3VectorStore.open`` (and so ``from_texts`` / ``from_documents``) took no timeout:
    ``connection=`` was refused as an unexpected keyword."""
    url, _, state = qdrant_recorder
    args = {"url": url, "collection": "c", "connection": SETTINGS}
    if build == "open":
        store = M3VectorStore.open(tiny_encoder, **args)
    elif build == "from_texts":
        store = M3VectorStore.from_texts(TEXTS, tiny_encoder, **args)
    else:
        from langchain_core.documents import Document

        docs = [Document(t) for t in TEXTS]
        store = M3VectorStore.from_documents(docs, tiny_encoder, **args)
    with store:
        _check_arrived(store.index, client_kwargs)
    assert len(state["points"]) == (0 if build == "open" else 2)


def test_retriever_constructors_pass_them(
    qdrant_recorder: Server, client_kwargs: list[dict[str, Any]], tiny_encoder: Any
) -> None:
    url, _, state = qdrant_recorder
    retriever = M3Retriever.from_texts(
        TEXTS, tiny_encoder, url=url, collection="c", connection=SETTINGS
    )
    try:
        _check_arrived(retriever.index, client_kwargs)
    finally:
        retriever.index.close()
    assert len(state["points"]) == 2


def test_without_a_server_they_are_refused(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match=r"\(timeout=11, max_request_mb=1\) apply to a Qdrant"):
        M3VectorStore.from_texts(TEXTS, tiny_encoder, connection=SETTINGS)
    with pytest.raises(ValueError, match=r"\(timeout=11, max_request_mb=1\) apply to a Qdrant"):
        M3Retriever.from_texts(TEXTS, tiny_encoder, connection=SETTINGS)
