"""A Qdrant server's connection settings (timeout, request size limit) are a field of
``M3VectorStore``, saved by ``to_dict`` (the API key is not), and reach the index from the
store and the retriever; without a server they are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_index.core.schema import TextNode

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit.store import ConnectionSettings, M3Index

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")

#: The ``qdrant_with_key`` / ``qdrant_recorder`` fixtures (tests/conftest.py).
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
KEY = "right-key"  # what the qdrant_with_key fixture accepts
SETTINGS = ConnectionSettings(timeout=11, max_request_mb=1)


def _check_arrived(index: M3Index, client_kwargs: list[dict[str, Any]]) -> None:
    assert index.store.connection == SETTINGS
    assert index.store._backend.request_bytes == 1024 * 1024  # writes are split to fit it
    assert client_kwargs[-1]["timeout"] == 11


def test_the_field_reaches_the_index_and_is_saved_without_the_key(
    qdrant_with_key: Server, client_kwargs: list[dict[str, Any]], tiny_embedding: M3Embedding
) -> None:
    """``M3VectorStore`` had no such field (``extra="forbid"`` refused it): a server's timeout
    or request limit could not be set, nor saved with the store's ``to_dict``."""
    url, _, state = qdrant_with_key
    args = {"url": url, "collection_name": "c"}
    with M3VectorStore(tiny_embedding, api_key=KEY, connection=SETTINGS, **args) as store:
        _check_arrived(store.client, client_kwargs)
        store.add([TextNode(text="Berlin is the capital of Germany.", id_="berlin")])
        saved = store.to_json()
    assert KEY not in saved
    assert json.loads(saved)["connection"] == {"timeout": 11, "max_request_mb": 1}
    client_kwargs.clear()
    with M3VectorStore.from_json(saved, model=tiny_embedding, api_key=KEY) as again:
        _check_arrived(again.client, client_kwargs)
        assert again.client.count() == 1
    assert len(state["points"]) == 1


def test_a_store_on_an_opened_index_records_them(
    qdrant_recorder: Server, client_kwargs: list[dict[str, Any]], tiny_embedding: M3Embedding
) -> None:
    url = qdrant_recorder[0]
    with M3Index.open(tiny_embedding.encoder, url=url, collection="c", connection=SETTINGS) as ix:
        store = M3VectorStore.from_index(ix)
        data = json.loads(store.to_json())
        assert data["connection"] == {"timeout": 11, "max_request_mb": 1}
        assert M3VectorStore.from_dict(data, index=ix).connection == SETTINGS
        with pytest.raises(ValueError, match="do not also give connection=.*other server"):
            M3VectorStore(index=ix, connection=ConnectionSettings(timeout=99))


def test_the_retriever_passes_them(
    qdrant_recorder: Server, client_kwargs: list[dict[str, Any]], tiny_embedding: M3Embedding
) -> None:
    url = qdrant_recorder[0]
    retriever = M3Retriever.open(tiny_embedding, url=url, collection="c", connection=SETTINGS)
    with retriever:
        _check_arrived(retriever.index, client_kwargs)


def test_without_a_server_or_with_a_bad_value_they_are_refused(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    with pytest.raises(ValueError, match=r"\(timeout=11, max_request_mb=1\) apply to a Qdrant"):
        M3VectorStore(tiny_embedding, connection=SETTINGS)
    with pytest.raises(ValueError, match=r"\(timeout=11, max_request_mb=1\) apply to a Qdrant"):
        M3Retriever.open(tiny_embedding, connection=SETTINGS)
    with pytest.raises(ValueError, match="timeout must be a whole number of seconds >= 1"):
        M3VectorStore(tiny_embedding, url=qdrant_recorder[0], connection={"timeout": 0})


def test_a_misspelt_saved_setting_is_refused(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    """pydantic dropped a key the settings do not have: ``max_request_size_mb`` (Qdrant's
    name) left the limit at 32 MiB, silently."""
    with pytest.raises(ValueError, match=r"unknown connection settings \['max_request_size_mb'\]"):
        M3VectorStore(tiny_embedding, url=qdrant_recorder[0], connection={"max_request_size_mb": 8})
