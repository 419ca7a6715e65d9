"""A Qdrant server's cluster settings (shards, replication, quantisation, write batches) are a
field of ``M3VectorStore``, saved by ``to_dict``, and reach the index from the store and the
retriever; without a server they are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.schema import TextNode

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit.store import ClusterSettings, M3Index

#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
SETTINGS = ClusterSettings(
    shard_number=2, quantization="scalar", write_batch_size=1, write_parallelism=2
)
SAVED = {
    "shard_number": 2,
    "replication_factor": None,
    "write_consistency_factor": None,
    "on_disk_vectors": False,
    "on_disk_payload": None,
    "quantization": "scalar",
    "write_batch_size": 1,
    "write_parallelism": 2,
}
NODES = [TextNode(text="Berlin is the capital.", id_="a"), TextNode(text="Oxygen.", id_="b")]


def _check_arrived(index: M3Index, server: Server) -> None:
    _, requests, _ = server
    assert index.store.cluster == SETTINGS
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    assert create["shard_number"] == 2
    assert create["vectors"]["dense"]["quantization_config"] == {
        "scalar": {"type": "int8", "always_ram": True}
    }


def _write_sizes(server: Server) -> list[int]:
    writes = [b for m, p, b in server[1] if m == "PUT" and p == "/collections/c/points"]
    return [len(b["points"]) for b in writes]


def test_the_field_reaches_the_index_and_is_saved(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    """``M3VectorStore`` had no such field (``extra="forbid"`` refused it): a collection made
    through LlamaIndex had one shard and no quantisation, written one request at a time."""
    url, _, state = qdrant_recorder
    with M3VectorStore(tiny_embedding, url=url, collection_name="c", cluster=SETTINGS) as store:
        _check_arrived(store.client, qdrant_recorder)
        store.add(NODES)
        saved = store.to_json()
    assert _write_sizes(qdrant_recorder) == [1, 1]  # write_batch_size
    assert json.loads(saved)["cluster"] == SAVED
    with M3VectorStore.from_json(saved, model=tiny_embedding) as again:
        assert again.cluster == SETTINGS and again.client.store.cluster == SETTINGS
        assert again.client.count() == 2
    assert len(state["points"]) == 2


def test_a_store_on_an_opened_index_records_them(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    url = qdrant_recorder[0]
    with M3Index.open(tiny_embedding.encoder, url=url, collection="c", cluster=SETTINGS) as ix:
        store = M3VectorStore.from_index(ix)
        data = json.loads(store.to_json())
        assert data["cluster"] == SAVED
        assert M3VectorStore.from_dict(data, index=ix).cluster == SETTINGS
        with pytest.raises(ValueError, match="do not also give cluster=.*other server settings"):
            M3VectorStore(index=ix, cluster=ClusterSettings(shard_number=3))


@pytest.mark.parametrize("build", ["open", "from_documents"])
def test_the_retriever_passes_them(
    build: str, qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    args = {"url": qdrant_recorder[0], "collection": "c", "cluster": SETTINGS}
    if build == "open":
        retriever = M3Retriever.open(tiny_embedding, **args)
    else:
        docs = [Document(text="Berlin is the capital.", id_="a"), Document(text="Oxygen.")]
        retriever = M3Retriever.from_documents(docs, tiny_embedding, **args)
    with retriever:
        _check_arrived(retriever.index, qdrant_recorder)
    assert _write_sizes(qdrant_recorder) == ([] if build == "open" else [1, 1])


def test_without_a_server_or_with_a_bad_value_they_are_refused(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    with pytest.raises(ValueError, match="cluster settings .* apply to a Qdrant server"):
        M3VectorStore(tiny_embedding, cluster=SETTINGS)
    with pytest.raises(ValueError, match="cluster settings .* apply to a Qdrant server"):
        M3Retriever.open(tiny_embedding, cluster=SETTINGS)
    with pytest.raises(ValueError, match="shard_number must be an integer >= 1"):
        M3VectorStore(tiny_embedding, url=qdrant_recorder[0], cluster={"shard_number": 0})


def test_a_misspelt_saved_setting_is_refused(
    qdrant_recorder: Server, tiny_embedding: M3Embedding
) -> None:
    """A key the settings do not have (``shards``, the CLI's flag name) would be dropped:
    the collection created with one shard, silently."""
    with pytest.raises(ValueError, match=r"unknown cluster settings \['shards'\]"):
        M3VectorStore(tiny_embedding, url=qdrant_recorder[0], cluster={"shards": 4})
