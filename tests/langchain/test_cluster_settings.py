"""A Qdrant server's cluster settings (shards, replication, quantisation, write batches) reach
the index from every LangChain constructor, and are refused without a server."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit.store import ClusterSettings

#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
TEXTS = ["Berlin is the capital of Germany.", "Oxygen has atomic number 8.", "Paris is old."]
SETTINGS = ClusterSettings(
    shard_number=2, quantization="scalar", write_batch_size=1, write_parallelism=2
)


def _check_arrived(index: Any, server: Server, added: int) -> None:
    _, requests, state = server
    assert index.store.cluster == SETTINGS
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    assert create["shard_number"] == 2
    assert create["vectors"]["dense"]["quantization_config"] == {
        "scalar": {"type": "int8", "always_ram": True}
    }
    writes = [b for m, p, b in requests if m == "PUT" and p == "/collections/c/points"]
    assert [len(b["points"]) for b in writes] == [1] * added  # write_batch_size
    assert len(state["points"]) == added


@pytest.mark.parametrize("build", ["from_texts", "from_documents", "open"])
def test_vector_store_constructors_pass_them(
    build: str, qdrant_recorder: Server, tiny_encoder: Any
) -> None:
    """``M3VectorStore.open`` (and so ``from_texts`` / ``from_documents``) took no cluster
    settings: ``cluster=`` was refused as an unexpected keyword, so a collection created from
    LangChain had one shard and no quantisation, and was written one request at a time."""
    args = {"url": qdrant_recorder[0], "collection": "c", "cluster": SETTINGS}
    if build == "open":
        store = M3VectorStore.open(tiny_encoder, **args)
        store.add_texts(TEXTS)
    elif build == "from_texts":
        store = M3VectorStore.from_texts(TEXTS, tiny_encoder, **args)
    else:
        from langchain_core.documents import Document

        docs = [Document(t) for t in TEXTS]
        store = M3VectorStore.from_documents(docs, tiny_encoder, **args)
    with store:
        _check_arrived(store.index, qdrant_recorder, len(TEXTS))


@pytest.mark.parametrize("build", ["from_texts", "from_documents"])
def test_retriever_constructors_pass_them(
    build: str, qdrant_recorder: Server, tiny_encoder: Any
) -> None:
    args = {"url": qdrant_recorder[0], "collection": "c", "cluster": SETTINGS}
    if build == "from_texts":
        retriever = M3Retriever.from_texts(TEXTS, tiny_encoder, **args)
    else:
        from langchain_core.documents import Document

        retriever = M3Retriever.from_documents([Document(t) for t in TEXTS], tiny_encoder, **args)
    try:
        _check_arrived(retriever.index, qdrant_recorder, len(TEXTS))
    finally:
        retriever.index.close()


def test_without_a_server_they_are_refused(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match="cluster settings .* apply to a Qdrant server"):
        M3VectorStore.from_texts(TEXTS, tiny_encoder, cluster=SETTINGS)
    with pytest.raises(ValueError, match="cluster settings .* apply to a Qdrant server"):
        M3Retriever.from_texts(TEXTS, tiny_encoder, cluster=SETTINGS)
