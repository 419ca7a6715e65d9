"""``m3kit index --prune`` and links inside a folder to files outside it (m3kit.cli_links).

Such a link is read as its target, so its document is stored under the target's path, which
is not under the folder: once the link was removed, re-pointed or left dangling, ``--prune``
on the folder did not see the document, and it stayed searchable. The collection now records
these links; ``--prune`` deletes a target's document when the last link to it is gone, unless
the target was also indexed otherwise (its own folder, or as a file).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.index_runs import index_run, stored_texts


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    store, notes, elsewhere = tmp_path / "store", tmp_path / "notes", tmp_path / "elsewhere"
    notes.mkdir()
    elsewhere.mkdir()
    (notes / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    (elsewhere / "x.md").write_text("Paris is the capital of France.", encoding="utf-8")
    (elsewhere / "y.md").write_text("Rome is the capital of Italy.", encoding="utf-8")
    return store, notes, elsewhere


def test_a_removed_or_repointed_link_to_an_outside_file_is_pruned(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, notes, elsewhere = _setup(tmp_path)
    a, x, y = (notes / "a.md").resolve(), (elsewhere / "x.md").resolve(), elsewhere / "y.md"
    link = notes / "x.md"
    link.symlink_to(elsewhere / "x.md")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    assert set(stored_texts(store, tiny_m3_path)) == {str(a), str(x)}
    # re-pointed: the new target is read, the old one is no longer reached from notes/
    link.unlink()
    link.symlink_to(y)
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0  # without --prune: kept
    assert set(stored_texts(store, tiny_m3_path)) == {str(a), str(x), str(y.resolve())}
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str(a), str(y.resolve())}
    # removed
    link.unlink()
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str(a)}
    assert x.is_file() and y.is_file()  # the targets themselves are untouched


def test_a_dangling_link_prunes_its_targets_document(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, notes, elsewhere = _setup(tmp_path)
    (notes / "x.md").symlink_to(elsewhere / "x.md")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    (elsewhere / "x.md").unlink()  # the link is left dangling: not read
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str((notes / "a.md").resolve())}


def test_a_target_reached_otherwise_is_kept(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another link still reaching the target, or the target indexed from its own folder
    (before or after the link was), keeps its document when a link to it goes."""
    store, notes, elsewhere = _setup(tmp_path)
    x = str((elsewhere / "x.md").resolve())
    y = str((elsewhere / "y.md").resolve())
    (notes / "x.md").symlink_to(elsewhere / "x.md")
    (notes / "x2.md").symlink_to(elsewhere / "x.md")
    (notes / "y.md").symlink_to(elsewhere / "y.md")
    assert index_run(capsys, store, tiny_m3_path, elsewhere / "y.md")[0] == 0  # y: before
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    (notes / "x.md").unlink()  # x2.md still reaches x
    (notes / "y.md").unlink()  # y was indexed as a file of its own
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 0 document(s) no longer there" in out, out
    assert {x, y} <= set(stored_texts(store, tiny_m3_path))
    # x indexed from its own folder after the link was: the last link going keeps it too
    assert index_run(capsys, store, tiny_m3_path, elsewhere)[0] == 0
    (notes / "x2.md").unlink()
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 0 document(s) no longer there" in out, out
    assert {x, y} <= set(stored_texts(store, tiny_m3_path))


