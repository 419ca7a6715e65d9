"""A collection knows its encoder: another one is refused, ``reindex=True`` re-encodes in place."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import chunking_signature, describe_settings, encoder_fingerprint
from m3kit.store import ChunkRecord, M3Index, M3Store, output_row
from m3kit.store.filters import documents_filter
from m3kit.store.schema import ENCODER_ID
from tests.reliability.killing import FailingEncoder, assert_same_points, index_points

from .conftest import LONG, WHOLE, SentenceChunker, checked_against, fill, named_call


# -- the fingerprint ----------------------------------------------------------------------------
def test_fingerprint_names_weights_not_precision(
    enc_a: M3Encoder, enc_b: M3Encoder, tiny_m3_path: Path
) -> None:
    a, b = encoder_fingerprint(enc_a), encoder_fingerprint(enc_b)
    assert encoder_fingerprint(enc_a) is a  # computed once per encoder
    assert [d[0] for d in a.differences(b)] == ["weights"]
    bf16 = encoder_fingerprint(M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16"))
    assert bf16.same_encoder(a) and bf16.precision != a.precision
    short = encoder_fingerprint(M3Encoder.from_pretrained(tiny_m3_path, max_length=128))
    assert [d[0] for d in a.differences(short)] == ["max_length"]
    asked = M3Encoder.from_pretrained(tiny_m3_path, query_instruction="Query: ")
    assert [d[0] for d in a.differences(encoder_fingerprint(asked))] == ["query_instruction"]
    assert a.model == str(tiny_m3_path.resolve())
    assert type(a).from_dict(a.to_dict()) == a


def test_chunking_signature_sees_every_setting() -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    def split(text: str, size: int) -> list[tuple[int, int]]:
        return [(0, len(text))]

    small = RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=0)
    assert chunking_signature(small) == chunking_signature(
        RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=0)
    )
    assert chunking_signature(small) != chunking_signature(
        RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=10)
    )
    assert describe_settings(functools.partial(split, size=1)) != describe_settings(
        functools.partial(split, size=2)
    )
    assert " at 0x" not in chunking_signature(small)


# -- open with another encoder ------------------------------------------------------------------
def test_other_encoder_is_refused_and_nothing_is_written(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    index = M3Index.open(enc_a, tmp_path, collection="c", backend=backend)
    fill(index, enc_a, WHOLE, LONG)
    before, record = index_points(index), index.store.collection_metadata()
    index.close()
    with pytest.raises(FingerprintMismatchError) as err:
        M3Index.open(enc_b, tmp_path, collection="c", backend=backend)
    msg = str(err.value)
    assert "weights: stored 'files-sha256:" in msg and "vs new 'files-sha256:" in msg
    assert "reindex=True" in msg and "new collection" in msg
    again = M3Index.open(enc_a, tmp_path, collection="c", backend=backend)  # lock released
    opened.append(again)
    assert_same_points(index_points(again), before)
    assert again.store.collection_metadata() == record


def test_reindex_equals_a_fresh_index_with_the_new_encoder(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    index = M3Index.open(enc_a, tmp_path / "a", collection="c", backend=backend)
    fill(index, enc_a, WHOLE, LONG)
    count = index.count()
    assert count > len(WHOLE) + len(LONG)  # the long documents have several chunks
    index.close()

    fresh = M3Index.open(enc_b, tmp_path / "b", collection="c", backend=backend)
    opened.append(fresh)
    fill(fresh, enc_b, WHOLE, LONG)
    re = M3Index.open(enc_b, tmp_path / "a", collection="c", backend=backend, reindex=True)
    opened.append(re)
    assert re.count() == count
    got, want = index_points(re), index_points(fresh)
    assert {p[ENCODER_ID] for p, _ in got.values()} == {re.fingerprint.identity}
    assert_same_points(got, want)
    assert re.store.collection_metadata() == fresh.store.collection_metadata()
    # the re-encoded documents count as unchanged for the new encoder: nothing is rewritten
    fill(re, enc_b, WHOLE, LONG)
    assert_same_points(index_points(re), want)


def test_reindex_keeps_the_writers_chunk_ids(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    index = M3Index.open(enc_a, tmp_path / "a", collection="c", backend=backend)
    text = "A whole document written with its own chunk id."
    vectors = output_row(enc_a.encode([text]), 0)
    whole = {"kind": "whole"}
    record = ChunkRecord("d", 0, text, {}, vectors, 0, len(text), chunking=whole, chunk_id="n-1")
    index.store.upsert([record])
    index.close()
    re = M3Index.open(enc_b, tmp_path / "a", collection="c", backend=backend, reindex=True)
    opened.append(re)
    (hit,) = re.store.find(["n-1"])
    assert hit.text == text
    assert index_points(re)[hit.id][0][ENCODER_ID] == re.fingerprint.identity


def test_interrupted_reindex_blocks_both_encoders_until_finished(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    opened: list[M3Index],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [f"document {i} about topic {i % 3}." for i in range(10)]
    ids = [f"d{i}" for i in range(10)]
    for where, encoder in (("crashed", enc_a), ("fresh", enc_b)):
        with M3Index.open(encoder, tmp_path / where, collection="c", backend=backend) as index:
            index.add_texts(texts, doc_ids=ids)
    monkeypatch.setattr(M3Index, "write_group", 4)
    with pytest.raises(RuntimeError, match="interrupted"):
        M3Index.open(
            FailingEncoder(enc_b, 2),  # type: ignore[arg-type]
            tmp_path / "crashed",
            collection="c",
            backend=backend,
            reindex=True,
        )
    with pytest.raises(FingerprintMismatchError, match="interrupted"):
        M3Index.open(enc_a, tmp_path / "crashed", collection="c", backend=backend)
    with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
        M3Index.open(enc_b, tmp_path / "crashed", collection="c", backend=backend)
    spy = FailingEncoder(enc_b, 0)
    done = M3Index.open(
        spy,  # type: ignore[arg-type]
        tmp_path / "crashed",
        collection="c",
        backend=backend,
        reindex=True,
    )
    opened.append(done)
    assert spy.calls == 2  # the first group was kept; groups 2 and 3 were encoded now
    fresh = M3Index.open(enc_b, tmp_path / "fresh", collection="c", backend=backend)
    opened.append(fresh)
    assert_same_points(index_points(done), index_points(fresh))


def test_precision_change_is_recorded_by_the_first_write_not_refused(
    enc_a: M3Encoder, tiny_m3_path: Path, backend: str, tmp_path: Path
) -> None:
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()))
    bf16 = M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16")
    with M3Index.open(bf16, tmp_path, collection="c", backend=backend) as index:
        assert index.store.collection_metadata()["fingerprint"]["precision"] == "fp32"
        index.add_texts(["one more text"], doc_ids=["more"])
        assert index.store.collection_metadata()["fingerprint"]["precision"] == "bf16"


_WRITES = ("create", "write_metadata", "create_payload_index", "upsert", "set_payload", "delete")


@pytest.mark.parametrize("other", ["bf16", "copy"])
def test_a_search_with_the_same_encoder_elsewhere_writes_nothing(
    enc_a: M3Encoder,
    tiny_m3_path: Path,
    backend: str,
    tmp_path: Path,
    other: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same weights at another precision (a CPU without bf16) or from another folder (a
    search machine's own copy): opening the collection to search it wrote the new precision
    or path into the collection's record, so a search service holding a read-only API key
    was refused at open, and two machines rewrote the record in turn. Only a write records
    it now."""
    import shutil

    with M3Index.open(enc_a, tmp_path / "db", collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()))
        recorded = index.store.collection_metadata()
    if other == "bf16":
        enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16")
    else:
        enc = M3Encoder.from_pretrained(shutil.copytree(tiny_m3_path, tmp_path / "copy"))
    from m3kit.store.client_backend import ClientBackend
    from m3kit.store.edge_backend import EdgeBackend

    writes: list[str] = []
    for cls in (ClientBackend, EdgeBackend):
        for name in _WRITES:

            def refuse(*args: object, _name: str = name) -> None:
                writes.append(_name)
                raise PermissionError("a read-only API key")

            monkeypatch.setattr(cls, name, refuse)
    index = M3Index.open(enc, tmp_path / "db", collection="c", backend=backend, create=False)
    assert index.search("Paris", k=2)
    assert index.store.collection_metadata() == recorded
    monkeypatch.undo()
    index.close()
    assert writes == []


