"""Training examples for late-chunking-aware fine-tuning: a query and its span of a document.

:class:`SpanExample` holds a query, the whole document, the character span that answers the
query and in-document negative spans (other paragraphs). :func:`read_longdoc_examples` reads
them from the long-document layout (``corpus.jsonl`` with one document per article,
``queries.jsonl`` with ``doc_id``, ``paragraph_start`` and ``paragraph_end`` per question).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from m3kit.finetune.data import text_key
from m3kit.jsonl import iter_json_rows

__all__ = ["SpanExample", "read_longdoc_examples"]

logger = logging.getLogger(__name__)

CharSpan = tuple[int, int]


@dataclass(frozen=True)
class SpanExample:
    """A query, its document and the span of the document that answers it.

    Attributes:
        query: The query text (not empty).
        document: The whole document the span is pooled from.
        span: ``(start, end)`` character offsets of the positive in ``document``.
        negative_spans: Character spans of the same document that do not answer the query
            (e.g. the other paragraphs); none may overlap ``span``.

    Raises:
        ValueError: Empty query or document, a span with ``start >= end`` or outside the
            document, or a negative span overlapping the positive.
    """

    query: str
    document: str
    span: CharSpan
    negative_spans: tuple[CharSpan, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise ValueError("SpanExample.query is empty")
        if not isinstance(self.document, str) or not self.document.strip():
            raise ValueError("SpanExample.document is empty")
        span = _check_span("span", self.span, len(self.document))
        negatives = tuple(
            _check_span(f"negative_spans[{i}]", s, len(self.document))
            for i, s in enumerate(self.negative_spans)
        )
        for i, (a, b) in enumerate(negatives):
            if a < span[1] and span[0] < b:
                raise ValueError(
                    f"negative_spans[{i}] = ({a}, {b}) overlaps the positive span {span}"
                )
        object.__setattr__(self, "span", span)
        object.__setattr__(self, "negative_spans", negatives)


def _check_span(name: str, span: object, length: int) -> CharSpan:
    if not isinstance(span, (tuple, list)) or len(span) != 2:
        raise ValueError(f"SpanExample.{name} is {span!r}, not a (start, end) pair")
    start, end = span
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise ValueError(f"SpanExample.{name} = {span!r}: offsets must be ints")
    assert isinstance(start, int) and isinstance(end, int)
    if start >= end:
        raise ValueError(f"SpanExample.{name} = ({start}, {end}): start must be < end")
    if start < 0 or end > length:
        raise ValueError(
            f"SpanExample.{name} = ({start}, {end}) is outside the document of {length} characters"
        )
    return (start, end)


def char_chunks(text: str, size: int) -> list[CharSpan]:
    """Consecutive spans of at most ``size`` characters covering ``text``, cut at a space.

    >>> char_chunks("aa bb cc dd", 6)
    [(0, 5), (5, 11)]
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1 character, got {size}")
    spans: list[CharSpan] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + 1, end + 1)
            end = cut if cut > start else end
        spans.append((start, end))
        start = end
    return spans


