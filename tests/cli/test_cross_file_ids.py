"""``m3kit index``: a jsonl row id another file indexed earlier still gives (m3kit.cli_ids).

Two files that both number their rows ``"id": 0, 1`` are refused together in one run; in two
runs the second must be refused too, not replace the first file's documents. A row that moved
to the other file (or whose file is gone) is an update.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from m3kit.store import M3Store
from tests.cli.index_runs import index_run, stored_texts


def _rows(path: Path, *rows: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CITIES = ({"id": 0, "text": "Berlin is the capital."}, {"id": 1, "text": "Paris is the capital."})
ELEMENTS = ({"id": 0, "text": "Oxygen was found in 1774."}, {"id": 1, "text": "Gold is Au."})


def test_a_later_run_refuses_an_id_another_file_still_gives(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "store"
    cities = _rows(tmp_path / "cities.jsonl", *CITIES).resolve()
    elements = _rows(tmp_path / "elements.jsonl", *ELEMENTS).resolve()
    notes = _rows(tmp_path / "notes.jsonl", {"text": "a row without an id"}).resolve()
    assert index_run(capsys, store, tiny_m3_path, cities)[0] == 0
    looked_up: list[Sequence[str] | None] = []
    lookup = M3Store.document_metadata

    def spy(self: M3Store, doc_ids: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
        looked_up.append(doc_ids)
        return lookup(self, doc_ids)

    monkeypatch.setattr(M3Store, "document_metadata", spy)
    code, out = index_run(capsys, store, tiny_m3_path, elements, notes)
    assert code == 1, out
    assert out.strip() == (
        f"m3kit index: error: document id '0' appears twice ({cities}:1, indexed before, and "
        f"{elements}:1); give the rows unique ids, or remove the row from {cities} if it moved"
    )
    assert looked_up == [["0", "1"]]  # the explicit ids of this run only, looked up by id
    monkeypatch.undo()
    assert stored_texts(store, tiny_m3_path) == {"0": CITIES[0]["text"], "1": CITIES[1]["text"]}
    # the file that holds them, again: its own ids, no clash
    assert index_run(capsys, store, tiny_m3_path, cities)[0] == 0


def test_an_id_whose_row_moved_or_whose_file_is_gone_is_updated(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    cities = _rows(tmp_path / "cities.jsonl", *CITIES)
    assert index_run(capsys, store, tiny_m3_path, cities)[0] == 0
    # row 0 moved from cities to elements: an update of document 0
    _rows(cities, CITIES[1])
    elements = _rows(tmp_path / "elements.jsonl", ELEMENTS[0])
    code, out = index_run(capsys, store, tiny_m3_path, elements)
    assert code == 0, out
    assert stored_texts(store, tiny_m3_path) == {"0": ELEMENTS[0]["text"], "1": CITIES[1]["text"]}
    # cities.jsonl deleted: its rows are free to be given by another file
    cities.unlink()
    _rows(elements, *ELEMENTS)
    code, out = index_run(capsys, store, tiny_m3_path, elements)
    assert code == 0, out
    assert stored_texts(store, tiny_m3_path) == {"0": ELEMENTS[0]["text"], "1": ELEMENTS[1]["text"]}


def test_an_emptied_row_does_not_delete_another_files_document(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    cities = _rows(tmp_path / "cities.jsonl", *CITIES).resolve()
    assert index_run(capsys, store, tiny_m3_path, cities)[0] == 0
    elements = _rows(tmp_path / "elements.jsonl", {"id": 0, "text": ""}).resolve()
    code, out = index_run(capsys, store, tiny_m3_path, elements)
    assert code == 1, out
    assert f"document id '0' appears twice ({cities}:1, indexed before, and {elements}:1)" in out
    assert stored_texts(store, tiny_m3_path) == {"0": CITIES[0]["text"], "1": CITIES[1]["text"]}
    # emptied in its own file: the stored version goes
    _rows(cities, {"id": 0, "text": " "}, CITIES[1])
    assert index_run(capsys, store, tiny_m3_path, cities)[0] == 0
    assert stored_texts(store, tiny_m3_path) == {"1": CITIES[1]["text"]}


def test_a_row_id_that_is_an_indexed_files_path(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .txt/.md file's id is its absolute path; a jsonl row that gives the same id clashes
    with it as with another file's row (the file was read as jsonl: 'not valid JSON')."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    note = docs / "a.md"
    note.write_text("# Berlin\nBerlin is the capital.", encoding="utf-8")
    note = note.resolve()
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    rows = _rows(tmp_path / "rows.jsonl", {"_id": str(note), "text": "Paris."}).resolve()
    code, out = index_run(capsys, store, tiny_m3_path, rows)
    assert code == 1, out
    assert f"document id {str(note)!r} appears twice ({note}, indexed before, and {rows}:1)" in out
    assert stored_texts(store, tiny_m3_path) == {str(note): "# Berlin\nBerlin is the capital."}
    # the other way round: the row indexed first, then the file read empty
    note.unlink()
    assert index_run(capsys, store, tiny_m3_path, rows)[0] == 0
    note.write_text(" ", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, docs)
    assert code == 1, out
    assert f"document id {str(note)!r} appears twice ({rows}:1, indexed before, and {note})" in out
    assert stored_texts(store, tiny_m3_path) == {str(note): "Paris."}


def test_a_file_read_later_whose_path_a_stored_row_gives(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The row indexed first, then a ``.md`` file with text at the path the row gives as its
    id: the file's document replaced the row's silently (only a file read empty was
    refused). Refused now, naming both; in one run the reader refuses the two already."""
    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    note = (docs / "a.md").resolve()
    rows = _rows(tmp_path / "rows.jsonl", {"_id": str(note), "text": "Paris."}).resolve()
    assert index_run(capsys, store, tiny_m3_path, rows)[0] == 0
    note.write_text("# Berlin\nBerlin is the capital.", encoding="utf-8")
    code, out = index_run(capsys, store, tiny_m3_path, docs)
    assert code == 1, out
    assert out.strip() == (
        f"m3kit index: error: document id {str(note)!r} appears twice ({rows}:1, indexed "
        f"before, and {note}); give the row in {rows} another id (a .txt / .md file's id is "
        "its absolute path)"
    )
    assert stored_texts(store, tiny_m3_path) == {str(note): "Paris."}
    code, out = index_run(capsys, store, tiny_m3_path, rows, docs)  # one run: the reader's
    assert code == 1 and f"document id {str(note)!r} appears twice ({rows}:1 and {note})" in out
    assert stored_texts(store, tiny_m3_path) == {str(note): "Paris."}
    # the row gone from its file: the file's document is an update
    _rows(rows, {"_id": "p", "text": "Paris."})
    assert index_run(capsys, store, tiny_m3_path, docs)[0] == 0
    assert stored_texts(store, tiny_m3_path) == {str(note): "# Berlin\nBerlin is the capital."}
