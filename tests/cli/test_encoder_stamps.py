"""``m3kit search`` / ``m3kit index`` on a collection holding chunks another encoder wrote
after it was re-encoded (a late writer of the old model) are refused with the library's
message, and ``m3kit index --reindex`` (the recorded model) redoes those chunks.

Before, ``m3kit search`` opened such a collection without a word and ranked the two
encoders' vectors together (or failed mid-search when a hit was such a chunk)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import M3Index
from tests.store.conftest import checked_against


def _late_writer_after_a_reindex(
    tmp_path: Path, enc_a: M3Encoder, enc_b: M3Encoder, backend: str
) -> Path:
    """A collection indexed with A and re-encoded with B (its record names B's model); then a
    writer opened before the reindex stores one document with A."""
    store = tmp_path / "store"
    service = M3Index.open(enc_a, str(store), backend=backend)
    service.add_texts([f"document {i} is about topic {i % 3}." for i in range(6)])
    before = service.store.collection_metadata()
    M3Index(enc_b, copy.copy(service.store), reindex=True)
    with checked_against(service.store, before):  # its record check raced the reindex
        service.add_texts(["a late document about rivers"], doc_ids=["late"])
    service.close()
    return store


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_chunks_of_another_encoder_are_refused_and_reindex_redoes_them(
    tmp_path: Path,
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    store = _late_writer_after_a_reindex(tmp_path, enc_a, enc_b, backend)
    where = ["--path", str(store), "--backend", backend, "--dtype", "fp32", "-q"]
    doc = tmp_path / "new.txt"
    doc.write_text("a new document about topic 1.", encoding="utf-8")
    for command in (["search", "topic"], ["index", str(doc)]):
        capsys.readouterr()
        assert main([*command, *where]) == 1  # without --model: the recorded one, B
        err = capsys.readouterr().err
        assert r"1 chunk(s) of 1 document(s)" in err, err
        assert "m3kit index --reindex" in err, err
    assert main(["index", "--reindex", *where]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["search", "rivers", *where]) == 0, capsys.readouterr().err
    assert "rivers" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_damaged_record_is_named_with_its_mend(
    tmp_path: Path,
    enc_a: M3Encoder,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    """A record whose fingerprint lost a field: ``m3kit search`` (the recorded model) and
    ``m3kit search --model`` said only "stored fingerprint lacks the field 'weights'"."""
    store = tmp_path / "store"
    with M3Index.open(enc_a, str(store), backend=backend) as index:
        index.add_texts(["a document about rivers."])
        meta = index.store.collection_metadata()
        del meta["fingerprint"]["weights"]
        index.store.set_collection_metadata(meta)
    where = ["--path", str(store), "--backend", backend, "--dtype", "fp32", "-q"]
    for model in ([], ["--model", str(tiny_m3_path)]):
        capsys.readouterr()
        assert main(["search", "rivers", *where, *model]) == 1
        err = capsys.readouterr().err
        assert "collection 'm3kit'" in err and "damaged m3kit record" in err, err
        assert "lacks the field 'weights'" in err and "reindex=True" in err, err