def test_collection_without_record_is_adopted_with_a_warning(
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    backend: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()))
        # as written before fingerprints existed: no record, no stamps
        index.store.set_collection_metadata({})
        index.store._backend.set_payload([(models.Filter(), {ENCODER_ID: None})])
    with (
        caplog.at_level(logging.WARNING),
        M3Index.open(enc_b, tmp_path, collection="c", backend=backend) as index,
    ):
        assert index.store.collection_metadata()["fingerprint"] == index.fingerprint.to_dict()
    assert "no record of the encoder" in caplog.text and "reindex=True" in caplog.text


def _stamps(index: M3Index) -> set[object]:
    return {h.payload.get(ENCODER_ID) for h in index.store._backend.scroll(None, [ENCODER_ID])}


def test_stamped_chunks_of_another_encoder_are_not_adopted(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """A collection with no record whose chunks carry another encoder's stamp: opening it
    with B recorded B over A's vectors (and reindex=True with B then did nothing)."""
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        index.store.set_collection_metadata({})  # the record lost
    with pytest.raises(FingerprintMismatchError, match="3 of its chunks, of 3 document"):
        M3Index.open(enc_b, tmp_path, collection="c", backend=backend)
    done = M3Index.open(enc_b, tmp_path, collection="c", backend=backend, reindex=True)
    opened.append(done)
    assert _stamps(done) == {done.fingerprint.identity}


def test_a_collection_without_a_record_of_two_encoders_names_a_delete_that_works(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """No record, and one document stamped with an encoder nobody has at hand: no encoder
    opens it as it is, and the refusal named neither the documents nor a delete call (the
    way out where reindex=True cannot rebuild them: a custom chunker's). The named call, as
    pasted, clears it; then the collection opens, adopting the encoder."""
    first = next(iter(WHOLE))
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        index.store._backend.set_payload([(documents_filter([first]), {ENCODER_ID: "gone"})])
        index.store.set_collection_metadata({})  # the record lost
    with pytest.raises(FingerprintMismatchError) as caught:
        M3Index.open(enc_a, tmp_path, collection="c", backend=backend)
    message = str(caught.value)
    assert "1 of its chunks, of 1 document(s)" in message and "'gone'" in message
    assert eval(named_call(message), {"M3Store": M3Store}) == 1  # its one chunk, as pasted
    again = M3Index.open(enc_a, tmp_path, collection="c", backend=backend)
    opened.append(again)
    assert set(again.store.document_metadata(list(WHOLE))) == set(WHOLE) - {first}
    assert _stamps(again) == {again.fingerprint.identity}


def test_reindex_with_the_recorded_encoder_redoes_chunks_of_others(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """reindex=True with the recorded encoder returned before looking for chunks another
    encoder stamped (a writer still holding the old model, say)."""
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        first = next(iter(WHOLE))
        index.store._backend.set_payload([(documents_filter([first]), {ENCODER_ID: "another"})])
        assert _stamps(index) == {"another", index.fingerprint.identity}
    done = M3Index.open(enc_a, tmp_path, collection="c", backend=backend, reindex=True)
    opened.append(done)
    assert _stamps(done) == {done.fingerprint.identity}


def test_reindex_refuses_chunkings_it_cannot_redo(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(["One. Two. Three."], doc_ids=["s"], chunker=SentenceChunker(enc_a))
        before = index_points(index)
    with pytest.raises(ValueError, match="reindex cannot rebuild 1 stored document.*'s'"):
        M3Index.open(enc_b, tmp_path, collection="c", backend=backend, reindex=True)
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        assert_same_points(index_points(index), before)


# -- the command line ---------------------------------------------------------------------------
def test_cli_search_uses_the_indexing_model_and_reindex_switches_it(
    tiny_m3_path: Path, path_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    from m3kit.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {**WHOLE, **LONG}.items():
        (docs / f"{name}.txt").write_text(text, encoding="utf-8")
    model_a = tmp_path / "model_a"
    shutil.copytree(tiny_m3_path, model_a)
    where = ["--path", str(tmp_path / "db"), "--dtype", "fp32", "-q"]

    assert main(["index", str(docs), "--model", str(model_a), *where]) == 0
    capsys.readouterr()
    # no --model: the collection's model (the default BAAI/bge-m3 is not available offline)
    assert main(["search", "Amazon rivers", "--json", *where]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and hits[0]["doc_id"].endswith("l1.txt")

    assert main(["index", str(docs), "--model", str(path_b), *where]) == 1
    err = capsys.readouterr().err
    assert "indexed with another encoder" in err and "--reindex" in err
    assert main(["index", "--reindex", "--model", str(path_b), *where]) == 0
    # it said "indexed 0 document(s)" after re-encoding every stored document
    out = capsys.readouterr().out
    assert f"re-encoded {len(WHOLE) + len(LONG)} stored document(s) into" in out, out
    assert "indexed" not in out
    with M3Index.open(
        M3Encoder.from_pretrained(path_b, dtype="fp32"), tmp_path / "db", collection="m3kit"
    ) as index:
        assert index.store.collection_metadata()["fingerprint"]["model"] == str(path_b.resolve())
    assert main(["search", "Amazon rivers", "--json", *where]) == 0  # now with model B
    assert json.loads(capsys.readouterr().out)["hits"]
    assert main(["index", "--reindex", str(docs), "--model", str(path_b), *where]) == 0
    out = capsys.readouterr().out  # already model B's: nothing to re-encode, all unchanged
    assert f"re-encoded 0 stored document(s) and indexed {len(WHOLE) + len(LONG)}" in out, out

    shutil.rmtree(path_b.parent / "gone", ignore_errors=True)
    gone = shutil.copytree(path_b, path_b.parent / "gone")
    assert main(["index", str(docs), "--model", str(gone), "--collection", "g", *where]) == 0
    shutil.rmtree(gone)
    capsys.readouterr()
    assert main(["search", "Amazon", "--collection", "g", *where]) == 1
    err = capsys.readouterr().err
    assert "no longer exists" in err and "--model" in err


def test_a_reindex_keeps_what_another_writer_writes_meanwhile(
    enc_a: M3Encoder, enc_b: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service holding model A writes while a reindex to B runs (two processes on one
    server: two stores on one backend here), its record check having raced the start of the
    reindex (else it is refused: test_changed_under). The reindex put the edited document back
    as it had planned it, and recorded B over the service's new document in A's vectors."""
    import copy

    service = M3Index.open(enc_a, None, collection="c", backend="client")
    service.add_texts([f"document {i} about topic {i % 3}." for i in range(10)],
                      doc_ids=[f"d{i}" for i in range(10)])  # fmt: skip

    class WritesMeanwhile:
        def __init__(self) -> None:
            self.fired = False

        def __getattr__(self, name: str) -> object:
            return getattr(enc_b, name)

        def encode_tokenized(self, *args: object, **kwargs: object) -> object:
            if not self.fired:
                self.fired = True
                with checked_against(service.store, before):  # its check raced the reindex
                    service.add_texts(
                        ["a new document", "document 3 edited"], doc_ids=["new", "d3"]
                    )
            return enc_b.encode_tokenized(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Index, "write_group", 4)
    before = service.store.collection_metadata()
    admin = M3Index(WritesMeanwhile(), copy.copy(service.store), reindex=True)  # type: ignore[arg-type]
    assert _stamps(admin) == {enc_fp := encoder_fingerprint(enc_b).identity}
    texts = {h.payload["doc_id"]: h.payload["page_content"]
             for h in admin.store._backend.scroll(None, ["doc_id", "page_content"])}  # fmt: skip
    assert texts["d3"] == "document 3 edited" and texts["new"] == "a new document"
    assert "reindex_to" not in admin.store.collection_metadata()
    assert admin.fingerprint.identity == enc_fp
    service.close()


def test_a_document_left_with_mixed_versions_is_reindexed(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """A document whose chunks carry two versions (a write cut short) is not "changed by
    another writer" to the reindex: it is re-encoded, and the reindex finishes."""
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        fill(index, enc_a, WHOLE, LONG)
        doc = next(iter(LONG))
        second = models.Filter(
            must=[
                models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc)),
                models.FieldCondition(key="chunk_index", match=models.MatchValue(value=1)),
            ]
        )
        index.store._backend.set_payload([(second, {"doc_hash": "an older version"})])
    done = M3Index.open(enc_b, tmp_path, collection="c", backend=backend, reindex=True)
    opened.append(done)
    assert _stamps(done) == {done.fingerprint.identity}


def test_reindex_with_the_recorded_encoder_keeps_its_own_older_chunks(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """Chunks this encoder wrote under the identity an earlier m3kit gave it (before
    config.json settings were part of it) are its own: reindex=True leaves them alone."""
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        legacy = index.fingerprint.legacy_identity
        index.store._backend.set_payload([(models.Filter(), {ENCODER_ID: legacy})])
    done = M3Index.open(enc_a, tmp_path, collection="c", backend=backend, reindex=True)
    opened.append(done)
    assert _stamps(done) == {legacy}  # nothing re-encoded


def test_cli_finishes_an_interrupted_reindex_with_its_target(
    tiny_m3_path: Path,
    path_b: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``m3kit index --reindex`` without --model after an interrupted A -> B reindex took the
    recorded model A and silently reindexed the collection back to A."""
    from m3kit.cli import main

    enc_a = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    enc_b = M3Encoder.from_pretrained(path_b, dtype="fp32")
    db = tmp_path / "db"
    with M3Index.open(enc_a, db, collection="c") as index:
        index.add_texts([f"document {i} about topic {i % 3}." for i in range(10)])
    monkeypatch.setattr(M3Index, "write_group", 4)
    with pytest.raises(RuntimeError, match="interrupted"):
        M3Index.open(FailingEncoder(enc_b, 2), db, collection="c", reindex=True)  # type: ignore[arg-type]
    where = ["--path", str(db), "--collection", "c", "--dtype", "fp32", "-q"]
    capsys.readouterr()
    assert main(["search", "topic", *where]) == 1
    assert "part-way through a reindex to" in capsys.readouterr().err
    assert main(["index", "--reindex", *where]) == 0
    with M3Index.open(enc_b, db, collection="c") as index:  # B's, nothing pending
        assert _stamps(index) == {index.fingerprint.identity}
        assert "reindex_to" not in index.store.collection_metadata()


def test_a_pending_record_never_overwrites_another_encoders(
    enc_a: M3Encoder, enc_b: M3Encoder, tiny_m3_path: Path, backend: str, tmp_path: Path
) -> None:
    """An index of A at bf16 left its record for its first write; an index of B then took the
    shared store over (reindex=True) and wrote: the pending A@bf16 record was written over B's,
    and the collection opened with neither encoder."""
    first = M3Index.open(enc_a, tmp_path, collection="c", backend=backend)
    first.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
    bf16 = M3Index(M3Encoder.from_pretrained(tiny_m3_path, dtype="bf16"), first.store)
    assert bf16.search("Paris", k=1)
    taken = M3Index(enc_b, first.store, reindex=True)
    taken.add_texts(["one more text"], doc_ids=["more"])
    assert first.store.collection_metadata()["fingerprint"] == taken.fingerprint.to_dict()
    first.store.close()
    with M3Index.open(enc_b, tmp_path, collection="c", backend=backend) as again:
        assert again.count() == len(WHOLE) + 1
