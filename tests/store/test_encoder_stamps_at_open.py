"""A collection holding chunks stamped by another encoder than its recorded one is refused at
open.

Before, only the sparse cut's stamps were counted at open: a writer that went on with the old
encoder after another process re-encoded the collection (its record check having raced the
reindex) left chunks of that encoder in a collection recorded as the new one's, and a plain
open with the recorded encoder, or ``M3Store.open``, did not look for them. The app opened
fine and failed later, mid-search, when a hit was such a chunk (or ranked two encoders'
vectors where no hit showed it). Now the open counts them (one count request on the
``encoder_id`` payload index) and names how many, whose, and the ways out.

"Another process" is a copy of the store on the same backend, as in ``test_changed_under``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import encoder_fingerprint
from m3kit.store import M3Index, M3Store
from m3kit.store.collection_record import PENDING_KEY
from m3kit.store.filters import documents_filter
from m3kit.store.schema import DOC_ID, ENCODER_ID
from tests.reliability.killing import assert_same_points, index_points

from .conftest import (
    CUT_IDS,
    CUT_TEXTS,
    SentenceChunker,
    checked_against,
    named_call,
    open_c,
    second_write_fails,
    written_docs,
)

LATE, LATE_TEXT = "late", "a late document about rivers"


def _stamps(store: M3Store) -> dict[str, set[Any]]:
    """``{doc_id: the encoder stamps of its points}``."""
    out: dict[str, set[Any]] = {}
    for h in store._backend.scroll(None, [DOC_ID, ENCODER_ID]):
        out.setdefault(str(h.payload[DOC_ID]), set()).add(h.payload.get(ENCODER_ID))
    return out


def _store_open(enc: M3Encoder, where: Path, backend: str) -> M3Store:
    return M3Store.open(
        where,
        collection="c",
        backend=backend,
        dense_dim=enc.dense_dim,
        colbert_dim=enc.colbert_dim,
        sparse=True,
    )


def _reindex_with_a_late_writer(
    enc_a: M3Encoder, enc_b: M3Encoder, where: Path, backend: str
) -> None:
    """:data:`CUT_TEXTS` indexed with A and re-encoded with B by another process; then a
    writer opened before the reindex, its record check having raced it, stores :data:`LATE`
    with A. Every store is closed after."""
    service = open_c(enc_a, where, backend)
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    before = service.store.collection_metadata()
    M3Index(enc_b, copy.copy(service.store), reindex=True)
    with checked_against(service.store, before):
        service.add_texts([LATE_TEXT], doc_ids=[LATE])
    service.close()


def test_chunks_of_another_encoder_are_refused_at_open(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    _reindex_with_a_late_writer(enc_a, enc_b, tmp_path, backend)
    a, b = encoder_fingerprint(enc_a), encoder_fingerprint(enc_b)
    for opening in (
        lambda: open_c(enc_b, tmp_path, backend),  # the recorded encoder
        lambda: _store_open(enc_b, tmp_path, backend),  # a plain store: the record's encoder
    ):
        with pytest.raises(FingerprintMismatchError, match=r"1 chunk\(s\) of 1 document") as e:
            opening()
        message = str(e.value)
        assert "\n" not in message  # the m3kit commands show a message's first line
        assert a.identity in message and b.identity in message, message
        assert b.describe() in message, message
        assert "reindex=True" in message and "m3kit index --reindex" in message, message
        assert named_call(message) == (
            f"M3Store.delete_documents_unopened({str(tmp_path)!r}, backend={backend!r}, "
            f"collection='c', doc_ids=[{LATE!r}])"
        )


def test_reindex_with_the_recorded_encoder_re_encodes_just_those_documents(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _reindex_with_a_late_writer(enc_a, enc_b, tmp_path / "a", backend)
    written = written_docs(monkeypatch)
    redone = open_c(enc_b, tmp_path / "a", backend, reindex=True)  # as the refusal says
    opened.append(redone)
    assert written == [LATE]  # only the document with a chunk of another encoder
    assert PENDING_KEY not in redone.store.collection_metadata()
    stamps = _stamps(redone.store)
    assert {s for v in stamps.values() for s in v} == {redone.fingerprint.identity}
    fresh = open_c(enc_b, tmp_path / "b", backend)
    opened.append(fresh)
    fresh.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    fresh.add_texts([LATE_TEXT], doc_ids=[LATE])
    assert_same_points(index_points(redone), index_points(fresh))
    redone.close()
    with open_c(enc_b, tmp_path / "a", backend) as again:
        assert again.count() == len(CUT_IDS) + 1
    _store_open(enc_b, tmp_path / "a", backend).close()


def test_the_delete_call_the_refusal_names_works_as_pasted(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    _reindex_with_a_late_writer(enc_a, enc_b, tmp_path, backend)
    with pytest.raises(FingerprintMismatchError) as caught:
        open_c(enc_b, tmp_path, backend)
    assert eval(named_call(str(caught.value)), {"M3Store": M3Store}) == 1  # as pasted
    with open_c(enc_b, tmp_path, backend) as index:  # the refusal's next step
        assert index.store.document_metadata([*CUT_IDS, LATE]).keys() == set(CUT_IDS)


def test_a_writer_of_the_old_encoder_at_the_end_of_a_reindex_fails_its_final_check(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A late write landing between the reindex's last pass and its final record: the reindex
    counts such chunks after recording, as a cut change does, instead of leaving them to the
    next open."""
    service = open_c(enc_a, tmp_path, backend)
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    before = service.store.collection_metadata()
    weights_b = encoder_fingerprint(enc_b).weights
    record = M3Store.set_collection_metadata

    def late_write(self: M3Store, meta: Any) -> None:
        done = meta.get("fingerprint", {}).get("weights") == weights_b and PENDING_KEY not in meta
        if done and LATE not in _stamps(service.store):
            with checked_against(service.store, before):  # its check raced the reindex
                service.add_texts([LATE_TEXT], doc_ids=[LATE])
        record(self, meta)

    monkeypatch.setattr(M3Store, "set_collection_metadata", late_write)
    with pytest.raises(FingerprintMismatchError, match=r"1 chunk\(s\) of 1 document") as caught:
        M3Index(enc_b, copy.copy(service.store), reindex=True)
    assert "reindex=True" in str(caught.value)
    monkeypatch.setattr(M3Store, "set_collection_metadata", record)
    again = M3Index(enc_b, copy.copy(service.store), reindex=True)
    stamps = _stamps(again.store)
    assert {s for v in stamps.values() for s in v} == {again.fingerprint.identity}
    service.close()


