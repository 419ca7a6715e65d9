"""Reindexing a collection ``M3VectorStore`` wrote re-encodes the text its nodes were encoded on.

A node is encoded on what the embedding model sees (its text with its metadata lines, after
the embedding's ``text_instruction``), not on its stored text: a reindex with another model
must give the vectors a fresh write with that model gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index, M3Store
from m3kit.store.schema import CHUNK_ID, CHUNKING, ENCODED_TEXT, EXTRA
from tests.reliability.killing import index_points

INSTRUCTION = "passage: "
TEXT = "Berlin is the capital of Germany."


def _document() -> Document:
    return Document(text=TEXT, id_="d0", metadata={"title": "Capitals of Europe", "year": 1990})


def _write(encoder: M3Encoder, folder: Path) -> None:
    """The document through VectorStoreIndex + M3VectorStore, with an instruction."""
    embedding = M3Embedding.from_encoder(encoder, text_instruction=INSTRUCTION)
    with M3Index.open(encoder, folder, collection="c", backend="edge") as index:
        store = M3VectorStore(index=index, text_instruction=INSTRUCTION)
        VectorStoreIndex.from_documents(
            [_document()],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embedding,
        )


def test_reindex_encodes_what_the_node_writer_encoded(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(enc_a, tmp_path / "old")
    _write(enc_b, tmp_path / "fresh")
    with (
        M3Index.open(enc_b, tmp_path / "old", collection="c", backend="edge", reindex=True) as re,
        M3Index.open(enc_b, tmp_path / "fresh", collection="c", backend="edge") as fresh,
    ):
        got, want = index_points(re), index_points(fresh)
        assert got.keys() == want.keys() and len(want) == 1
        ((payload, vectors),) = got.values()
        ((fresh_payload, fresh_vectors),) = want.values()
        np.testing.assert_allclose(vectors["dense"], fresh_vectors["dense"], atol=1e-5)
        assert vectors["sparse"][0] == fresh_vectors["sparse"][0]
        np.testing.assert_allclose(vectors["sparse"][1], fresh_vectors["sparse"][1], atol=1e-5)
        assert vectors["colbert"].shape == fresh_vectors["colbert"].shape
        np.testing.assert_allclose(vectors["colbert"], fresh_vectors["colbert"], atol=2e-3)
        # the node's text, metadata lines and the instruction were encoded, and still are
        assert payload[ENCODED_TEXT].startswith(INSTRUCTION)
        assert "Capitals of Europe" in payload[ENCODED_TEXT] and TEXT in payload[ENCODED_TEXT]
        writer_only = (CHUNK_ID, EXTRA, CHUNKING)  # node ids are drawn per parse
        assert {k: v for k, v in payload.items() if k not in writer_only} == {
            k: v for k, v in fresh_payload.items() if k not in writer_only
        }
    # the reindexed document is the stored version for the new model: written again, nothing
    # is re-encoded or rewritten
    upserts: list[object] = []
    monkeypatch.setattr(M3Store, "upsert", lambda self, records, **kw: upserts.append(records))
    _write(enc_b, tmp_path / "old")
    assert upserts == []


def test_a_cut_change_keeps_unpositioned_nodes(
    enc_a: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node stored without character positions kept none after a sparse cut change: it came
    back from ``get_nodes`` with ``start_char_idx=0`` / ``end_char_idx=len(text)``, and adding
    it again unchanged re-encoded it (its stored identity no longer matched)."""
    from llama_index.core.schema import TextNode

    def node() -> TextNode:
        return TextNode(text=TEXT, id_="n1", metadata={"year": 1990})

    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        M3VectorStore(index=index).add([node()])
    with M3Index.open(
        enc_a, tmp_path, collection="c", backend="edge", sparse_top_k=2, reindex=True
    ) as index:
        store = M3VectorStore(index=index)
        ((back,),) = [store.get_nodes(node_ids=["n1"])]
        assert (back.start_char_idx, back.end_char_idx) == (None, None)
        upserts: list[object] = []
        monkeypatch.setattr(M3Store, "upsert", lambda self, records, **kw: upserts.append(1))
        store.add([node()])
        assert upserts == []
