"""Points another program wrote into an m3kit collection (qdrant-client, stock langchain-qdrant
or LlamaIndex on the same server collection), or rewrote in place: said at open, read without
a crash, repaired by adding the document again, refused by a reindex (m3kit.store.foreign_points).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index, M3Store
from m3kit.store.foreign_points import DELETE_FOREIGN, foreign_points
from m3kit.store.schema import point_id

from .conftest import WHOLE, open_c

FOREIGN = str(uuid.uuid4())
NODE = str(uuid.uuid4())  # a stock LlamaIndex node: its source document's id as "doc_id"


def _client(index: M3Index) -> QdrantClient:
    return index.store._backend._client  # type: ignore[attr-defined,no-any-return]


def _write_foreign(index: M3Index, enc: M3Encoder, point: str | int = FOREIGN, **keys: str) -> None:
    """What stock LlamaIndex / langchain-qdrant write into the same collection: dense + sparse,
    no ColBERT vector, no doc_hash, their own keys at the top of the payload."""
    out = enc.encode(["Oxygen is a chemical element with symbol O."], heads=["dense", "sparse"])
    sparse = out.sparse[0]
    _client(index).upsert(
        "c",
        [
            models.PointStruct(
                id=point,
                vector={
                    "dense": out.dense[0].tolist(),
                    "sparse": models.SparseVector(
                        indices=sparse.indices.tolist(), values=sparse.values.tolist()
                    ),
                },
                payload={
                    "page_content": "Oxygen is a chemical element with symbol O.",
                    "metadata": {"source": "stock"},
                    "start": "00:01:02",  # a transcript's time stamp, at m3kit's key
                    "end": "00:01:09",
                    **keys,
                },
            )
        ],
    )


def test_a_foreign_point_is_said_at_open_and_read_without_a_crash(
    enc_a: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
        _write_foreign(index, enc_a, NODE, doc_id="transcript-7")
    with caplog.at_level(logging.WARNING), open_c(enc_a, tmp_path, "client") as index:
        found = foreign_points(index.store)
        assert (found.without_document, found.without_vector) == (2, {"colbert": 2})
        # before: int("00:01:02") raised a bare ValueError from every read of the point
        hits = index.search("chemical element oxygen", k=5, rerank=False)
        store = M3VectorStore(index)
        for point in (FOREIGN, NODE):
            mine = [h for h in hits if h.id == point]
            assert mine and mine[0].doc_id == point and mine[0].start is None
            assert mine[0].text.startswith("Oxygen") and mine[0].metadata == {"source": "stock"}
            # the id a search gives it (before: get_by_ids found nothing, delete deleted nothing)
            assert [d.id for d in store.get_by_ids([mine[0].doc_id])] == [point]
            index.delete([mine[0].doc_id])
        assert index.count() == len(WHOLE) and not foreign_points(index.store)
    warned = caplog.text
    assert "2 point(s) without m3kit's doc_id / doc_hash" in warned, warned
    assert "2 point(s) without the 'colbert' vector" in warned, warned


def test_a_document_that_lost_a_vector_is_written_again(enc_a: M3Encoder, tmp_path: Path) -> None:
    """qdrant-client ``delete_vectors`` of one chunk's ColBERT vector: adding the unchanged
    document again skipped it as stored (the version check read the payload only), so it
    stayed out of every ColBERT-reranked search for good."""
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _client(index).delete_vectors(
            "c", vectors=["colbert"], points=models.PointIdsList(points=[point_id("w2", 0)])
        )
        assert [h.doc_id for h in index.search("capital of Germany", k=3)].count("w2") == 0
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        assert foreign_points(index.store).without_vector == {}
        assert index.search("capital of Germany", k=3)[0].doc_id == "w2"


def test_a_foreign_point_added_again_as_read_is_replaced_not_duplicated(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """Reading a foreign point back and adding it again (core and LangChain) moves it onto
    m3kit's layout. Before, the write stored it beside the old point: the same text twice in
    a search, and ``get_by_ids`` returned two documents of one id. Qdrant's integer point
    ids too (a hit carries ``"7"``)."""
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        for point in (FOREIGN, NODE, 7):
            _write_foreign(index, enc_a, point)
        query = "chemical element oxygen"
        hits = {h.id: h for h in index.search(query, k=9, rerank=False)}
        for point in (FOREIGN, "7"):
            hit = hits[point]
            index.add_texts([hit.text], doc_ids=[hit.doc_id], metadatas=[hit.metadata])
        store = M3VectorStore(index)
        store.add_documents(store.get_by_ids([NODE]))
        assert index.count() == len(WHOLE) + 3 and not foreign_points(index.store)
        found = [h.doc_id for h in index.search(query, k=9)]  # ColBERT too
        assert sorted(d for d in found if d in (FOREIGN, NODE, "7")) == sorted([FOREIGN, NODE, "7"])
        assert [d.id for d in store.get_by_ids([FOREIGN, NODE, "7"])] == [FOREIGN, NODE, "7"]
        assert store.get_by_ids([NODE])[0].metadata == {"source": "stock"}


def test_a_replacing_write_interrupted_before_its_deletes_replaces_the_point_at_next_open(
    enc_a: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replace journal's recovery deletes the foreign point a write replaced, as the
    write would have."""
    from m3kit.store.store_writes import StoreWrites

    def interrupted_drop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
        monkeypatch.setattr(StoreWrites, "_drop_stale", interrupted_drop)
        with pytest.raises(KeyboardInterrupt):
            index.add_texts(["Oxygen is a chemical element with symbol O."], doc_ids=[FOREIGN])
        monkeypatch.undo()
        assert index.count() == len(WHOLE) + 2  # the new chunk beside the old point
    with open_c(enc_a, tmp_path, "client") as index:
        assert index.count() == len(WHOLE) + 1 and not foreign_points(index.store)


