"""Reading the longdoc layout: answer offsets are checked against the answer text."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from m3kit.finetune import read_longdoc_examples

DOC = "Zürich — Köln\r\nThe Rhine flows past Köln.\r\n\r\nIts delta is near Rotterdam."


def _write(folder: Path, rows: list[dict[str, Any]]) -> Path:
    (folder / "corpus.jsonl").write_text(
        json.dumps({"_id": "rhine", "text": DOC}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"doc_id": "rhine", **row}, ensure_ascii=False) + "\n")
    return folder


def _row(text: str, answer: str, start: int, paragraph: tuple[int, int]) -> dict[str, Any]:
    return {
        "text": text,
        "answer": answer,
        "answer_start": start,
        "answer_end": start + len(answer),
        "paragraph_start": paragraph[0],
        "paragraph_end": paragraph[1],
    }


FIRST = (0, DOC.index("\r\n\r\n"))
SECOND = (DOC.index("Its"), len(DOC))


def test_byte_offsets_are_an_error_naming_the_line(tmp_path: Path) -> None:
    """Offsets counted in UTF-8 bytes (or another newline convention) pointed a few
    characters off: the chunk holding the "answer" was silently the wrong one."""
    byte_at = DOC.encode().index(b"Rotterdam")  # 4 more than the character offset
    ok = _row("Where is the delta?", "Rotterdam", DOC.index("Rotterdam"), SECOND)
    bad = _row("Where does it flow?", "Köln", DOC.encode().index(b"K\xc3\xb6ln."), FIRST)
    _write(tmp_path, [ok, bad])
    with pytest.raises(
        ValueError, match=r"queries.jsonl line 2: .* point at '\.\\r\\n\\r', not the answer 'Köln'"
    ):
        read_longdoc_examples(tmp_path, chunk_chars=30)
    with pytest.raises(ValueError, match="queries.jsonl line 2"):
        read_longdoc_examples(tmp_path)
    _write(tmp_path, [_row("Where is the delta?", "Rotterdam", byte_at, SECOND)])
    with pytest.raises(ValueError, match="character offsets into the document"):
        read_longdoc_examples(tmp_path, chunk_chars=30)


def test_an_answer_outside_its_paragraph_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, [_row("Where is the delta?", "Rotterdam", DOC.index("Rotterdam"), FIRST)])
    with pytest.raises(ValueError, match="line 1: the answer .* is not inside its paragraph"):
        read_longdoc_examples(tmp_path)


def test_an_answer_occurring_twice_keeps_its_own_offsets(tmp_path: Path) -> None:
    second = DOC.index("Köln", DOC.index("Köln") + 1)
    _write(tmp_path, [_row("Which city?", "Köln", second, FIRST)])
    (example,) = read_longdoc_examples(tmp_path, chunk_chars=30)
    assert example.span[0] <= second < second + 4 <= example.span[1]
    assert DOC.index("Köln") + 4 <= example.span[0]  # not the chunk of the first "Köln"


def test_questions_left_out_across_chunks_are_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Questions whose answer straddles two chunks were dropped with only an INFO line."""
    rows = [
        _row("Where is the delta?", "Rotterdam", DOC.index("Rotterdam"), SECOND),
        _row("What flows?", "The Rhine flows past Köln", DOC.index("The Rhine"), FIRST),
    ]
    _write(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        examples = read_longdoc_examples(tmp_path, chunk_chars=12)
    assert [ex.query for ex in examples] == ["Where is the delta?"]
    assert "1 of 2 questions left out: answer across two chunks" in caplog.text


def test_a_question_asked_of_two_paragraphs_with_other_spacing_has_no_answer_as_negative(
    tmp_path: Path,
) -> None:
    """One question text asked of both paragraphs (squad_en asks some twice) has both as
    answers, but the match was exact: with a trailing space (270 squad_en questions have
    other whitespace) the other answer paragraph was the question's negative."""
    rows = [
        _row("Which city is named?", "Köln", DOC.index("Köln"), FIRST),
        _row("Which city is  named? ", "Rotterdam", DOC.index("Rotterdam"), SECOND),
    ]
    _write(tmp_path, rows)
    for example in read_longdoc_examples(tmp_path):
        assert example.negative_spans == ()
    answers = [(DOC.index(w), DOC.index(w) + len(w)) for w in ("Köln", "Rotterdam")]
    chunked = read_longdoc_examples(tmp_path, chunk_chars=30)
    assert len(chunked) == 2
    for example in chunked:  # neither answer's chunk is a negative
        for a, b in example.negative_spans:
            assert not any(a < end and start < b for start, end in answers)