def read_longdoc_examples(
    folder: str | os.PathLike[str],
    articles: Iterable[str] | None = None,
    *,
    chunk_chars: int | None = None,
) -> list[SpanExample]:
    """Span examples from a long-document folder (``corpus.jsonl`` + ``queries.jsonl``).

    Each question becomes one example: its document (``doc_id``), its paragraph
    (``paragraph_start``, ``paragraph_end``) as the positive span, and the other paragraphs
    of that document (the distinct paragraph spans of all its questions) as negative spans.
    With ``chunk_chars`` the document is cut into chunks of about that many characters
    (:func:`char_chunks`) instead, as chunkers cut it for late chunking: the positive is the
    chunk holding the question's answer (``answer_start``, ``answer_end``; questions whose
    answer straddles two chunks are left out, counted in a warning) and every other chunk is a
    negative. A row with an ``answer`` text is checked: the text must be at its offsets
    (Python character offsets) and inside its paragraph.

    A question text asked of several spans of one document (squad_en asks "Where does the
    Rhine begin?" of two paragraphs; texts compared with their whitespace collapsed) has all
    of them as answers: a paragraph (chunk) that
    overlaps the span of any of its questions is never its negative.

    Args:
        folder: Holds ``corpus.jsonl`` (``_id``, ``text``) and ``queries.jsonl`` (``text``,
            ``doc_id``, ``paragraph_start``, ``paragraph_end``; ``answer_start`` and
            ``answer_end`` with ``chunk_chars``).
        articles: Keep only the questions of these document ids (e.g. a training split).
        chunk_chars: Train on chunks of about this many characters (default: paragraphs).

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: A question lacks a field, names an unknown document, or its paragraph is
            not a valid span of the document; its ``answer`` text (when given) is not at
            ``answer_start``, ``answer_end`` or not inside its paragraph; ``articles`` names
            an unknown document.
    """
    root = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found (expected the longdoc layout)")
    docs = {str(r["_id"]): str(r["text"]) for _, r in iter_json_rows(root / "corpus.jsonl")}
    keep = None if articles is None else set(articles)
    if keep is not None and keep - docs.keys():
        raise ValueError(f"unknown documents in articles: {sorted(keep - docs.keys())[:5]}")
    questions: list[tuple[str, str, CharSpan]] = []
    for n, row in iter_json_rows(root / "queries.jsonl"):
        missing = {"text", "doc_id", "paragraph_start", "paragraph_end"} - row.keys()
        if missing:
            raise ValueError(f"queries.jsonl line {n} lacks {sorted(missing)}")
        doc_id = str(row["doc_id"])
        if doc_id not in docs:
            raise ValueError(f"queries.jsonl line {n}: unknown doc_id {doc_id!r}")
        if keep is None or doc_id in keep:
            _check_answer(row, docs[doc_id], n)
            if chunk_chars is None:
                span = (int(row["paragraph_start"]), int(row["paragraph_end"]))
            else:
                if not {"answer_start", "answer_end"} <= row.keys():
                    raise ValueError(f"queries.jsonl line {n} lacks answer_start / answer_end")
                span = (int(row["answer_start"]), int(row["answer_end"]))
            questions.append((str(row["text"]), doc_id, span))
    if chunk_chars is not None:
        return _chunk_examples(docs, questions, chunk_chars)
    paragraphs: dict[str, set[CharSpan]] = {}
    for _, doc_id, span in questions:
        paragraphs.setdefault(doc_id, set()).add(span)
    answers = _answers(questions)
    out: list[SpanExample] = []
    for n, (query, doc_id, span) in enumerate(questions):
        own = answers[doc_id, text_key(query)]
        others = tuple(s for s in sorted(paragraphs[doc_id]) if not _overlaps_any(s, own))
        try:
            out.append(SpanExample(query, docs[doc_id], span, others))
        except ValueError as e:
            raise ValueError(f"question {n} of document {doc_id!r}: {e}") from e
    logger.info("%d span examples from %d documents in %s", len(out), len(paragraphs), root)
    return out


def _check_answer(row: dict[str, object], document: str, n: int) -> None:
    """A row's ``answer`` text must sit at its offsets, inside its paragraph.

    Offsets counted another way (UTF-8 bytes, UTF-16 units, ``\\n`` for ``\\r\\n``) point
    a few characters off, at a wrong chunk, without this check.
    """
    if not {"answer", "answer_start", "answer_end"} <= row.keys():
        return
    answer = row["answer"]
    a, b = int(row["answer_start"]), int(row["answer_end"])  # type: ignore[call-overload]
    if isinstance(answer, str) and document[a:b] != answer:
        raise ValueError(
            f"queries.jsonl line {n}: answer_start, answer_end = {a}, {b} point at "
            f"{document[a:b][:60]!r}, not the answer {answer[:60]!r} (offsets must be Python "
            "character offsets into the document's text)"
        )
    p, q = int(row["paragraph_start"]), int(row["paragraph_end"])  # type: ignore[call-overload]
    if not p <= a < b <= q:
        raise ValueError(
            f"queries.jsonl line {n}: the answer ({a}, {b}) is not inside its paragraph ({p}, {q})"
        )


def _chunk_examples(
    docs: dict[str, str], questions: list[tuple[str, str, CharSpan]], chunk_chars: int
) -> list[SpanExample]:
    """Examples whose positive is the chunk holding the answer span, negatives the others."""
    chunks = {d: char_chunks(docs[d], chunk_chars) for d in {q[1] for q in questions}}
    answers = _answers(questions)
    out: list[SpanExample] = []
    straddling = 0
    for query, doc_id, (a, b) in questions:
        holding = [c for c in chunks[doc_id] if c[0] <= a and b <= c[1]]
        if not holding:
            straddling += 1
            continue
        own = answers[doc_id, text_key(query)]
        others = tuple(
            c
            for c in chunks[doc_id]
            if c != holding[0] and docs[doc_id][slice(*c)].strip() and not _overlaps_any(c, own)
        )
        out.append(SpanExample(query, docs[doc_id], holding[0], others))
    logger.info("%d chunk span examples", len(out))
    if straddling:
        logger.warning(
            "%d of %d questions left out: answer across two chunks (chunk_chars=%d)",
            straddling,
            len(questions),
            chunk_chars,
        )
    return out


def _answers(questions: list[tuple[str, str, CharSpan]]) -> dict[tuple[str, str], list[CharSpan]]:
    """``{(doc_id, question text): spans}``: every span a question text is asked of in a
    document (several when one text is asked of several paragraphs). Texts are compared
    with their whitespace collapsed (:func:`~m3kit.finetune.data.text_key`), as training
    compares them."""
    out: dict[tuple[str, str], list[CharSpan]] = {}
    for query, doc_id, span in questions:
        out.setdefault((doc_id, text_key(query)), []).append(span)
    return out


def _overlaps_any(span: CharSpan, others: Iterable[CharSpan]) -> bool:
    return any(span[0] < b and a < span[1] for a, b in others)
