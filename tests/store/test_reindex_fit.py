"""A reindex whose stored chunks do not fit the new encoder's window is refused up front.

It used to fail part-way: the groups before the first document that did not fit were
already rewritten with the new encoder and the reindex was left pending, both encoders
refused. Now nothing is written and the error names the documents and why.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.fingerprint import encoder_fingerprint
from m3kit.late_chunking import LateChunker
from m3kit.store import M3Index
from m3kit.store.schema import ENCODER_ID
from tests.reliability.killing import assert_same_points, index_points

from . import test_fingerprint as fingerprint_tests
from .conftest import checked_against
from .test_fingerprint import _stamps

# test_fingerprint's documents under ids that sort the whole ones first, so a reindex in
# groups of two used to write them before it reached a long document
WHOLE = dict(zip("abc", fingerprint_tests.WHOLE.values(), strict=True))
LONG = dict(zip(("long1", "long2"), fingerprint_tests.LONG.values(), strict=True))


def _fill(encoder: M3Encoder, where: Path, backend: str, chunker: object) -> tuple[dict, dict]:
    """A collection of three whole documents and two chunked ones; its points and record."""
    with M3Index.open(encoder, where, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        index.add_texts(list(LONG.values()), doc_ids=list(LONG), chunker=chunker)  # type: ignore[arg-type]
        return index_points(index), index.store.collection_metadata()


def _assert_untouched(
    encoder: M3Encoder, where: Path, backend: str, points: dict, record: dict
) -> None:
    """The same points and record, no reindex pending: the old encoder opens it as before."""
    with M3Index.open(encoder, where, collection="c", backend=backend) as index:
        assert "reindex_to" not in index.store.collection_metadata()
        assert index.store.collection_metadata() == record
        assert _stamps(index) == {index.fingerprint.identity}
        assert_same_points(index_points(index), points)


def _stored_spans(points: dict, doc_id: str) -> list[tuple[int, int]]:
    return sorted((p["start"], p["end"]) for p, _ in points.values() if p["doc_id"] == doc_id)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_naive_chunks_longer_than_the_new_window_are_refused_before_writing(
    enc_a: M3Encoder,
    path_b: Path,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points, record = _fill(enc_a, tmp_path, backend, NaiveChunker(enc_a, chunk_size=20))
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=16)  # 14 text tokens
    # what NaiveChunker itself says when it encodes these chunks with the new encoder
    spans = _stored_spans(points, "long1")
    with pytest.raises(ValueError, match="chunk 0 of text 0 is 20 tokens, more than the model's"):
        NaiveChunker(small, splitter=lambda _: spans).chunk([LONG["long1"]])
    monkeypatch.setattr(M3Index, "write_group", 2)
    with pytest.raises(ValueError) as err:
        M3Index.open(small, tmp_path, collection="c", backend=backend, reindex=True)
    msg = str(err.value)
    assert msg == (
        "reindex cannot re-encode 2 stored document(s) with this encoder (max_length=16): "
        "their chunks do not fit its window. "
        "'long1': chunk 0 is 20 tokens, more than the model's 14 (9 of its 18 chunks are too "
        "long); 'long2': chunk 0 is 20 tokens, more than the model's 14 (7 of its 14 chunks "
        "are too long). Nothing was written. Load the new encoder with a larger max_length "
        "(up to what the checkpoint allows), or index the documents into a new collection "
        "with smaller chunks"
    ), msg
    _assert_untouched(enc_a, tmp_path, backend, points, record)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_late_window_past_the_new_max_length_is_refused_before_writing(
    enc_a: M3Encoder,
    path_b: Path,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points, record = _fill(enc_a, tmp_path, backend, LateChunker(enc_a, chunk_size=12, window=40))
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=32)
    monkeypatch.setattr(M3Index, "write_group", 2)
    with pytest.raises(ValueError) as err:
        M3Index.open(small, tmp_path, collection="c", backend=backend, reindex=True)
    msg = str(err.value)
    assert "reindex cannot re-encode 2 stored document(s)" in msg, msg
    assert (
        "window. 'long1', 'long2': late chunks (window=40, overlap=4): window=40 exceeds the "
        "encoder's max_length=32. Nothing was written." in msg
    ), msg
    _assert_untouched(enc_a, tmp_path, backend, points, record)


def test_late_chunks_with_heads_encoded_alone_are_checked_against_the_window(
    enc_a: M3Encoder, path_b: Path, tmp_path: Path
) -> None:
    """Late dense, sparse and ColBERT from each chunk alone: a chunk must fit one pass
    (long1's chunks are 30-31 tokens, long2's up to 51)."""
    chunker = LateChunker(enc_a, chunk_size=60, window=32, late_heads=["dense"])
    points, record = _fill(enc_a, tmp_path, "edge", chunker)
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=40)  # 38 text tokens
    spans = _stored_spans(points, "long2")
    late = LateChunker(small, splitter=lambda _: spans, window=32, late_heads=["dense"])
    with pytest.raises(
        ValueError, match="chunk 0 of text 0 is 51 tokens, more than the model's 38"
    ):
        late.chunk([LONG["long2"]])
    with pytest.raises(ValueError) as err:
        M3Index.open(small, tmp_path, collection="c", backend="edge", reindex=True)
    msg = str(err.value)
    assert "reindex cannot re-encode 1 stored document(s)" in msg, msg
    assert (
        "window. 'long2': chunk 0 is 51 tokens, more than the model's 38 (3 of its 4 chunks "
        "are too long); its colbert, sparse vectors are encoded alone. Nothing" in msg
    ), msg
    _assert_untouched(enc_a, tmp_path, "edge", points, record)


@pytest.mark.parametrize("max_length", [13, 14])
def test_the_check_refuses_exactly_what_the_chunker_refuses(
    enc_a: M3Encoder,
    path_b: Path,
    max_length: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """12-token chunks: a window of 14 (12 text tokens) takes them, 13 does not. Whole
    documents longer than the window are cut with a warning, as add_texts cuts them."""
    points, record = _fill(enc_a, tmp_path, "edge", NaiveChunker(enc_a, chunk_size=12))
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=max_length)
    spans = {d: _stored_spans(points, d) for d in LONG}
    naive = NaiveChunker(small, splitter=lambda t: spans["long1" if "Sentence" in t else "long2"])
    try:
        naive.chunk(list(LONG.values()))
        fits = True
    except ValueError:
        fits = False
    assert fits == (max_length == 14)
    if not fits:
        with pytest.raises(ValueError, match="reindex cannot re-encode 2 stored document"):
            M3Index.open(small, tmp_path, collection="c", backend="edge", reindex=True)
        _assert_untouched(enc_a, tmp_path, "edge", points, record)
        return
    with caplog.at_level(logging.WARNING, logger="m3kit"):
        done = M3Index.open(small, tmp_path, collection="c", backend="edge", reindex=True)
    with done:
        assert _stamps(done) == {done.fingerprint.identity}
        assert "reindex_to" not in done.store.collection_metadata()
        assert done.count() == len(points)
    assert "document 'a' is 18 tokens; the model takes 12" in caplog.text


def test_documents_another_writer_adds_during_a_reindex_are_checked_too(
    enc_a: M3Encoder, path_b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later pass (documents a writer holding the old model added meanwhile, its record
    check having raced the start of the reindex) is checked before it writes; what the first
    pass wrote is kept and the reindex stays pending."""
    service = M3Index.open(enc_a, None, collection="c", backend="client")
    service.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=16)

    class WritesMeanwhile:
        fired = False

        def __getattr__(self, name: str) -> object:
            return getattr(small, name)

        def encode_tokenized(self, *args: object, **kwargs: object) -> object:
            if not self.fired:
                self.fired = True
                chunker = NaiveChunker(enc_a, chunk_size=20)
                with checked_against(service.store, before):  # its check raced the reindex
                    service.add_texts([LONG["long1"]], doc_ids=["long1"], chunker=chunker)
            return small.encode_tokenized(*args, **kwargs)  # type: ignore[arg-type]

    before = service.store.collection_metadata()
    with pytest.raises(ValueError) as err:
        M3Index(WritesMeanwhile(), copy.copy(service.store), reindex=True)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "'long1': chunk 0 is 20 tokens, more than the model's 14" in msg, msg
    assert "re-encoded so far are kept and the reindex stays pending" in msg, msg
    assert "reindex_to" in service.store.collection_metadata()
    stamps = {
        h.payload["doc_id"]: h.payload[ENCODER_ID]
        for h in service.store._backend.scroll(None, ["doc_id", ENCODER_ID])
    }
    assert stamps["long1"] == service.fingerprint.identity
    assert {stamps[d] for d in WHOLE} == {encoder_fingerprint(small).identity}
    service.close()


