"""``force_recreate=True``, langchain-qdrant's option: the collection is dropped, then made
again for the model given (another model's, another size's vectors included).

Before, ``M3VectorStore.from_texts(..., force_recreate=True)`` was a ``TypeError`` and a
collection of another model could only be cleared by hand (``clear()`` keeps the vectors'
sizes).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3SparseEmbeddings, M3VectorStore
from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.errors import CollectionNotFoundError, FingerprintMismatchError, StoreConnectionError
from m3kit.late_chunking import LateChunker
from m3kit.store import ClusterSettings, Fusion, M3Index, drop_collection


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_force_recreate_starts_the_collection_again_for_another_model(
    tiny_encoder: M3Encoder,
    other_tiny_encoder: M3Encoder,
    minilm_encoder: M3Encoder,
    tmp_path: Path,
    backend: str,
) -> None:
    where = {"location": str(tmp_path / "db"), "collection_name": "docs", "backend": backend}
    M3VectorStore.from_texts(["Apples are red.", "Sky is blue."], tiny_encoder, **where).close()
    with pytest.raises(FingerprintMismatchError):
        M3VectorStore.from_texts(["Grass is green."], other_tiny_encoder, **where)
    with M3VectorStore.from_texts(
        ["Grass is green."], other_tiny_encoder, force_recreate=True, **where
    ) as store:
        assert [d.page_content for d in store.similarity_search("green", k=5)] == [
            "Grass is green."
        ]
    # another size of vectors (MiniLM: 384-d, dense only), through the retriever
    with M3Retriever.from_texts(
        ["Roses are red."], minilm_encoder, force_recreate=True, **where
    ) as retriever:
        assert [d.page_content for d in retriever.invoke("red")] == ["Roses are red."]
        assert retriever.index.store.schema.dense_dim == 384


def test_drop_collection_leaves_other_collections_and_refuses_an_open_one(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    folder = tmp_path / "db"
    for name in ("docs", "docs-v2"):
        with M3Index.open(tiny_encoder, folder, collection=name) as index:
            index.add_texts(["Apples are red."])
    with (
        M3Index.open(tiny_encoder, folder, collection="docs"),
        pytest.raises(StoreConnectionError, match="another M3Store or process has it open"),
    ):
        drop_collection(folder, collection="docs")
    assert drop_collection(folder, collection="docs") is True
    assert drop_collection(folder, collection="docs") is False
    assert not (folder / "docs").exists()
    with M3Index.open(tiny_encoder, folder, collection="docs-v2") as index:
        assert index.count() == 1


@pytest.mark.parametrize(
    "call",
    [
        {"create": False},
        {"cluster": ClusterSettings()},
        {"weights": [1.0]},
        {"fusion": "bogus"},
        {"ids": ["a", "b", "c"]},
        {"retriever": True, "k": 0},
        {"retriever": True, "ids": ["a", "b", "c"]},
        {"retriever": True, "fusion": "rrf", "weights": [1.0, 1.0, 1.0]},
        # refused by the store's or the retriever's constructor, or by the write
        {"chunking": "yes"},
        {"late_chunking": 5},
        {"batch_size": 0},
        {"ids": ["a", "a"]},
        {"metadatas": [{"a": object()}, {}]},
        {"parent_id_key": "p", "metadatas": [{"p": 1.5}, {}]},
        {"retriever": True, "chunking": "yes"},
        {"retriever": True, "filter": 5},
        {"retriever": True, "score_threshold": "x"},
        {"retriever": True, "ids": ["a", "a"]},
        {"retriever": True, "metadatas": [{"a": object()}, {}]},
        {"encoder": "minilm", "rerank": True},
        {"encoder": "minilm", "retriever": True, "rerank": True},
        # a late chunker of another model (the last one's, re-indexing with a new one)
        {"late_chunking": "other"},
        {"retriever": True, "late_chunking": "other"},
        # a splitter's cut refused before anything is encoded (tokenised only)
        {"chunking": "one-span", "texts": ["word " * 9000, "Sea is blue."]},
        {"retriever": True, "chunking": "one-span", "texts": ["word " * 9000, "Sea is blue."]},
        {"chunking": "strings"},
    ],
    ids=lambda c: "-".join(f"{k}" for k in c),
)
def test_a_refused_call_drops_nothing(
    tiny_encoder: M3Encoder,
    other_tiny_encoder: M3Encoder,
    minilm_encoder: M3Encoder,
    tmp_path: Path,
    call: dict[str, Any],
) -> None:
    """A review's cases: each was refused after the drop (the collection lost, or emptied).

    The later ones (arguments the store or retriever checks as it is built, documents its
    write refuses) are refused by a rehearsal on an empty in-memory index.
    """
    where = {"location": str(tmp_path / "db"), "collection_name": "docs"}
    M3VectorStore.from_texts(["Apples are red.", "Sky is blue."], tiny_encoder, **where).close()
    options = dict(call)
    cls: Any = M3Retriever if options.pop("retriever", False) else M3VectorStore
    encoder = minilm_encoder if options.pop("encoder", None) == "minilm" else tiny_encoder
    if options.get("late_chunking") == "other":
        options["late_chunking"] = LateChunker(other_tiny_encoder)
    splitters = {"one-span": lambda t: [(0, len(t))], "strings": lambda t: [t]}
    if options.get("chunking") in splitters:
        options["chunking"] = NaiveChunker(tiny_encoder, splitter=splitters[options["chunking"]])
    texts = options.pop("texts", ["Grass is green.", "Sea is blue."])
    with pytest.raises((ValueError, TypeError, CollectionNotFoundError)):
        cls.from_texts(texts, encoder, force_recreate=True, **where, **options)
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="docs") as index:
        assert index.count() == 2


@pytest.mark.parametrize("run", ["sync", "async", "retriever"])
def test_documents_given_as_a_generator_are_all_written(
    tiny_encoder: M3Encoder, tmp_path: Path, run: str
) -> None:
    """A review's case: the rehearsal read a generator (``loader.lazy_load()``) to its end,
    so the real write got nothing: the collection came back empty, without an error."""
    where = {"location": str(tmp_path / "db"), "collection_name": "docs"}
    M3VectorStore.from_texts(["Apples are red."], tiny_encoder, **where).close()
    texts = ["Grass is green.", "Sea is blue.", "Sun is hot."]
    docs = (Document(page_content=t) for t in texts)
    if run == "async":
        store: Any = asyncio.run(
            M3VectorStore.afrom_documents(docs, tiny_encoder, force_recreate=True, **where)
        )
    else:
        cls: Any = M3Retriever if run == "retriever" else M3VectorStore
        store = cls.from_documents(docs, tiny_encoder, force_recreate=True, **where)
    with store:
        assert store.index.count() == 3


def test_the_rehearsal_repeats_no_warning(
    calibrated_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review's case: the rehearsal's own indexes logged the calibration's warning again,
    twice, naming collection 'm3kit', which the user never made."""
    embedding = M3SparseEmbeddings.from_encoder(calibrated_encoder, sparse_top_k=8)
    where = {"location": str(tmp_path / "db"), "collection_name": "docs"}
    M3VectorStore.from_texts(["Apples are red."], embedding, **where).close()
    for force_recreate in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="m3kit"):
            M3VectorStore.from_texts(
                ["Grass is green."], embedding, force_recreate=force_recreate, **where
            ).close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "collection 'docs'" in warnings[0], warnings
        assert "m3kit" not in " ".join(r.getMessage() for r in caplog.records).replace(
            "m3kit calibrate", ""
        )


