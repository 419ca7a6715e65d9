"""``m3kit index`` after a file is renamed in letter case only, on a case-insensitive filesystem.

macOS (APFS, HFS+) and Windows (NTFS) ignore case by default: after ``mv notes.md Notes.md``
the folder lists ``Notes.md``, the new document id, while the old name still opens the same
file. Linux's filesystems here are case-sensitive, so these tests stand in a case-insensitive
one at the functions the cleanup and the reader call (``os.path.isfile``, ``os.path.samefile``,
``Path.read_bytes``): a name opens the entry of its folder whose name matches it but for case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.index_runs import index_run, stored_texts


@pytest.fixture
def case_insensitive(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``os.path.isfile``, ``os.path.samefile`` and ``Path.read_bytes`` as on a
    case-insensitive filesystem."""
    isfile, samefile, read_bytes = os.path.isfile, os.path.samefile, Path.read_bytes

    def entry(path: str | os.PathLike[str]) -> str:
        p = Path(path)
        if p.parent.is_dir():
            for name in os.listdir(p.parent):
                if name.casefold() == p.name.casefold():
                    return str(p.parent / name)
        return str(p)

    monkeypatch.setattr(os.path, "isfile", lambda p: isfile(entry(p)))
    monkeypatch.setattr(os.path, "samefile", lambda a, b: samefile(entry(a), entry(b)))
    monkeypatch.setattr(Path, "read_bytes", lambda p: read_bytes(Path(entry(p))))
    yield


@pytest.mark.usefixtures("case_insensitive")
def test_prune_deletes_a_file_renamed_in_case_only(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("Notes about the harbour.", encoding="utf-8")
    (docs / "other.md").write_text("Another file.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    (docs / "notes.md").rename(docs / "Notes.md")
    (docs / "Notes.md").write_text("Notes about the harbour, edited.", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    d = docs.resolve()
    # the old name still opens the file, but it was read under its new name: served once
    assert stored_texts(store, tiny_m3_path) == {
        f"{d}/Notes.md": "Notes about the harbour, edited.",
        f"{d}/other.md": "Another file.",
    }


@pytest.mark.usefixtures("case_insensitive")
def test_a_jsonl_renamed_in_case_only_keeps_its_ids(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    rows = docs / "rows.jsonl"
    rows.write_text(json.dumps({"_id": "p1", "text": "Oxygen."}) + "\n", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    rows.rename(docs / "Rows.jsonl")
    (docs / "Rows.jsonl").write_text(
        json.dumps({"_id": "p1", "text": "Oxygen, edited."}) + "\n", encoding="utf-8"
    )
    # the row's file was renamed, not copied: an update, not an id two files give
    code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
    assert code == 0, out
    assert stored_texts(store, tiny_m3_path) == {"p1": "Oxygen, edited."}