def test_oversized_plans_in_one_batch_what_chunk_plans_one_by_one(
    enc_a: M3Encoder, tiny_m3_path: Path
) -> None:
    texts = [*LONG.values(), "", "One.", *WHOLE.values()]
    planner = NaiveChunker(enc_a, chunk_size=20)._planner
    for got, want in zip(planner.plan_many(texts), map(planner.plan, texts), strict=True):
        assert (got.spans, got.content_bounds, got.ids.tolist()) == (
            want.spans,
            want.content_bounds,
            want.ids.tolist(),
        )
    small = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    over = NaiveChunker(small, chunk_size=14).oversized(texts)
    assert over == [[] for _ in texts]  # its own chunks always fit
    # every head late: windows hold any chunk, nothing is refused (nor tokenised)
    assert LateChunker(small, chunk_size=60, window=16).oversized(texts) == over


def test_rounds_part_documents_whose_same_text_has_other_spans() -> None:
    """The stored-spans splitter looks spans up by text, so one call must not hold two
    documents with the same text and other spans; everything else shares the first call."""
    from types import SimpleNamespace
    from typing import Any

    from m3kit.store.reindex_fit import rounds

    def plan(doc_id: str, text: str, spans: list[tuple[int, int]]) -> Any:
        return SimpleNamespace(doc_id=doc_id, text=text, spans=lambda: spans)

    docs = [
        plan("a", "x y", [(0, 3)]),
        plan("b", "x y", [(0, 1), (1, 3)]),  # same text, other spans: a second call
        plan("c", "x y", [(0, 3)]),  # same as a: a's call
        plan("d", "z", [(0, 1)]),
        plan("e", "x y", [(0, 2), (2, 3)]),  # a third split of the same text
    ]
    assert [[p.doc_id for p in call] for call in rounds(docs)] == [
        ["a", "c", "d"],
        ["b"],
        ["e"],
    ]