def test_a_vanished_folder_of_links_is_pruned_only_on_purpose(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A given folder that is gone (an unmounted share looks the same) holding links to
    outside files: ``--prune`` refuses while their documents are stored, naming the folder;
    ``--prune-missing`` prunes them."""
    store, notes, elsewhere = _setup(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    (links / "x.md").symlink_to(elsewhere / "x.md")
    assert index_run(capsys, store, tiny_m3_path, notes, links)[0] == 0
    (links / "x.md").unlink()
    links.rmdir()
    code, out = index_run(capsys, store, tiny_m3_path, notes, links, "--prune")
    assert code == 1 and f"{links}: no such file or folder, and 1 stored document(s)" in out
    assert str((elsewhere / "x.md").resolve()) in stored_texts(store, tiny_m3_path)
    code, out = index_run(capsys, store, tiny_m3_path, notes, links, "--prune-missing")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str((notes / "a.md").resolve())}


def test_links_on_a_share_not_mounted_are_pruned_only_on_purpose(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share mounted inside the folder (``notes/nas``) holding links to outside files: not
    mounted, its links look removed; ``--prune`` refuses, naming it, ``--prune-missing``
    prunes. (``os.path.ismount`` is stubbed: a test cannot mount.)"""
    store, notes, elsewhere = _setup(tmp_path)
    nas = notes / "nas"
    nas.mkdir()
    mounted = [True]
    real = os.path.ismount
    monkeypatch.setattr(
        os.path, "ismount", lambda p: mounted[0] if Path(p) == nas.resolve() else real(p)
    )
    (nas / "x.md").symlink_to(elsewhere / "x.md")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0  # records notes/nas
    before = stored_texts(store, tiny_m3_path)
    mounted[0] = False
    (nas / "x.md").unlink()
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 1, out
    assert f"{nas.resolve()}: a mount point when it was indexed, not mounted now, and 1 " in out
    assert stored_texts(store, tiny_m3_path) == before
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune-missing")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert set(stored_texts(store, tiny_m3_path)) == {str((notes / "a.md").resolve())}


def test_each_folder_is_walked_once(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The links ``--prune`` records come from the walk that read the files: a folder given
    to ``m3kit index --prune`` is walked once (it was walked a second time for its links)."""
    store, notes, elsewhere = _setup(tmp_path)
    (notes / "x.md").symlink_to(elsewhere / "x.md")
    walked: list[Path] = []
    real = os.walk

    def walk(top: str | os.PathLike[str], *args: object, **kwargs: object) -> object:
        walked.append(Path(top).resolve())
        return real(top, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "walk", walk)
    assert index_run(capsys, store, tiny_m3_path, notes, "--prune")[0] == 0
    assert walked.count(notes.resolve()) == 1, walked
    (notes / "x.md").unlink()
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 1 document(s) no longer there" in out, out
    assert walked.count(notes.resolve()) == 2, walked


def test_a_file_or_folder_replaced_by_a_link_is_pruned(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path replaced by a link is read under its target's name: its old document was never
    read again and never counted gone (``os.path.isfile`` follows the link), so ``--prune``
    kept its old text searchable forever, and a folder moved out and linked back kept its
    files' pre-edit text beside the new."""
    store, notes, elsewhere = _setup(tmp_path)
    a, c = notes / "a.md", notes / "c.md"
    c.write_text("Cherry text here.", encoding="utf-8")
    sub = notes / "sub"
    sub.mkdir()
    (sub / "x.md").write_text("x, first version.", encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    a.unlink()
    a.symlink_to("c.md")  # the file replaced by a link to another file of the folder
    moved = elsewhere / "sub"
    sub.rename(moved)
    sub.symlink_to(moved)  # the folder moved out, a link left in its place
    (moved / "x.md").write_text("x, second version.", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0 and "removed 2 document(s) no longer there" in out, out
    assert stored_texts(store, tiny_m3_path) == {str(c.resolve()): "Cherry text here."}
    assert index_run(capsys, store, tiny_m3_path, notes, moved, "--prune")[0] == 0
    assert set(stored_texts(store, tiny_m3_path).values()) == {
        "Cherry text here.",
        "x, second version.",
    }


def test_a_jsonl_file_replaced_by_a_link_to_its_copy_is_not_a_clash(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stored rows of ``r.jsonl``, now a link to ``r2.jsonl``, seemed to be given by two
    files: every run failed with "document id 'p1' appears twice", naming one file twice."""
    store, notes, _ = _setup(tmp_path)
    rows = '{"_id": "p1", "text": "Row one."}\n'
    (notes / "r.jsonl").write_text(rows, encoding="utf-8")
    assert index_run(capsys, store, tiny_m3_path, notes)[0] == 0
    (notes / "r2.jsonl").write_text(rows, encoding="utf-8")
    (notes / "r.jsonl").unlink()
    (notes / "r.jsonl").symlink_to("r2.jsonl")
    code, out = index_run(capsys, store, tiny_m3_path, notes, "--prune")
    assert code == 0, out
    assert sorted(stored_texts(store, tiny_m3_path).values()) == [
        "Berlin is the capital of Germany.",
        "Row one.",
    ]