def test_a_reindex_refuses_points_it_cannot_rebuild(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    """A reindex to B re-encoded m3kit's documents, left the foreign point's A vectors as
    they were and recorded B: B's queries were then compared with A's vectors."""
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
        record = index.store.collection_metadata()
    with pytest.raises(ValueError, match=r"cannot re-encode 1 point\(s\)") as err:
        open_c(enc_b, tmp_path, "client", reindex=True)
    assert DELETE_FOREIGN in str(err.value)
    shape = {"dense_dim": 32, "colbert_dim": 32, "sparse": True}
    with M3Store.open(tmp_path, collection="c", backend="client", **shape) as store:
        assert store.collection_metadata() == record  # nothing written
        eval(DELETE_FOREIGN, {"store": store, "models": models})  # the way out it names
        assert store.count() == len(WHOLE)
    with open_c(enc_b, tmp_path, "client", reindex=True) as index:
        assert index.reencoded == len(WHOLE)


def test_a_reindex_with_the_same_encoder_leaves_foreign_points_be(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """A reindex that changes no encoder (an idempotent ``m3kit index --reindex``) re-encodes
    nothing of theirs: it is not refused (the refusal named an "old encoder" there was not)."""
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
    with open_c(enc_a, tmp_path, "client", reindex=True) as index:
        assert index.reencoded == 0 and index.count() == len(WHOLE) + 1


def test_the_open_check_is_bounded_and_never_fails_the_open(
    enc_a: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from m3kit.store import foreign_points as module

    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
    monkeypatch.setattr(module, "OPEN_CHECK_MAX_POINTS", len(WHOLE))
    with caplog.at_level(logging.INFO, logger=module.__name__), open_c(enc_a, tmp_path, "client"):
        pass
    assert "are not counted at open" in caplog.text and "without m3kit" not in caplog.text
    monkeypatch.undo()
    caplog.clear()

    def timed_out(store: M3Store) -> None:
        raise TimeoutError("the server took too long")

    monkeypatch.setattr(module, "foreign_points", timed_out)
    with caplog.at_level(logging.WARNING), open_c(enc_a, tmp_path, "client") as index:
        assert index.count() == len(WHOLE) + 1  # opened all the same
    assert "could not count the points another program wrote" in caplog.text


def test_a_resumed_same_encoder_reindex_leaves_foreign_points_be(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """A same-encoder reindex interrupted (its record pending, to the same encoder) was refused
    when resumed, over the points its first run had agreed to leave alone."""
    with open_c(enc_a, tmp_path, "client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        _write_foreign(index, enc_a)
        meta = index.store.collection_metadata()
        index.store.set_collection_metadata({**meta, "reindex_to": meta["fingerprint"]})
    with open_c(enc_a, tmp_path, "client", reindex=True) as index:
        assert "reindex_to" not in index.store.collection_metadata()
        assert index.count() == len(WHOLE) + 1


def test_a_stock_layout_store_reads_through_a_same_encoder_reindex(enc_a: M3Encoder) -> None:
    """The adapters' M3QdrantVectorStore re-checks the record as it searches: a reindex to the
    same encoder under way (its vectors stay in one space) was refused as an interrupted
    reindex between two encoders."""
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store.stock_record import _indexed_by

    fp = encoder_fingerprint(enc_a).to_dict()
    assert _indexed_by("c", {"fingerprint": fp, "reindex_to": fp}) is not None
