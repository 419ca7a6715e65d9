"""``m3kit index`` on folders it cannot wholly read: an unreadable folder or file inside a
given folder is skipped with a warning, and ``--prune`` keeps what was indexed from it (split
from ``test_prune.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from m3kit.sources import read_sources
from tests.cli.index_runs import index_run, stored_texts


def _rows(path: Path, *texts: str) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def test_an_unreadable_folder_is_skipped_with_a_warning_and_its_documents_are_kept(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subfolder that cannot be listed (its permissions changed, a share gone stale) was
    skipped without a word, and ``--prune`` then took its files for deleted: every document
    indexed from it was removed. (Simulated: root reads any folder whatever its mode.)"""
    store, docs = tmp_path / "store", tmp_path / "docs"
    team = docs / "team"
    team.mkdir(parents=True)
    (docs / "top.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    (team / "plan.md").write_text("The team plans a release in May.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    blocked = team.resolve()
    scandir, isfile = os.scandir, os.path.isfile

    def no_listing(path: Any = ".") -> Any:
        if Path(path).resolve() == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def no_stat(path: Any) -> bool:  # a file in a folder without search permission
        return False if Path(path).resolve().parent == blocked else isfile(path)

    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os.path, "isfile", no_stat)
    with caplog.at_level("WARNING", logger="m3kit.source_files"):
        code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
        with pytest.raises(PermissionError, match="cannot read the folder"):
            read_sources([team])  # the folder given itself: an error, not "holds no files"
    monkeypatch.undo()
    assert code == 0 and "removed 0 document(s) no longer there" in out, out
    assert f"{team}: cannot read the folder" in caplog.text
    assert str(blocked / "plan.md") in stored_texts(store, tiny_m3_path)


def test_an_unreadable_file_is_skipped_with_a_warning_and_its_documents_are_kept(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One file that cannot be read (its permissions changed) failed the whole run: nothing
    else was indexed, a nightly ``--prune`` run stopped. It is skipped as an unreadable
    folder is: a warning, its stored documents kept. (Simulated: root reads any file.)"""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    (docs / "locked.md").write_text("The team plans a release in May.", encoding="utf-8")
    _rows(docs / "rows.jsonl", "Oxygen has atomic number 8.")
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    before = stored_texts(store, tiny_m3_path)
    (docs / "new.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    blocked = {(docs / "locked.md").resolve(), (docs / "rows.jsonl").resolve()}
    read_bytes = Path.read_bytes

    def no_reading(self: Path) -> bytes:
        if self.resolve() in blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    with caplog.at_level("WARNING", logger="m3kit.sources"):
        code, out = index_run(capsys, store, tiny_m3_path, docs, "--prune")
        with pytest.raises(PermissionError):
            read_sources([docs / "locked.md"])  # a file named itself: its own error
    monkeypatch.undo()
    assert code == 0 and "removed 0 document(s) no longer there" in out, out
    assert f"{docs / 'locked.md'}: cannot read the file" in caplog.text
    after = stored_texts(store, tiny_m3_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {str((docs / "new.md").resolve())}
