"""An index or store opened before another one changed the collection refuses to go on.

Before, an :class:`M3Index` (or :class:`M3Store`) opened before another object or process
re-encoded the collection with another encoder (``reindex=True``) or changed its sparse cut
went on with what it had opened with: its searches embedded queries with the old encoder (or
cut) and ranked the new vectors, silently wrong; its writes stored old vectors into a
collection recorded as the new encoder's (or cut's), seen only at the next open, once stored.
Now writes re-read the collection's record and searches check the stamps of their hits.

"Another process" is a copy of the store on the same backend here, as in
``test_sparse_cut_stamps``: a store object of its own on the same collection.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index, M3Store, stock_record
from m3kit.store.filters import documents_filter
from m3kit.store.schema import DOC_ID, ENCODER_ID, SPARSE_CUT
from m3kit.store.sparse_cut import SparseCut

from .conftest import CUT_IDS, CUT_TEXTS, open_c, second_write_fails


def _stamps(store: M3Store, key: str) -> dict[str, set[object]]:
    """``{doc_id: the values of payload ``key`` of its points}``."""
    out: dict[str, set[object]] = {}
    for h in store._backend.scroll(None, [DOC_ID, key]):
        out.setdefault(str(h.payload[DOC_ID]), set()).add(h.payload.get(key))
    return out


def _service(encoder: M3Encoder, where: Path, backend: str, **cut: int) -> M3Index:
    """An index of ``encoder`` holding :data:`CUT_TEXTS`, opened before any change."""
    service = open_c(encoder, where, backend, **cut)
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    return service


# -- another object re-encodes the collection with another encoder ---------------------------
def test_a_search_after_another_object_reindexed_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _service(enc_a, tmp_path, backend) as service:
        admin = M3Index(enc_b, copy.copy(service.store), reindex=True)
        assert admin.search("topic 1", k=3)  # the one that reindexed searches on
        with pytest.raises(FingerprintMismatchError) as caught:
            service.search("topic 1", k=3)
        message = str(caught.value)
        assert admin.fingerprint.describe() in message, message
        assert service.fingerprint.describe() in message, message
        assert "open the collection again" in message.lower(), message
        assert "no result was returned" in message, message


def test_a_write_after_another_object_reindexed_is_refused_and_nothing_is_written(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _service(enc_a, tmp_path, backend) as service:
        admin = M3Index(enc_b, copy.copy(service.store), reindex=True)
        with pytest.raises(FingerprintMismatchError) as caught:
            service.add_texts(["a late document about rivers"], doc_ids=["late"])
        message = str(caught.value)
        assert admin.fingerprint.describe() in message, message
        assert "open the collection again" in message.lower(), message
        assert "nothing was written" in message, message
        stamps = _stamps(admin.store, ENCODER_ID)
        assert "late" not in stamps
        assert {s for v in stamps.values() for s in v} == {admin.fingerprint.identity}
        admin.add_texts(["a late document about rivers"], doc_ids=["late"])  # admin writes on
        assert _stamps(admin.store, ENCODER_ID)["late"] == {admin.fingerprint.identity}


def test_a_write_during_another_objects_unfinished_reindex_is_refused(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _service(enc_a, tmp_path, backend) as service:
        with second_write_fails(monkeypatch):
            M3Index(enc_b, copy.copy(service.store), reindex=True)
        before = _stamps(service.store, ENCODER_ID)
        with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
            service.add_texts(["a late document about rivers"], doc_ids=["late"])
        assert _stamps(service.store, ENCODER_ID) == before
        with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
            service.search("document", k=10)  # the first group is stamped with B


def test_a_search_ranking_no_reencoded_chunk_is_refused_once_the_record_is_read_again(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process's reindex is part-way (still running, or killed): the chunks it
    re-encoded score as noise against the service's queries, so no hit carries its stamp.
    Before, a long-lived service answered without those documents, silently, for as long as
    it ran; now its searches read the record again once it is RECHECK_SECONDS old."""
    with _service(enc_a, tmp_path, backend) as service:
        with second_write_fails(monkeypatch):  # the first group of 4 re-encoded with B
            M3Index(enc_b, copy.copy(service.store), reindex=True)
        untouched = {"filter": documents_filter(CUT_IDS[4:])}  # hits A's chunks only
        assert service.search("document", k=3, **untouched)  # read again within the interval
        monkeypatch.setattr(stock_record, "RECHECK_SECONDS", 0.0)
        with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
            service.search("document", k=3, **untouched)
        query = service.encoder.encode(["document"])
        with pytest.raises(FingerprintMismatchError, match="nothing was searched"):
            service.store.head_scores(dense=query.dense[0], candidates=5, **untouched)