def test_unstamped_and_legacy_stamped_chunks_are_not_another_encoders(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """Chunks written before m3kit stamped them, or stamped with the identity an older m3kit
    gave the recorded encoder, are the recorded encoder's."""
    a = encoder_fingerprint(enc_a)
    assert a.legacy_identity != a.identity
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
        index.store._backend.set_payload(
            [
                (documents_filter(CUT_IDS[:5]), {ENCODER_ID: None}),
                (documents_filter(CUT_IDS[5:]), {ENCODER_ID: a.legacy_identity}),
            ]
        )
    with open_c(enc_a, tmp_path, backend) as index:
        assert index.count() == len(CUT_IDS)
        unstamped = models.Filter(
            must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=ENCODER_ID))]
        )
        assert index.store.count(unstamped) == 5
    _store_open(enc_a, tmp_path, backend).close()


def test_an_unfinished_reindex_keeps_its_rules(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Part-way through a reindex the collection holds two encoders' chunks by design: it is
    refused as unfinished (not as holding another encoder's chunks), and finished or undone
    by ``reindex=True``; a plain store opens it, as before."""
    for name in ("forward", "back"):
        with open_c(enc_a, tmp_path / name, backend) as index:
            index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
        with second_write_fails(monkeypatch):
            open_c(enc_b, tmp_path / name, backend, reindex=True)
        for encoder in (enc_a, enc_b):
            with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
                open_c(encoder, tmp_path / name, backend)
        _store_open(enc_a, tmp_path / name, backend).close()
    for name, encoder in (("forward", enc_b), ("back", enc_a)):
        done = open_c(encoder, tmp_path / name, backend, reindex=True)
        opened.append(done)
        stamps = _stamps(done.store)
        assert {s for v in stamps.values() for s in v} == {done.fingerprint.identity}
        done.close()
        with open_c(encoder, tmp_path / name, backend) as again:
            assert again.count() == len(CUT_IDS)


def test_a_record_an_older_m3kit_wrote_opens_with_this_m3kits_chunks(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """Same encoder, two m3kit versions: a writer of this m3kit stamps its chunks with the
    identity that includes ``architecture``; a writer of an m3kit before ``architecture``
    (which reads this record, ignoring the field) records the encoder again without it when
    its precision or model path differs (a machine that runs bf16). Such a record names the
    same encoder, yet a plain store cannot compute that encoder's current identity from it: it
    must not refuse the chunks as another encoder's (the index of that encoder opens it)."""
    a = encoder_fingerprint(enc_a)
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)  # stamped a.identity
        meta = index.store.collection_metadata()
        older = {k: v for k, v in meta["fingerprint"].items() if k != "architecture"}
        index.store.set_collection_metadata({**meta, "fingerprint": {**older, "precision": "bf16"}})
    _store_open(enc_a, tmp_path, backend).close()  # before: refused, "another encoder"
    with open_c(enc_a, tmp_path, backend) as index:  # as the index of that encoder opens it
        assert index.count() == len(CUT_IDS)
        assert "architecture" not in index.store.collection_metadata()["fingerprint"]
        index.add_texts(["one more"], doc_ids=["more"])  # the first write records it
        assert index.store.collection_metadata()["fingerprint"]["architecture"] == a.architecture


def test_an_index_writes_and_searches_under_a_record_an_older_m3kit_wrote(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """The same older-m3kit record as above, written while an index of this m3kit is open on
    the collection: its record check must take the record for its own encoder (the same
    encoder, named without ``architecture``), not refuse every write and search as if
    another process had re-encoded the collection."""
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
        meta = index.store.collection_metadata()
        older = {k: v for k, v in meta["fingerprint"].items() if k != "architecture"}
        index.store.set_collection_metadata({**meta, "fingerprint": {**older, "precision": "bf16"}})
        index.add_texts(["a text written after"], doc_ids=["after"])  # before: refused
        assert index.count() == len(CUT_IDS) + 1
        assert index.search("a text written after", k=1)[0].doc_id == "after"


def test_an_unrebuildable_late_document_of_another_encoder_is_advised_a_way_that_works(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    """A late writer of the old encoder stores a document a reindex cannot rebuild (a custom
    chunker). The reindex with the recorded encoder refuses it; its advice used to be to open
    the collection "with the encoder that wrote it" and delete it there, an open refused as
    well (the record names the new encoder). The delete call it names works."""
    service = open_c(enc_a, tmp_path, backend)
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    before = service.store.collection_metadata()
    M3Index(enc_b, copy.copy(service.store), reindex=True)
    with checked_against(service.store, before):
        service.add_texts(["One. Two. Three."], doc_ids=["s"], chunker=SentenceChunker(enc_a))
    service.close()
    with pytest.raises(ValueError, match="reindex cannot rebuild 1 stored document.*'s'") as e:
        open_c(enc_b, tmp_path, backend, reindex=True)
    message = str(e.value)
    assert "Open the collection with the encoder that wrote it" not in message, message
    with pytest.raises(FingerprintMismatchError):  # what that advice led to
        open_c(enc_a, tmp_path, backend)
    assert "cannot be deleted through an open" in message, message
    assert eval(named_call(message), {"M3Store": M3Store}) == 3  # its 3 chunks, as pasted
    with open_c(enc_b, tmp_path, backend) as again:
        assert again.count() == len(CUT_IDS)


def test_a_damaged_record_is_named_and_a_plain_store_opens_to_mend_it(
    enc_a: M3Encoder, backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recorded fingerprint changed by hand (a field lost). An index's open was refused
    with the record's bare ``ValueError`` (naming no collection), and since plain stores
    count encoder stamps they were refused too, so no m3kit open could mend the record. Now
    the index's refusal names the collection and the mend, a plain store opens with a
    warning (it cannot count the stamps), and the mend, as the refusal says, works."""
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
        meta = index.store.collection_metadata()
        damaged = {k: v for k, v in meta["fingerprint"].items() if k != "weights"}
        index.store.set_collection_metadata({**meta, "fingerprint": damaged})
    with pytest.raises(ValueError, match="collection 'c' .*damaged") as caught:
        open_c(enc_a, tmp_path, backend)
    assert "lacks the field 'weights'" in str(caught.value)
    assert "reindex=True" in str(caught.value)
    with caplog.at_level("WARNING"), _store_open(enc_a, tmp_path, backend) as store:
        assert store.count() == len(CUT_IDS)
        meta = store.collection_metadata()  # the mend the refusal names
        del meta["fingerprint"]
        store.set_collection_metadata(meta)
    assert "cannot check which encoder" in caplog.text
    with open_c(enc_a, tmp_path, backend, reindex=True) as index:
        assert index.count() == len(CUT_IDS)
        fp = index.store.collection_metadata()["fingerprint"]
        assert fp == encoder_fingerprint(enc_a).to_dict()