def test_a_refusal_while_a_reindex_is_pending_says_it_stays_pending(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    path_b: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interrupted reindex has written already: a later one refused by the check leaves it
    pending, and the error says so instead of "Nothing was written"."""
    from tests.reliability.killing import FailingEncoder

    _fill(enc_a, tmp_path, "edge", NaiveChunker(enc_a, chunk_size=20))
    monkeypatch.setattr(M3Index, "write_group", 2)
    with pytest.raises(RuntimeError, match="interrupted"):
        M3Index.open(
            FailingEncoder(enc_b, 2),  # type: ignore[arg-type]
            tmp_path,
            collection="c",
            backend="edge",
            reindex=True,
        )
    small = M3Encoder.from_pretrained(path_b, dtype="fp32", max_length=16)
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.reindex"),
        pytest.raises(ValueError) as err,
    ):
        M3Index.open(small, tmp_path, collection="c", backend="edge", reindex=True)
    msg = str(err.value)
    assert "the reindex stays pending" in msg and "Nothing was written" not in msg, msg
    assert "is replaced by" not in caplog.text  # the refused reindex replaced nothing
    with M3Index.open(enc_b, tmp_path, collection="c", backend="edge", reindex=True) as index:
        assert "reindex_to" not in index.store.collection_metadata()  # finished as before
        assert _stamps(index) == {index.fingerprint.identity}
