"""An index (or an adapter holding one) dropped without ``close()`` releases its folder at once.

The store held its index's ``check_encoder`` (a bound method), and the index held the store: a
reference cycle, so a dropped index kept its folder locked (and a ``:memory:`` shard's native
threads and temp folder) until a cyclic garbage collection happened to run, and reopening the
folder failed with a lock error. Retrievers close only an index they opened themselves.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.store import Backend, M3Index


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    """Only reference counting frees objects (what a busy process sees between GC passes)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("backend", [Backend.EDGE, Backend.CLIENT])
def test_a_dropped_index_unlocks_its_folder(
    tiny_encoder: M3Encoder, tmp_path: Path, backend: Backend, no_cycle_collection: None
) -> None:
    index = M3Index.open(tiny_encoder, tmp_path, backend=backend)
    index.add_texts(["Berlin is the capital of Germany."], doc_ids=["b"])
    del index
    with M3Index.open(tiny_encoder, tmp_path, backend=backend) as again:
        assert again.count() == 1


def test_dropped_adapters_unlock_their_folders(
    tiny_encoder: M3Encoder, tmp_path: Path, no_cycle_collection: None
) -> None:
    import langchain_m3 as lc
    import llamaindex_m3 as li

    text = ["Berlin is the capital of Germany."]
    retriever = lc.M3Retriever.from_texts(text, tiny_encoder, location=tmp_path / "lc")
    del retriever
    store = li.M3VectorStore(
        li.M3Embedding.from_encoder(tiny_encoder), location=str(tmp_path / "li")
    )
    del store
    for folder in ("lc", "li"):
        M3Index.open(tiny_encoder, tmp_path / folder).close()


def test_a_retriever_closes_only_an_index_it_opened(tiny_encoder: M3Encoder) -> None:
    """Closing LlamaIndex's ``M3Retriever(index)`` closed the index an ``M3VectorStore``
    built with ``from_index`` still searched (``RuntimeError: ... is closed``)."""
    import langchain_m3 as lc
    import llamaindex_m3 as li

    with M3Index.open(tiny_encoder, ":memory:") as index:
        index.add_texts(["Berlin is the capital of Germany."], doc_ids=["b"])
        store = li.M3VectorStore.from_index(index)
        with li.M3Retriever(index) as retriever:
            assert retriever.retrieve("Berlin")
        with lc.M3Retriever(index=index) as lc_retriever:
            assert lc_retriever.invoke("Berlin")
        assert index.search("Berlin", k=1)  # still open for its owner and the store
        assert store.client is index
    with li.M3Retriever.open(tiny_encoder) as opened:  # opened here: closed here
        owned = opened.index
    with pytest.raises(RuntimeError, match="closed"):
        owned.search("Berlin", k=1)
    with lc.M3Retriever.from_texts(["Rome is in Italy."], tiny_encoder) as lc_opened:
        lc_owned = lc_opened.index
    with pytest.raises(RuntimeError, match="closed"):
        lc_owned.search("Rome", k=1)
