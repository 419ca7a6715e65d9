"""``m3kit index``: what it deletes besides what it replaces (m3kit.cli_prune).

Positional jsonl rows (``<file>:<line>``) belong to their file and are cleaned up on every
run; ``--prune`` deletes only documents the file reader wrote whose file is gone (or no
longer holds them), and can prune a path that no longer exists.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.cli_prune import stale_documents
from m3kit.sources import SourceRead, positional_id, read_sources, reader_origin
from m3kit.store import M3Index
from tests.cli.index_runs import index_run, stored_texts


def _rows(path: Path, *texts: str) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def test_positional_rows_follow_their_file_without_prune(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    rows, other = docs / "rows.jsonl", docs / "other.jsonl"
    _rows(rows, "row one alpha", "row two beta", "row three gamma")
    _rows(other, "other one", "other two")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    # a library document whose id merely looks positional is not the reader's: kept
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        index.add_texts(["added by hand"], doc_ids=[f"{rows.resolve()}:9"])
    # the first row removed: the others move up a line, the last line's id is stale
    _rows(rows, "row two beta", "row three gamma")
    code, out = index_run(capsys, store, tiny_m3_path, rows)  # the file alone, no --prune
    assert code == 0 and "removed 1 jsonl row(s) no longer at their line" in out, out
    r, o = rows.resolve(), other.resolve()
    assert stored_texts(store, tiny_m3_path) == {
        f"{r}:1": "row two beta",
        f"{r}:2": "row three gamma",
        f"{r}:9": "added by hand",
        f"{o}:1": "other one",  # another file's rows: not read now, kept
        f"{o}:2": "other two",
    }
    # nothing left to remove: the next run says nothing about rows
    code, out = index_run(capsys, store, tiny_m3_path, docs)
    assert code == 0 and "jsonl row" not in out, out


def test_prune_keeps_documents_the_reader_did_not_write(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, docs = tmp_path / "store", tmp_path / "docs"
    (docs / ".drafts").mkdir(parents=True)
    (docs / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    draft = docs / ".drafts" / "p.md"
    draft.write_text("Paris is the capital of France.", encoding="utf-8")
    pdf = docs / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    assert index_run(capsys, store, tiny_m3_path, docs, draft)[0] == 0  # hidden: named explicitly
    # LangChain loaders put the file in "source" (PyPDFLoader: the PDF; this one is gone)
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        index.add_texts(
            ["Quarterly revenue grew 12%.", "An old page."],
            metadatas=[
                {"source": str(pdf.resolve()), "page": 0},
                {"source": str(docs.resolve() / "gone.pdf"), "page": 3},
            ],
            doc_ids=["pdf-page", "gone-page"],
        )
    code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
    assert code == 0 and "removed 0 document(s) no longer there" in out, out
    ids = set(stored_texts(store, tiny_m3_path))
    assert ids == {str((docs / "a.md").resolve()), str(draft.resolve()), "pdf-page", "gone-page"}
    # once the hidden file is deleted, pruning docs/ removes it
    draft.unlink()
    code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert str(draft.resolve()) not in stored_texts(store, tiny_m3_path)


def test_prune_a_path_that_no_longer_exists(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, notes = tmp_path / "store", tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    moved = tmp_path / "notes2"
    shutil.move(notes, moved)
    assert index_run(capsys, store, tiny_m3_path, moved)[0] == 0
    # without --prune a missing path stays an error
    code, out = index_run(capsys, store, tiny_m3_path, notes)
    assert code == 1 and f"{notes}: no such file or folder" in out, out
    # --prune alone refuses it while documents indexed from it are stored (an unmounted
    # share looks the same); --prune-missing prunes it
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 1 and "run with --prune-missing to delete them" in out, out
    assert len(stored_texts(store, tiny_m3_path)) == 2
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune-missing")
    assert code == 0, out
    assert f"{notes}: no such file or folder; pruning what was indexed from it" in out
    assert "indexed 0 document(s)" in out and "removed 1 document(s) no longer there" in out
    assert set(stored_texts(store, tiny_m3_path)) == {str((moved / "a.md").resolve())}
    # a missing path nothing was ever pruned from (mistyped) exits 1 after doing the rest
    # of the run; one an earlier run pruned (a scheduled job's old path) is fine
    (moved / "b.md").write_text("Paris is the capital of France.", encoding="utf-8")
    typo = tmp_path / "noets"
    code, out = index_run(capsys, store, tiny_m3_path, moved, notes, typo, "--prune")
    assert code == 1, out
    assert f"{typo}: no such file or folder, and nothing indexed from it" in out
    assert f"{notes}: no such file or folder, and" not in out
    assert "indexed 2 document(s)" in out and "removed 0 document(s) no longer there" in out
    assert str((moved / "b.md").resolve()) in stored_texts(store, tiny_m3_path)
    code, out = index_run(capsys, store, tiny_m3_path, moved, notes / "a.md", "--prune")
    assert code == 0, out  # under a pruned folder: pruned too
    # re-created, indexed and deleted again: pruned again
    notes.mkdir()
    (notes / "c.md").write_text("Rome is the capital of Italy.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    shutil.rmtree(notes)
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune-missing")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert index_run(capsys, store, tiny_m3_path, notes, "--prune")[0] == 0
    (moved / "b.md").unlink()
    assert index_run(capsys, store, tiny_m3_path, moved, "--prune")[0] == 0
    assert set(stored_texts(store, tiny_m3_path)) == {str((moved / "a.md").resolve())}
    # an existing folder without a file to read (an unmounted mount point is one) stays an
    # error, with --prune too: pruning it would delete everything indexed from it
    (moved / "a.md").unlink()
    for extra in ((), ("--prune",)):
        code, out = index_run(capsys, store, tiny_m3_path, moved, *extra)
        assert code == 1 and "folder holds no" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str((moved / "a.md").resolve())}
    # ... but --prune-missing prunes on purpose: it failed the same way, so the documents of
    # a folder whose last file was deleted could not be removed by any flag
    code, out = index_run(capsys, store, tiny_m3_path, moved, "--prune-missing")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert stored_texts(store, tiny_m3_path) == {}


def test_reader_origin_knows_what_the_reader_wrote(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("alpha", encoding="utf-8")
    rows = [{"text": "x"}, {"_id": "own", "text": "y", "source": "wiki", "line": "L"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    read = read_sources([tmp_path])
    for doc in read.documents:  # every document the reader writes is recognised as its own
        origin = doc.metadata.get("m3kit_source", doc.metadata["source"])
        assert reader_origin(doc.doc_id, doc.metadata) == origin
    md = str((tmp_path / "a.md").resolve())
    assert reader_origin("hash", {"source": md, "file_name": "a.md"}) is None  # other id
    assert reader_origin(md, {"source": md, "file_name": "a.md", "page": 1}) is None
    assert reader_origin(md, {"source": md}) is None
    assert reader_origin("p", {"source": "/x/report.pdf", "file_name": "report.pdf"}) is None
    assert reader_origin("r", {"source": "rows.jsonl", "file_name": "r", "line": 1}) is None
    assert positional_id("/d/r.jsonl:3", "/d/r.jsonl")
    assert not positional_id("/d/r.jsonl.bak:3", "/d/r.jsonl")
    assert not positional_id("/d/r.jsonl:03", "/d/r.jsonl")
    assert not positional_id("/d/r.jsonl:3:4", "/d/r.jsonl")
    # nothing read, no --prune: nothing stale
    stored = {md: {"source": md, "file_name": "a.md"}}
    assert stale_documents(stored, SourceRead([], []), roots=None).pruned == []


def test_an_emptied_jsonl_is_cleaned_up(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every row removed from a jsonl (the file kept): the run failed with "no text to
    index", also with --prune, and the rows stayed searchable."""
    store, rows = tmp_path / "store", tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"text": "positional row"}) + "\n" + json.dumps({"_id": "k", "text": "kept id"}),
        encoding="utf-8",
    )
    assert index_run(capsys, store, tiny_m3_path, rows)[0] == 0
    rows.write_text("", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, rows)
    assert code == 0 and "removed 1 jsonl row(s)" in out, out
    assert list(stored_texts(store, tiny_m3_path)) == ["k"]  # an id'd row goes with --prune only
    code, out = index_run(capsys, store, tiny_m3_path, rows, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert stored_texts(store, tiny_m3_path) == {}


def test_a_row_with_the_reserved_key_is_refused(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row's own ``m3kit_source`` was kept as the file it came from: cleanup then looked
    for it in that other file (its moved line kept, served twice; pruned with the other
    file's folder; kept after its own file was deleted). Refused before anything is written."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    rows = docs / "rows.jsonl"
    _rows(rows, "row one alpha", "row two beta")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    (docs / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    other = str(tmp_path / "old" / "gone.jsonl")
    rows.write_text(json.dumps({"text": "row two beta", "m3kit_source": other}) + "\n")
    code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
    assert code == 1, out
    assert out.strip() == (
        f"m3kit index: error: {rows.resolve()}:1: the row has the key 'm3kit_source', which "
        "m3kit keeps for the file a row was read from; rename the key"
    )
    stored = {f"{rows.resolve()}:{n}": t for n, t in ((1, "row one alpha"), (2, "row two beta"))}
    assert stored_texts(store, tiny_m3_path) == stored  # nothing written, nothing deleted


def test_a_loop_of_links_is_refused_before_anything_is_written(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A given path that is a loop of symbolic links: with ``--prune`` it was taken for a
    path no longer there, the other paths were written, then resolving it for the pruning
    crashed with a traceback (``RuntimeError: Symlink loop``), nothing pruned. It is refused
    up front now, with or without ``--prune``, naming it."""
    store, notes = tmp_path / "store", tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for extra in ((), ("--prune",)):
        code, out = index_run(capsys, store, tiny_m3_path, notes, loop, *extra)
        assert code == 1 and f"{loop}: a loop of symbolic links" in out, out
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert not store.exists() or not stored_texts(store, tiny_m3_path)


def test_prune_without_paths_is_refused(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``m3kit index --reindex --prune`` pruned nothing (``--prune`` looks under the given
    paths only) and said "removed 0 document(s) no longer there", as if nothing were stale
    while a deleted file's document stayed searchable. It is an error now, naming what
    ``--prune`` needs, before anything is done."""
    store, notes = tmp_path / "store", tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    (notes / "b.md").write_text("Paris is the capital of France.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    (notes / "b.md").unlink()
    code, out = index_run(capsys, store, tiny_m3_path, "--reindex", "--prune")
    assert code == 1 and "--prune needs the files or folders whose documents it prunes" in out
    assert len(out.strip().splitlines()) == 1, out
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out


def test_a_vanished_folder_is_pruned_only_on_purpose(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A given folder that no longer exists was pruned of everything indexed from it, exit 0:
    a share or drive that is not mounted (``/mnt/nas/docs`` gone with it) emptied a nightly
    ``m3kit index /mnt/nas/docs --prune``'s collection. It is refused now, before anything is
    written, naming the folder and ``--prune-missing``, which prunes it on purpose."""
    store, share, local = tmp_path / "store", tmp_path / "nas" / "docs", tmp_path / "local"
    share.mkdir(parents=True)
    local.mkdir()
    (share / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    (share / "b.md").write_text("Paris is the capital of France.", encoding="utf-8")
    (local / "c.md").write_text("Rome is the capital of Italy.", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert index_run(capsys, store, tiny_m3_path, "nas/docs", "local", "--prune")[0] == 0
    before = stored_texts(store, tiny_m3_path)
    assert len(before) == 3
    shutil.rmtree(tmp_path / "nas")  # unmounted: the folder is gone with the share
    (local / "d.md").write_text("Madrid is the capital of Spain.", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, "nas/docs", "local", "--prune")
    assert code == 1, out
    assert out.strip() == (
        "m3kit index: error: nas/docs: no such file or folder, and 2 stored document(s) were "
        "indexed from it; --prune does not delete them (a drive or share that is not mounted "
        "looks the same): mount it again, or run with --prune-missing to delete them"
    )
    assert stored_texts(store, tiny_m3_path) == before  # nothing deleted, nothing written
    # the same relative path from another folder names another path: nothing deleted
    monkeypatch.chdir(local)
    code, out = index_run(capsys, store, tiny_m3_path, "nas/docs", "--prune")
    assert code == 1 and "nothing indexed from it was pruned" in out, out
    assert stored_texts(store, tiny_m3_path) == before
    # on purpose: pruned, said on stderr; later scheduled runs with --prune exit 0
    monkeypatch.chdir(tmp_path)
    code, out = index_run(capsys, store, tiny_m3_path, "nas/docs", "local", "--prune-missing")
    assert code == 0 and "nas/docs: no such file or folder; pruning what was indexed" in out
    assert "removed 2 document(s) no longer there" in out, out
    assert sorted(stored_texts(store, tiny_m3_path)) == [
        str((local / "c.md").resolve()),
        str((local / "d.md").resolve()),
    ]
    code, out = index_run(capsys, store, tiny_m3_path, "nas/docs", "local", "--prune")
    assert code == 0 and "removed 0 document(s) no longer there" in out, out


def test_a_share_mounted_inside_the_tree_is_pruned_only_on_purpose(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share mounted inside an indexed tree (``docs/nas``) leaves its mount point behind,
    empty, when it is not mounted: ``m3kit index docs --prune`` pruned everything indexed from
    it, exit 0. Each run records the mount points it read under; ``--prune`` refuses to prune
    under one not mounted now, naming it and ``--prune-missing``. (``os.path.ismount`` is
    stubbed: a test cannot mount.) A folder emptied by hand is pruned as before."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    nas = docs / "nas"
    nas.mkdir(parents=True)
    mounted = [True]
    real = os.path.ismount
    monkeypatch.setattr(
        os.path, "ismount", lambda p: mounted[0] if Path(p) == nas.resolve() else real(p)
    )
    (docs / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    (nas / "b.md").write_text("Paris is the capital of France.", encoding="utf-8")
    (nas / "c.md").write_text("Rome is the capital of Italy.", encoding="utf-8")
    (docs / "old").mkdir()
    (docs / "old" / "d.md").write_text("Madrid is the capital of Spain.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, str(docs))[0] == 0  # records docs/nas
    (docs / "old" / "d.md").unlink()  # a folder emptied by hand: pruned as before
    code, out = index_run(capsys, store, tiny_m3_path, str(docs), "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    before = stored_texts(store, tiny_m3_path)
    mounted[0] = False  # unmounted: the mount point stays, empty
    for f in nas.iterdir():
        f.unlink()
    assert index_run(capsys, store, tiny_m3_path, str(docs))[0] == 0  # no --prune: kept
    code, out = index_run(capsys, store, tiny_m3_path, str(docs), "--prune")
    assert code == 1, out
    assert f"{nas.resolve()}: a mount point when it was indexed, not mounted now, and 2 " in out
    assert "--prune-missing" in out
    assert stored_texts(store, tiny_m3_path) == before
    code, out = index_run(capsys, store, tiny_m3_path, str(docs), "--prune-missing")
    assert code == 0 and "removed 2 document(s) no longer there" in out, out
    assert list(stored_texts(store, tiny_m3_path)) == [str((docs / "a.md").resolve())]
    code, out = index_run(capsys, store, tiny_m3_path, str(docs), "--prune")  # forgotten
    assert code == 0 and "removed 0 document(s) no longer there" in out, out


def test_reindex_of_a_collection_that_does_not_exist_is_refused(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--reindex`` alone (a mistyped ``--collection``) created an empty collection and
    reported "re-encoded 0 stored document(s)" with status 0."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    code, out = index_run(capsys, store, tiny_m3_path, "--reindex", "--collection", "typo")
    assert code == 1 and "'typo' does not exist" in out, out
    assert sorted(p.name for p in store.iterdir()) == ["m3kit"]  # no empty "typo" made


def test_a_nan_in_a_jsonl_row_names_its_file_and_line(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's ``json`` reads ``NaN`` / ``Infinity``: the store refused the value later as
    "metadata of text 4 is not JSON" (a position among every file's documents), after the
    model loaded and an empty collection was made."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    rows = ['{"text": "a"}', '{"text": "b"}', '{"text": "bad", "score": NaN}']
    (docs / "z.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, docs)
    assert code == 1 and f"{(docs / 'z.jsonl').resolve()}:3: NaN is not JSON" in out, out
    assert not store.exists()
    # a number past float's range is read as inf: the same late "metadata of text N" error
    rows[2] = '{"text": "bad", "price": 1e400}'
    (docs / "z.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, docs)
    where = f"{(docs / 'z.jsonl').resolve()}:3"
    assert code == 1 and f"{where}: 1e400 is beyond a float's range" in out, out
    assert not store.exists()


def test_the_summary_names_emptied_documents_beside_moved_rows(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With jsonl rows moved in the same run, the summary's "removed N emptied document(s)"
    was overwritten by the moved rows' count."""
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    rows = src / "rows.jsonl"

    def write(items: list[dict[str, str]]) -> None:
        rows.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")

    write([{"id": "a", "text": "alpha is first"}, {"text": "beta"}, {"text": "gamma"}])
    assert index_run(capsys, store, tiny_m3_path, src)[0] == 0
    write([{"id": "a", "text": ""}, {"text": "beta"}])  # a emptied; the row at line 3 gone
    code, out = index_run(capsys, store, tiny_m3_path, src)
    assert code == 0 and "removed 1 emptied document(s)" in out, out
    assert "jsonl row(s) no longer at their line" in out, out


def test_rows_that_only_moved_in_a_jsonl_file_are_not_encoded_again(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's ``line`` is in its metadata, so removing the first of 50 rows with ids made
    every row below it a new version: 49 rows encoded again (hours on a large corpus with
    BGE-M3). Their metadata is now updated in place."""
    encoded: list[int] = []
    encode_tokenized = M3Encoder.encode_tokenized

    def spy(self: M3Encoder, ids: Any, **kwargs: Any) -> Any:
        encoded.append(len(ids))
        return encode_tokenized(self, ids, **kwargs)

    monkeypatch.setattr(M3Encoder, "encode_tokenized", spy)
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    rows = [{"id": f"r{i}", "text": f"row number {i} about topic {i % 7}"} for i in range(50)]

    def write(items: list[dict[str, str]]) -> None:
        (src / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), "utf-8")

    write(rows)
    assert index_run(capsys, store, tiny_m3_path, src)[0] == 0
    assert sum(encoded) == 50
    encoded.clear()
    write(rows[1:])  # the first row removed: every other row moves up one line
    assert index_run(capsys, store, tiny_m3_path, src, "--prune")[0] == 0
    assert sum(encoded) == 0
    write([{"id": "new", "text": "a new first row"}, *rows[1:]])  # one inserted at the top
    assert index_run(capsys, store, tiny_m3_path, src)[0] == 0
    assert sum(encoded) == 1
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32"), store) as index:
        meta = index.store.document_metadata(["r1", "r49"])
        assert (meta["r1"]["line"], meta["r49"]["line"]) == (2, 50)
        assert sorted(index.store.document_metadata()) == sorted(
            ["new", *(r["id"] for r in rows[1:])]
        )


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the run happens."""


def test_a_run_killed_after_its_prune_leaves_the_path_known_as_pruned(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the path was recorded as pruned only after the prune's delete: a run killed between
    # the two made every later run call the path "a mistyped path?" and exit 1
    store, docs, old = tmp_path / "store", tmp_path / "docs", tmp_path / "old"
    for folder, text in ((docs, "Alpha comes first."), (old, "Beta comes second.")):
        folder.mkdir()
        (folder / "a.md").write_text(text, encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, docs, old)[0] == 0
    shutil.rmtree(old)
    real_delete = M3Index.delete

    def delete_then_die(self: M3Index, *args: Any, **kwargs: Any) -> Any:
        real_delete(self, *args, **kwargs)
        raise _Killed

    monkeypatch.setattr(M3Index, "delete", delete_then_die)
    with pytest.raises(_Killed):
        index_run(capsys, store, tiny_m3_path, docs, old, "--prune-missing")
    monkeypatch.undo()
    for flag in ("--prune-missing", "--prune"):
        code, out = index_run(capsys, store, tiny_m3_path, docs, old, flag)
        assert code == 0 and "mistyped" not in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str((docs / "a.md").resolve())}
