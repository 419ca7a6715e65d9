"""m3kit.sources: which files are read, the ids they get, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit.sources import find_files, read_documents, read_sources


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_folders_recursive_hidden_and_unsupported_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "a.md", "alpha")
    _write(tmp_path / "sub" / "deeper" / "b.txt", "beta")
    _write(tmp_path / "sub" / "c.jsonl", '{"text": "gamma"}\n')
    _write(tmp_path / ".m3kit" / "store.txt", "storage folder, never indexed")
    _write(tmp_path / ".hidden.md", "hidden")
    _write(tmp_path / "image.png", "not text")
    files = find_files([tmp_path])
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in files] == [
        "a.md",
        "sub/c.jsonl",
        "sub/deeper/b.txt",
    ]
    assert find_files([tmp_path / "a.md", tmp_path]) == files  # a file named twice counts once


def test_ids_are_stable_and_metadata_kept(tmp_path: Path) -> None:
    md = _write(tmp_path / "notes.md", "# Title\nbody")
    rows = [
        {"_id": "p1", "title": "T1", "text": "first", "year": 2020},
        {"id": 7, "text": "second"},
        {"text": "third", "tags": ["x"]},
    ]
    jl = _write(tmp_path / "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = read_documents([tmp_path])
    by_text = {d.text: d for d in docs}
    assert by_text["# Title\nbody"].doc_id == str(md.resolve())
    assert by_text["# Title\nbody"].metadata == {
        "source": str(md.resolve()),
        "file_name": "notes.md",
    }
    assert by_text["first"].doc_id == "p1"
    assert by_text["first"].metadata["title"] == "T1"
    assert by_text["first"].metadata["year"] == 2020
    assert "_id" not in by_text["first"].metadata and "text" not in by_text["first"].metadata
    assert by_text["second"].doc_id == "7"
    assert by_text["third"].doc_id == f"{jl.resolve()}:3"
    assert by_text["third"].metadata["line"] == 3
    again = read_documents([tmp_path])
    assert [d.doc_id for d in again] == [d.doc_id for d in docs]


def test_empty_documents_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "empty.txt", "  \n")
    _write(tmp_path / "full.txt", "content")
    assert [d.text for d in read_documents([tmp_path])] == ["content"]
    assert "empty" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{not json}\n', r"bad\.jsonl:2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "must be a JSON object"),
        ("notext.jsonl", '{"title": "no text"}\n', "string 'text' field"),
        ("dup.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "appears twice"),
        (
            "noid.jsonl",
            '{"text": "x"}\n{"_id": " ", "text": "y"}\n',
            r"noid\.jsonl:2: .*id is empty",
        ),
        (  # an id that is not text or an integer was stored as its Python repr
            "obj.jsonl",
            '{"text": "x"}\n{"_id": {"a": 1}, "text": "y"}\n',
            r"obj\.jsonl:2: the row's '_id' is \{\"a\": 1\}, not a string or an integer",
        ),
        (
            "listid.jsonl",
            '{"id": ["a"], "text": "y"}\n',
            r"listid\.jsonl:1: the row's 'id' is \[\"a\"\], not a string or an integer",
        ),
        ("true.jsonl", '{"_id": true, "text": "y"}\n', r"true\.jsonl:1: the row's '_id' is true,"),
        ("float.jsonl", '{"_id": 1.5, "text": "y"}\n', r"float\.jsonl:1: the row's '_id' is 1\.5,"),
        (  # the key that keeps the file a row came from: the reader's own
            "own.jsonl",
            '{"text": "x"}\n{"text": "y", "m3kit_source": "/elsewhere/r.jsonl"}\n',
            r"own\.jsonl:2: the row has the key 'm3kit_source', which m3kit keeps for the file",
        ),
        (
            "both.jsonl",
            '{"text": "y", "source": "wikipedia", "m3kit_source": "my note"}\n',
            r"both\.jsonl:1: the row has the key 'm3kit_source'",
        ),
    ],
)
def test_bad_jsonl_rows(tmp_path: Path, name: str, content: str, message: str) -> None:
    _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        read_documents([tmp_path / name])


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_documents([tmp_path / "missing.md"])
    with pytest.raises(ValueError, match="unsupported file type '.pdf'"):
        read_documents([_write(tmp_path / "paper.pdf", "x")])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        read_documents([tmp_path / "nothing"])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_documents([latin1])


def test_what_editors_write_is_read_as_text(tmp_path: Path) -> None:
    """A byte order mark is not text; a JSON string may hold U+2028 or U+0085 unescaped
    (``json.dumps(..., ensure_ascii=False)`` writes them so); a null id is no id."""
    (tmp_path / "bom.txt").write_bytes("\ufeffWith a BOM.".encode())
    rows = [
        {"_id": "r1", "text": "line\u2028separator and next\u0085line"},
        {"_id": None, "id": "r2", "text": "the id that is given"},
    ]
    body = "\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    (tmp_path / "rows.jsonl").write_text(body, encoding="utf-8")
    docs = {d.doc_id: d for d in read_documents([tmp_path])}
    assert docs[str((tmp_path / "bom.txt").resolve())].text == "With a BOM."
    assert docs["r1"].text == rows[0]["text"]
    assert docs["r2"].text == "the id that is given"
    assert "_id" not in docs["r2"].metadata and "id" not in docs["r2"].metadata


def test_links(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A link to a file is read as its target (a link and its target are one document); a
    link to a folder is not followed, and a warning says so (it was skipped silently)."""
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    _write(docs / "a.md", "alpha")
    target = _write(elsewhere / "policy.md", "the policy")
    _write(elsewhere / "sub" / "b.md", "beta")
    (docs / "policy.md").symlink_to(target)
    (docs / "same.md").symlink_to(docs / "a.md")
    (docs / "linked").symlink_to(elsewhere / "sub", target_is_directory=True)
    assert find_files([docs]) == [(docs / "a.md").resolve(), target.resolve()]
    assert "linked is a link to a folder; not followed" in caplog.text


