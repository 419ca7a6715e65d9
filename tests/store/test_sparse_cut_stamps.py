"""Every stored point says which sparse cut it was cut with (payload ``sparse_cut``).

Before, points carried no stamp of their cut: a cut change cut short was redone whole, a writer
that went on with the old cut after a change (another process, or a store object opened
before) left the collection serving a mix of cuts unseen, and an index sharing a store with
the one that changed the cut still showed the old cut.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.store import M3Index, M3Store
from m3kit.store.schema import DOC_ID, SPARSE_CUT
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut
from tests.reliability.killing import assert_same_points, index_points

from .conftest import (
    CUT_IDS,
    CUT_TEXTS,
    SentenceChunker,
    checked_against,
    interrupt_cut_change,
    open_c,
    written_docs,
)

TEXTS, IDS = CUT_TEXTS, CUT_IDS
_open = open_c


def _stamps(store: M3Store) -> dict[str, set[Any]]:
    """``{doc_id: the stamps of its points}``."""
    out: dict[str, set[Any]] = {}
    for h in store._backend.scroll(None, [DOC_ID, SPARSE_CUT]):
        out.setdefault(str(h.payload[DOC_ID]), set()).add(h.payload.get(SPARSE_CUT))
    return out


def test_every_point_is_stamped_with_the_cut_it_was_cut_with(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _open(enc_a, tmp_path, backend, sparse_top_k=3) as index:
        index.add_texts(TEXTS, doc_ids=IDS)
        assert set(_stamps(index.store)) == set(IDS)
        assert {s for v in _stamps(index.store).values() for s in v} == {SparseCut(3).stamp()}
    with _open(enc_a, tmp_path, backend, sparse_top_k=5, reindex=True) as index:
        assert {s for v in _stamps(index.store).values() for s in v} == {SparseCut(5).stamp()}
    assert SparseCut.from_stamp(SparseCut(5, 0.25).stamp()) == SparseCut(5, 0.25)


def test_an_interrupted_cut_change_resumes_with_the_documents_left(
    enc_a: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interrupt_cut_change(enc_a, tmp_path, backend, monkeypatch)
    written = written_docs(monkeypatch)
    done = _open(enc_a, tmp_path / "crashed", backend, reindex=True)
    opened.append(done)
    assert sorted(written) == IDS[4:]  # the first group of 4 was done before the interruption
    assert done.sparse_cut == SparseCut(2)
    fresh = _open(enc_a, tmp_path / "fresh", backend)
    opened.append(fresh)
    assert_same_points(index_points(done), index_points(fresh))
    assert done.store.collection_metadata() == fresh.store.collection_metadata()


def _change_with_a_late_writer(enc_a: M3Encoder, where: Path, backend: str) -> M3Index:
    """A collection cut with top_k=3 changed to top_k=5; then a store object opened before the
    change (another process: a copy on the same backend here) writes ``late`` with top_k=3,
    its record check having raced the change. Returns that late writer (the collection's only
    opened store)."""
    service = _open(enc_a, where, backend, sparse_top_k=3)
    service.add_texts(TEXTS, doc_ids=IDS)
    before = service.store.collection_metadata()
    admin = M3Index(enc_a, copy.copy(service.store), sparse_top_k=5, reindex=True)
    assert admin.store.collection_metadata()[RECORD_KEY] == SparseCut(5).to_dict()
    with checked_against(service.store, before):
        service.add_texts(["a late document about rivers"], doc_ids=["late"])
    return service


def test_a_writer_with_the_old_cut_after_a_change_is_refused_at_open_until_redone(
    enc_a: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _change_with_a_late_writer(enc_a, tmp_path / "a", backend).close()
    for opening in (
        lambda: _open(enc_a, tmp_path / "a", backend),
        lambda: _open(enc_a, tmp_path / "a", backend, sparse_top_k=5),
        lambda: M3Store.open(
            tmp_path / "a",
            collection="c",
            backend=backend,
            dense_dim=enc_a.dense_dim,
            colbert_dim=enc_a.colbert_dim,
            sparse=True,
        ),
    ):
        with pytest.raises(ValueError, match=r"1 chunk\(s\)") as caught:
            opening()
        message = str(caught.value)
        assert "sparse_top_k=3" in message and "sparse_top_k=5" in message, message
        assert "reindex=True" in message, message

    written = written_docs(monkeypatch)
    redone = _open(enc_a, tmp_path / "a", backend, reindex=True)  # the recorded cut
    opened.append(redone)
    assert written == ["late"]  # only the wrongly cut document
    assert redone.sparse_cut == SparseCut(5)
    assert PENDING_KEY not in redone.store.collection_metadata()
    fresh = _open(enc_a, tmp_path / "b", backend, sparse_top_k=5)
    opened.append(fresh)
    fresh.add_texts(TEXTS, doc_ids=IDS)
    fresh.add_texts(["a late document about rivers"], doc_ids=["late"])
    assert_same_points(index_points(redone), index_points(fresh))
    redone.close()
    with _open(enc_a, tmp_path / "a", backend) as again:
        assert again.sparse_cut == SparseCut(5)


def test_a_writer_with_the_old_cut_at_the_end_of_a_change_fails_its_final_check(
    enc_a: M3Encoder, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _open(enc_a, tmp_path, backend, sparse_top_k=3)
    service.add_texts(TEXTS, doc_ids=IDS)
    record = M3Store.set_collection_metadata
    before = service.store.collection_metadata()

    def late_write(self: M3Store, meta: Any) -> None:
        if RECORD_KEY in meta and PENDING_KEY not in meta and meta[RECORD_KEY]["top_k"] == 5:
            with checked_against(service.store, before):  # its check raced the change
                service.add_texts(["a late document about rivers"], doc_ids=["late"])
        record(self, meta)

    monkeypatch.setattr(M3Store, "set_collection_metadata", late_write)
    with pytest.raises(ValueError, match=r"1 chunk\(s\).*sparse_top_k=3") as caught:
        M3Index(enc_a, copy.copy(service.store), sparse_top_k=5, reindex=True)
    assert "reindex=True" in str(caught.value)
    monkeypatch.setattr(M3Store, "set_collection_metadata", record)
    again = M3Index(enc_a, copy.copy(service.store), reindex=True)
    assert {s for v in _stamps(again.store).values() for s in v} == {SparseCut(5).stamp()}
    service.close()


def test_points_written_before_stamps_count_as_the_recorded_cut(
    enc_a: M3Encoder, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(enc_a, tmp_path, backend, sparse_top_k=3) as index:
        index.add_texts(TEXTS, doc_ids=IDS)
        index.store._backend.set_payload([(models.Filter(), {SPARSE_CUT: None})])
    written = written_docs(monkeypatch)
    with _open(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True) as index:
        assert index.sparse_cut == SparseCut(3)
    assert written == []  # the recorded cut: nothing to redo
    with _open(enc_a, tmp_path, backend, sparse_top_k=5, reindex=True) as index:
        assert {s for v in _stamps(index.store).values() for s in v} == {SparseCut(5).stamp()}
    assert sorted(written) == IDS


def test_a_shared_store_shows_the_new_cut(enc_a: M3Encoder, backend: str, tmp_path: Path) -> None:
    with _open(enc_a, tmp_path, backend, sparse_top_k=3) as first:
        first.add_texts(TEXTS, doc_ids=IDS)
        second = M3Index(enc_a, first.store, sparse_top_k=5, reindex=True)
        assert second.sparse_cut == SparseCut(5)
        assert first.sparse_cut == SparseCut(5) == first.store.sparse_cut
        first.add_texts(["written by the first index"], doc_ids=["more"])
        assert _stamps(first.store)["more"] == {SparseCut(5).stamp()}


def test_negative_zero_min_weight_is_the_recorded_cut(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    # -0.0 == 0.0, so the index took it as the recorded cut, but stamped its points
    # '"min_weight":-0.0': the next open refused the collection as holding another cut
    with _open(enc_a, tmp_path, backend, sparse_top_k=5) as index:
        index.add_texts(TEXTS[:5], doc_ids=IDS[:5])
    with _open(enc_a, tmp_path, backend, sparse_top_k=5, sparse_min_weight=-0.0) as index:
        index.add_texts(TEXTS[5:], doc_ids=IDS[5:])
    with _open(enc_a, tmp_path, backend) as index:
        assert index.sparse_cut == SparseCut(5)
        assert {s for v in _stamps(index.store).values() for s in v} == {SparseCut(5).stamp()}
    assert SparseCut(None, -0.0).stamp() == SparseCut().stamp()


def test_an_unrebuildable_late_document_names_a_way_out(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    # before, the refusal said to open the collection "with its recorded cut (without
    # reindex)" and delete them: that open is refused too (chunks of another cut)
    service = _open(enc_a, tmp_path, backend, sparse_top_k=3)
    service.add_texts(TEXTS, doc_ids=IDS)
    before = service.store.collection_metadata()
    M3Index(enc_a, copy.copy(service.store), sparse_top_k=5, reindex=True)
    with checked_against(service.store, before):  # a late writer whose check raced the change
        service.add_texts(["One. Two. Three."], doc_ids=["s"], chunker=SentenceChunker(enc_a))
    service.close()
    with pytest.raises(ValueError, match="reindex cannot rebuild 1 stored document.*'s'") as e:
        _open(enc_a, tmp_path, backend, reindex=True)
    message = str(e.value)
    assert "with its recorded cut (without reindex)" not in message, message
    assert "M3Index.open(encoder, ..., sparse_top_k=3, sparse_min_weight=0.0" in message, message
    redone = _open(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)  # as advised
    opened.append(redone)
    assert redone.sparse_cut == SparseCut(3)
    assert {s for v in _stamps(redone.store).values() for s in v} == {SparseCut(3).stamp()}
    redone.close()
    with _open(enc_a, tmp_path, backend) as again:
        assert again.sparse_cut == SparseCut(3)


def test_a_shared_store_cuts_as_recorded_after_a_change_fails_its_final_check(
    enc_a: M3Encoder, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # before, the failed open put the store's old cut back: the index sharing it searched and
    # wrote with top_k=3 while the collection recorded (and mostly held) top_k=5
    with _open(enc_a, tmp_path, backend, sparse_top_k=3) as first:
        first.add_texts(TEXTS, doc_ids=IDS)
        late = M3Index(enc_a, copy.copy(first.store))  # another process, still on top_k=3
        record = M3Store.set_collection_metadata
        before = first.store.collection_metadata()

        def late_write(self: M3Store, meta: Any) -> None:
            if RECORD_KEY in meta and PENDING_KEY not in meta and meta[RECORD_KEY]["top_k"] == 5:
                with checked_against(late.store, before):  # its check raced the change
                    late.add_texts(["a late document about rivers"], doc_ids=["late"])
            record(self, meta)

        monkeypatch.setattr(M3Store, "set_collection_metadata", late_write)
        with pytest.raises(ValueError, match=r"1 chunk\(s\).*sparse_top_k=3"):
            M3Index(enc_a, first.store, sparse_top_k=5, reindex=True)
        monkeypatch.setattr(M3Store, "set_collection_metadata", record)
        assert first.store.collection_metadata()[RECORD_KEY] == SparseCut(5).to_dict()
        assert first.sparse_cut == SparseCut(5)
        first.add_texts(["written by the first index"], doc_ids=["more"])
        assert _stamps(first.store)["more"] == {SparseCut(5).stamp()}
