"""``M3Index.open(sparse_top_k=..., reindex=True)``: changing the sparse cut of a collection.

A collection records its sparse cut and refuses another one once it holds chunks; there was no
way to change it but indexing everything again into a new collection. ``reindex=True`` now
re-encodes every stored document with the new cut (as the encoder reindex re-encodes them from
their stored texts) and records it; a change cut short is recorded as pending (``sparse_cut_to``)
and the collection refused until it is finished.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.fingerprint import encoder_fingerprint
from m3kit.store import M3Index, M3Store
from m3kit.store.fusion_calibration import calibrated_encoder_identity
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut
from tests.reliability.killing import assert_same_points, index_points

from .conftest import (
    CUT_IDS,
    CUT_TEXTS,
    SentenceChunker,
    checked_against,
    fill,
    interrupt_cut_change,
    open_c,
    second_write_fails,
)

WHOLE = {
    "w1": "Oxygen is a chemical element with symbol O and atomic number eight.",
    "w2": "Berlin is the capital and largest city of Germany by population.",
    "w3": "Nikola Tesla was an inventor, electrical engineer and futurist.",
}
LONG = {
    "l1": " ".join(
        f"Sentence {i} is about the Amazon rainforest and its rivers." for i in range(9)
    ),
}
NO_CUT = {"sparse_min_weight": 0.0}  # a given cut that keeps every weight


_open = open_c


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"sparse_top_k": 3}, NO_CUT),  # loosening: the dropped weights are encoded again
        ({}, {"sparse_top_k": 3}),  # tightening
        ({"sparse_top_k": 3}, {"sparse_min_weight": 0.1}),
    ],
    ids=["loosen", "tighten", "other"],
)
def test_reindex_changes_the_cut_as_a_fresh_index_stores_it(
    enc_a: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    old: dict[str, Any],
    new: dict[str, Any],
) -> None:
    with _open(enc_a, tmp_path / "a", backend, **old) as index:
        fill(index, enc_a, WHOLE, LONG)
        count = index.count()
        before = index_points(index)
    fresh = _open(enc_a, tmp_path / "b", backend, **new)
    opened.append(fresh)
    fill(fresh, enc_a, WHOLE, LONG)
    want = index_points(fresh)
    # the two cuts store other sparse vectors (else this test would show nothing)
    assert any(before[p][1]["sparse"][0] != want[p][1]["sparse"][0] for p in want)

    re = _open(enc_a, tmp_path / "a", backend, reindex=True, **new)
    opened.append(re)
    assert re.count() == count
    assert re.sparse_cut == re.store.sparse_cut == fresh.sparse_cut
    assert_same_points(index_points(re), want)  # sparse cut anew; dense, ColBERT, payloads as fresh
    assert re.store.collection_metadata() == fresh.store.collection_metadata()
    re.close()
    with _open(enc_a, tmp_path / "a", backend) as again:  # the new cut is the recorded one
        assert again.sparse_cut == fresh.sparse_cut


def test_another_cut_without_reindex_is_refused_saying_how_to_change_it(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _open(enc_a, tmp_path, backend, sparse_top_k=3) as index:
        fill(index, enc_a, WHOLE, LONG)
        before = index_points(index)
    with pytest.raises(ValueError, match=r"stored with sparse_top_k=3") as caught:
        _open(enc_a, tmp_path, backend, sparse_top_k=5)
    assert "reindex=True" in str(caught.value) and "--reindex" in str(caught.value)
    with _open(enc_a, tmp_path, backend) as index:
        assert index.sparse_cut == SparseCut(3)
        assert PENDING_KEY not in index.store.collection_metadata()
        assert_same_points(index_points(index), before)


@pytest.mark.parametrize("finish", [{"sparse_top_k": 2}, {}], ids=["given", "pending"])
def test_an_interrupted_cut_change_is_refused_until_finished(
    enc_a: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
    finish: dict[str, Any],
) -> None:
    interrupt_cut_change(enc_a, tmp_path, backend, monkeypatch)

    # a mix of both cuts is stored now: nothing may open it but a reindex
    for cut in ({}, {"sparse_top_k": 2}, NO_CUT):
        with pytest.raises(ValueError, match="unfinished") as caught:
            _open(enc_a, tmp_path / "crashed", backend, **cut)
        message = str(caught.value)
        assert "sparse_top_k=2" in message and "reindex=True" in message, message
    with pytest.raises(ValueError, match="unfinished"):
        M3Store.open(
            tmp_path / "crashed",
            collection="c",
            backend=backend,
            dense_dim=enc_a.dense_dim,
            colbert_dim=enc_a.colbert_dim,
            sparse=True,
        )

    done = _open(enc_a, tmp_path / "crashed", backend, reindex=True, **finish)
    opened.append(done)
    assert done.sparse_cut == SparseCut(2)
    fresh = _open(enc_a, tmp_path / "fresh", backend)
    opened.append(fresh)
    assert_same_points(index_points(done), index_points(fresh))
    assert done.store.collection_metadata() == fresh.store.collection_metadata()


def test_chunks_reindex_cannot_rebuild_are_refused_before_anything_is_written(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with _open(enc_a, tmp_path, backend) as index:
        index.add_texts(["One. Two. Three."], doc_ids=["s"], chunker=SentenceChunker(enc_a))
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        before = index_points(index)
        record = dict(index.store.collection_metadata())
    with pytest.raises(ValueError, match="reindex cannot rebuild 1 stored document.*'s'") as e:
        _open(enc_a, tmp_path, backend, sparse_top_k=2, reindex=True)
    assert "with its recorded cut (without reindex)" in str(e.value)  # not the encoder's
    assert "encoder that wrote it" not in str(e.value)
    with _open(enc_a, tmp_path, backend) as index:  # not pending: nothing was changed
        assert index.sparse_cut == SparseCut()
        assert index.store.collection_metadata() == record
        assert_same_points(index_points(index), before)


def test_a_new_encoder_and_a_new_cut_at_once(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    with _open(enc_a, tmp_path / "a", backend, sparse_top_k=3) as index:
        fill(index, enc_a, WHOLE, LONG)
    fresh = _open(enc_b, tmp_path / "b", backend, sparse_min_weight=0.1)
    opened.append(fresh)
    fill(fresh, enc_b, WHOLE, LONG)
    re = _open(enc_b, tmp_path / "a", backend, sparse_min_weight=0.1, reindex=True)
    opened.append(re)
    assert_same_points(index_points(re), index_points(fresh))
    assert re.store.collection_metadata() == fresh.store.collection_metadata()


def test_the_same_cut_with_reindex_rewrites_nothing(
    enc_a: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(enc_a, tmp_path, "edge", sparse_top_k=3) as index:
        fill(index, enc_a, WHOLE, LONG)
    writes: list[Any] = []
    monkeypatch.setattr(M3Store, "upsert", lambda *a, **k: writes.append(a))
    with _open(enc_a, tmp_path, "edge", sparse_top_k=3, reindex=True) as index:
        assert index.sparse_cut == SparseCut(3)
    assert writes == []


def test_a_calibration_of_the_old_cut_warns_after_the_change(
    tmp_path: Path,
    tiny_m3_path: Path,
    tiny_calibration: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dataclasses

    path = Path(shutil.copytree(tiny_m3_path, tmp_path / "model"))
    encoder = M3Encoder.from_pretrained(path, dtype="fp32")
    fingerprint = encoder_fingerprint(encoder)
    dataclasses.replace(
        tiny_calibration,
        weights_digest=fingerprint.weights,
        encoder_identity=calibrated_encoder_identity(fingerprint),
        sparse_cut=SparseCut(2),
    ).save(path)
    encoder = M3Encoder.from_pretrained(path, dtype="fp32")
    store = tmp_path / "store"
    with _open(encoder, store, "edge", sparse_top_k=2) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.index"),
        _open(encoder, store, "edge", sparse_top_k=3, reindex=True) as index,
    ):
        assert index.search_source == "calibrated"
        assert index.store.collection_metadata()[RECORD_KEY] == SparseCut(3).to_dict()
    warnings = [r.getMessage() for r in caplog.records if "calibration" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "measured with sparse_top_k=2" in warnings[0]
    assert "this collection has sparse_top_k=3" in warnings[0]


def test_an_index_sharing_the_store_is_stopped_by_a_cut_change_cut_short(
    enc_a: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another index on the same store object would go on writing and searching with the old
    cut over a mix of both: it is refused until the change is finished."""
    with _open(enc_a, tmp_path, "edge") as first:
        first.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
        with second_write_fails(monkeypatch):
            M3Index(enc_a, first.store, sparse_top_k=2, reindex=True)
        with pytest.raises(Exception, match="part-way through a reindex"):
            first.search("topic 1", k=2)
        with pytest.raises(Exception, match="part-way through a reindex"):
            first.add_texts(["another document"])
        done = M3Index(enc_a, first.store, reindex=True)  # finishes the pending cut
        assert done.sparse_cut == SparseCut(2)
        assert first.search("topic 1", k=2)  # the store searches with the new cut again