def test_the_reader_reports_the_links_to_outside_files_it_read(tmp_path: Path) -> None:
    """``read_sources`` names the links inside a given folder read as a file outside it
    (what ``m3kit index --prune`` records), found by the walk that read the files: a link to
    a file inside the folder, or a file given by name, is no such link."""
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    a = _write(docs / "a.md", "alpha")
    target = _write(elsewhere / "policy.md", "the policy")
    (docs / "sub").mkdir()
    (docs / "sub" / "policy.md").symlink_to(target)
    (docs / "same.md").symlink_to(a)
    (elsewhere / "a.md").symlink_to(a)  # given by name below: no folder's link
    read = read_sources([docs, elsewhere / "a.md"])
    assert read.files == [a.resolve(), target.resolve()]
    assert read.links == {(docs / "sub").resolve() / "policy.md": target.resolve()}
    assert read_sources([docs / "sub"]).links == read.links


def test_an_id_that_is_not_utf8_is_refused_naming_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name that is not UTF-8 (Linux hands it over with surrogate escapes) or a jsonl
    ``_id`` holding an unpaired surrogate escape cannot be stored (Qdrant keeps UTF-8): the
    reader names it. ``m3kit index`` used to crash on the embedded engine with a traceback of
    the engine's argument parsing ("failed to extract enum Helper"), naming no file."""
    from m3kit.cli import main

    named = tmp_path / "named"
    named.mkdir()
    (named / "ok.txt").write_text("fine.", encoding="utf-8")
    with open(bytes(named) + b"/caf\xe9.txt", "wb") as fh:
        fh.write(b"bonjour.")
    with pytest.raises(ValueError, match=r"caf\\udce9\.txt.*not valid UTF-8"):
        read_documents([named])
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"_id": "ok", "text": "a."}\n{"_id": "x\\ud800", "text": "b."}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: the document id .*not valid UTF-8"):
        read_documents([rows])

    store = tmp_path / "store"
    store.mkdir()
    assert main(["index", str(named), "--path", str(store), "--model", "unused", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "caf\\udce9.txt" in err and "UTF-8" in err, err
    assert not any(store.iterdir())  # refused before a model loads or a collection exists


def test_a_row_text_or_metadata_that_is_not_utf8_is_refused_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A jsonl row whose text or metadata holds an unpaired surrogate escape (``"\\ud800"``,
    valid JSON, not UTF-8 text) cannot be tokenised or stored. ``m3kit index`` refused it only
    when encoding or writing, as "text 1" or "metadata of text 0" (a position among the
    documents left to write, naming no file); the reader now names the file and line, before
    a model loads."""
    from m3kit.cli import main

    text_row = tmp_path / "texts" / "rows.jsonl"
    text_row.parent.mkdir()
    text_row.write_text('{"_id": "ok", "text": "a."}\n{"_id": "b", "text": "bad \\ud800 b."}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: the row's text is not valid UTF-8 .*4"):
        read_documents([text_row])
    meta_row = tmp_path / "metas" / "rows.jsonl"
    meta_row.parent.mkdir()
    meta_row.write_text('{"_id": "c", "text": "ok.", "title": {"x\\udc00": 1}}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:1: the row's metadata .*not valid UTF-8"):
        read_documents([meta_row])

    store = tmp_path / "store"
    store.mkdir()
    for folder in (text_row.parent, meta_row.parent):
        assert main(["index", str(folder), "--path", str(store), "--model", "unused", "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "rows.jsonl:" in err and "UTF-8" in err, err
    assert not any(store.iterdir())  # refused before a model loads or a collection exists


def test_a_link_to_a_file_named_otherwise_is_read_by_the_links_name(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``.jsonl`` link to a file without that suffix (the Hugging Face cache's
    ``snapshots/<rev>/data.jsonl -> ../../blobs/<sha>``) was read as its target: one text
    document holding every row's raw JSON, whose id (a path without a supported suffix) the
    cleanup and ``--prune`` never recognised. It is read by the link's name now: its rows,
    named by the link (its folder resolved); a link whose target has the same kind of name is
    still its target."""
    from tests.cli.index_runs import index_run, stored_texts

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blob = _write(blobs / "5f2a9c", '{"_id": "r1", "text": "row one"}\n{"text": "row two"}\n')
    note = _write(blobs / "77aa01", "a plain note")
    same = _write(blobs / "kept.txt", "a text file")
    snap.mkdir(parents=True)
    (snap / "data.jsonl").symlink_to(blob)
    (snap / "note.md").symlink_to(note)
    (snap / "same.md").symlink_to(same)
    s = snap.resolve()
    docs = {d.doc_id: d for d in read_documents([snap])}
    assert sorted(docs) == sorted(
        ["r1", f"{s}/data.jsonl:2", f"{s}/note.md", str(same.resolve())]
    ), sorted(docs)
    assert docs["r1"].text == "row one" and docs["r1"].metadata["source"] == f"{s}/data.jsonl"
    assert docs[f"{s}/note.md"].text == "a plain note"
    assert find_files([snap / "data.jsonl"]) == [s / "data.jsonl"]  # given by name too

    store = tmp_path / "store"
    assert index_run(capsys, store, tiny_m3_path, snap)[0] == 0
    (snap / "note.md").unlink()  # the link removed: --prune removes its document
    code, out = index_run(capsys, store, tiny_m3_path, snap, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert sorted(stored_texts(store, tiny_m3_path)) == sorted(
        ["r1", f"{s}/data.jsonl:2", str(same.resolve())]
    )
    blob.write_text('\n{"text": "row two"}\n', encoding="utf-8")  # r1 removed, row two kept
    code, out = index_run(capsys, store, tiny_m3_path, snap / "data.jsonl", "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert sorted(stored_texts(store, tiny_m3_path)) == sorted(
        [f"{s}/data.jsonl:2", str(same.resolve())]
    )


def test_utf16_without_a_byte_order_mark_and_binary_files_are_refused(tmp_path: Path) -> None:
    """UTF-16 text without a byte order mark (ASCII in UTF-16-LE is valid UTF-8, every other
    byte NUL) and a file of NUL bytes (a sparse or truncated download) were stored as text:
    ``"h\\x00e\\x00l\\x00..."``. A NUL byte is in no UTF-8 text file: refused, naming it."""
    u16 = tmp_path / "u16.txt"
    u16.write_bytes("hello world".encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"u16\.txt: not UTF-8 text \(a NUL byte at offset 1;"):
        read_documents([u16])
    zeros = tmp_path / "zeros.md"
    zeros.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"zeros\.md: not UTF-8 text \(a NUL byte at offset 0;"):
        read_documents([zeros])
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes('{"text": "a"}\n'.encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"rows\.jsonl: not UTF-8 text \(a NUL byte at offset 1;"):
        read_documents([rows])
    escaped = tmp_path / "escaped.jsonl"  # an escaped NUL in a JSON string is no NUL byte
    escaped.write_text('{"text": "a\\u0000b"}\n', encoding="utf-8")
    assert [d.text for d in read_documents([escaped])] == ["a\x00b"]