def test_the_record_read_again_refuses_no_search_of_an_unchanged_collection(
    enc_a: M3Encoder,
    tiny_m3_path: Path,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read at every search: a search-only open of the same encoder from another model folder
    (its record kept for its first write) and a plain store search as before."""
    monkeypatch.setattr(stock_record, "RECHECK_SECONDS", 0.0)
    with _service(enc_a, tmp_path, backend, sparse_top_k=3) as service:
        schema = service.store.schema
    moved = tmp_path / "moved"
    shutil.copytree(tiny_m3_path, moved)
    with open_c(M3Encoder.from_pretrained(moved, dtype="fp32"), tmp_path, backend) as reader:
        assert reader.store.record_at_write is not None
        assert reader.search("topic 1", k=3) and reader.search("topic 2", k=3)
    dims = {"dense_dim": schema.dense_dim, "colbert_dim": schema.colbert_dim}
    with M3Store.open(
        tmp_path, collection="c", backend=backend, create=False, sparse=schema.sparse, **dims
    ) as plain:
        query = enc_a.encode(["topic 1"])
        assert plain.query(dense=query.dense[0], sparse=query.sparse[0], k=3)


def test_a_threshold_that_drops_every_hit_does_not_hide_a_reindex(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """Before, the stamps were checked on the hits the threshold kept: with none kept, a
    search of a collection another object re-encoded answered "nothing found"."""
    with _service(enc_a, tmp_path, backend) as service:
        M3Index(enc_b, copy.copy(service.store), reindex=True)
        with pytest.raises(FingerprintMismatchError, match="no result was returned"):
            service.search("topic 1", k=3, score_threshold=1e9)


# -- another object changes the sparse cut -----------------------------------------------------
def test_a_search_after_another_object_changed_the_cut_is_refused(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _service(enc_a, tmp_path, backend, sparse_top_k=3) as service:
        admin = M3Index(enc_a, copy.copy(service.store), sparse_top_k=5, reindex=True)
        assert admin.search("topic 1", k=3)
        with pytest.raises(ValueError, match="sparse_top_k=5") as caught:
            service.search("topic 1", k=3)
        message = str(caught.value)
        assert "sparse_top_k=3" in message and "no result was returned" in message, message
        assert "open the collection again" in message.lower(), message


def test_a_write_after_another_object_changed_the_cut_is_refused_and_nothing_is_written(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _service(enc_a, tmp_path, backend, sparse_top_k=3) as service:
        admin = M3Index(enc_a, copy.copy(service.store), sparse_top_k=5, reindex=True)
        with pytest.raises(ValueError, match="sparse_top_k=5") as caught:
            service.add_texts(["a late document about rivers"], doc_ids=["late"])
        message = str(caught.value)
        assert "sparse_top_k=3" in message and "nothing was written" in message, message
        stamps = _stamps(admin.store, SPARSE_CUT)
        assert "late" not in stamps
        assert {s for v in stamps.values() for s in v} == {SparseCut(5).stamp()}
        # a plain store opened before the change is refused as well (it cuts with top_k=3)
        plain = copy.copy(service.store)
        plain.writer_id, plain.writer_ids, plain.encoder_check = None, frozenset(), None
        with pytest.raises(ValueError, match="sparse_top_k=5"):
            plain.upsert([])
    with open_c(enc_a, tmp_path, backend) as again:  # nothing stored with the old cut
        assert again.sparse_cut == SparseCut(5)


# -- no change: nothing is refused --------------------------------------------------------------
def test_objects_of_one_encoder_and_cut_keep_searching_and_writing(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _service(enc_a, tmp_path, backend, sparse_top_k=3) as service:
        other = M3Index(enc_a, copy.copy(service.store))  # another process, same settings
        other.add_texts(["written by the other one"], doc_ids=["other"])
        service.add_texts(["written by the service"], doc_ids=["mine"])
        found = {h.doc_id for h in service.search("written by the other one", k=12)}
        assert {"other", "mine"} <= found
        assert {h.doc_id for h in other.search("written by the service", k=12)} >= {"mine"}
        stamps = _stamps(service.store, SPARSE_CUT)
        assert {s for v in stamps.values() for s in v} == {SparseCut(3).stamp()}


def test_a_change_made_through_a_shared_store_keeps_its_indexes_working(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """Indexes sharing one store object see the change it made (its own state is updated)."""
    with _service(enc_a, tmp_path, backend, sparse_top_k=3) as first:
        second = M3Index(enc_a, first.store, sparse_top_k=5, reindex=True)
        first.add_texts(["written after the change"], doc_ids=["after"])
        assert first.search("written after the change", k=1)[0].doc_id == "after"
        assert second.search("written after the change", k=1)[0].doc_id == "after"


def test_a_stray_stamp_of_another_encoder_is_refused_at_search(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """A chunk another encoder wrote in a collection that still records this one (a writer
    whose record check raced the change): a search that finds it says so."""
    with _service(enc_a, tmp_path, backend) as service:
        from m3kit.store.filters import documents_filter

        service.store._backend.set_payload([(documents_filter(CUT_IDS), {ENCODER_ID: "other"})])
        with pytest.raises(FingerprintMismatchError, match="reindex=True") as caught:
            service.search("document", k=3)
        assert "'other'" in str(caught.value)