def test_a_writer_with_the_old_cut_during_the_change_is_redone(
    enc_a: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service with the old cut writes while the change runs (two processes on one server:
    two stores on one backend here), its record check having raced the start of the change
    (else it is refused: test_changed_under): its new and edited documents are re-encoded
    too, not left with the old cut."""
    import copy

    service = M3Index.open(enc_a, None, collection="c", backend="client")
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)

    class WritesMeanwhile:
        def __init__(self) -> None:
            self.fired = False

        def __getattr__(self, name: str) -> object:
            return getattr(enc_a, name)

        def encode_tokenized(self, *args: object, **kwargs: object) -> object:
            if not self.fired:
                self.fired = True
                edits = ["a new document about rivers and lakes", "document 3 edited at length"]
                with checked_against(service.store, before):  # its check raced the change
                    service.add_texts(edits, doc_ids=["new", "d3"])
            return enc_a.encode_tokenized(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Index, "write_group", 4)
    encoder = WritesMeanwhile()
    before = service.store.collection_metadata()
    admin = M3Index(encoder, copy.copy(service.store), sparse_top_k=2, reindex=True)  # type: ignore[arg-type]
    assert encoder.fired
    points = index_points(admin)
    texts_of = {p["doc_id"]: p["page_content"] for p, _ in points.values()}
    assert texts_of["new"].startswith("a new") and texts_of["d3"].startswith("document 3 edited")
    assert max(len(v["sparse"][0]) for _, v in points.values()) == 2
    assert PENDING_KEY not in admin.store.collection_metadata()
    service.close()