@pytest.mark.parametrize("cls", [M3VectorStore, M3Retriever], ids=["store", "retriever"])
def test_ids_of_another_length_create_no_collection(
    tiny_encoder: M3Encoder, tmp_path: Path, cls: Any
) -> None:
    """A review of this file's change: without ``force_recreate`` the length check had moved
    into the write, so the refused call first created the collection, left empty."""
    with pytest.raises(ValueError, match="2 documents but 3 ids"):
        cls.from_texts(
            ["a", "b"],
            tiny_encoder,
            ids=["1", "2", "3"],
            location=tmp_path / "db",
            collection_name="new",
        )
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())


def test_the_rehearsal_refuses_an_oversized_chunk_as_the_chunker_does(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """The rehearsal wrote its own message (advising late chunking to a late chunker too):
    now the chunker's, the one the real write would raise."""
    where = {"location": str(tmp_path / "db"), "collection_name": "docs"}
    M3VectorStore.from_texts(["Apples are red."], tiny_encoder, **where).close()
    chunker = NaiveChunker(tiny_encoder, splitter=lambda t: [(0, len(t))])
    texts = ["Sea is blue.", "word " * 9000]
    with pytest.raises(ValueError) as by_chunk:
        chunker.chunk(texts)
    with pytest.raises(ValueError) as rehearsed:
        M3VectorStore.from_texts(
            texts, tiny_encoder, chunking=chunker, force_recreate=True, **where
        )
    assert str(rehearsed.value) == str(by_chunk.value)
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="docs") as index:
        assert index.count() == 1


def test_from_documents_rehearses_once(
    tiny_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's construction and its writes are rehearsed together, once: from_documents
    rehearsed its writes, then open rehearsed the construction again (two in-memory indexes,
    two sets of INFO lines)."""
    where = {"location": str(tmp_path / "db"), "collection_name": "docs"}
    M3VectorStore.from_texts(["Apples are red."], tiny_encoder, **where).close()
    with (
        caplog.at_level(logging.INFO, logger="langchain_m3"),
        M3VectorStore.from_texts(
            ["Grass is green."], tiny_encoder, force_recreate=True, fusion="rrf", **where
        ) as store,
    ):
        assert [d.page_content for d in store.similarity_search("green", k=5)] == [
            "Grass is green."
        ]
        assert store.fusion is Fusion.RRF
    rehearsals = [r for r in caplog.records if "rehearsed in memory" in r.getMessage()]
    assert len(rehearsals) == 1, [r.getMessage() for r in caplog.records]
    # open's arguments are checked as open checks them (a misspelt one is a TypeError)
    with pytest.raises(TypeError, match="colection"):
        M3VectorStore.from_texts(["Grass is green."], tiny_encoder, colection="docs")
