"""Tiny BEIR folders (``corpus.jsonl``, ``queries.jsonl``, qrels) written by the CLI tests,
and the ten-word retrieval set the evaluation tests score (:data:`WORD_CORPUS`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "WORD_CORPUS",
    "WORD_QRELS",
    "WORD_QUERIES",
    "numbered",
    "write_beir",
    "write_word_beir",
]

_WORDS = ["river", "sea", "oxygen", "number", "city", "bridge", "music", "paint", "glass", "wind"]
#: passages d0..d9, four words each
WORD_CORPUS = {
    f"d{i}": f"{w} {_WORDS[(i + 3) % 10]} {_WORDS[(i + 5) % 10]} {_WORDS[(i + 7) % 10]}"
    for i, w in enumerate(_WORDS)
}
#: queries q0..q9: three words of passage d{i}, reordered
WORD_QUERIES = {
    f"q{i}": f"{_WORDS[(i + 3) % 10]} {w} {_WORDS[(i + 7) % 10]}" for i, w in enumerate(_WORDS)
}
#: q{i} judges d{i} relevant
WORD_QRELS = {f"q{i}": {f"d{i}": 1.0} for i in range(10)}


def numbered(prefix: str, texts: list[str]) -> dict[str, str]:
    """``{f"{prefix}{i}": text}`` in order.

    >>> numbered("d", ["a", "b"])
    {'d0': 'a', 'd1': 'b'}
    """
    return {f"{prefix}{i}": t for i, t in enumerate(texts)}


def write_beir(
    folder: Path,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: str,
    *,
    split: str | None = None,
    titles: bool = False,
) -> Path:
    """Write a BEIR folder and return it.

    Args:
        folder: Created if missing.
        corpus: ``{doc id: text}``, one ``corpus.jsonl`` row each.
        queries: ``{query id: text}``, one ``queries.jsonl`` row each.
        qrels: The qrels file's text as it is (tab-separated lines, a header if wanted).
        split: Write ``qrels/<split>.tsv`` instead of ``qrels.tsv``.
        titles: Give every corpus row an empty ``title``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    title = {"title": ""} if titles else {}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, **title, "text": t}) + "\n" for k, t in corpus.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": t}) + "\n" for k, t in queries.items())
    )
    path = folder / "qrels.tsv" if split is None else folder / "qrels" / f"{split}.tsv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(qrels)
    return folder


def write_word_beir(folder: Path, corpus: Mapping[str, str] = WORD_CORPUS) -> Path:
    """Write the word set (:data:`WORD_QUERIES`, :data:`WORD_QRELS`) as a BEIR folder, with
    ``corpus`` for passages (default :data:`WORD_CORPUS`)."""
    qrels = "".join(f"{q}\t{d}\t{g:g}\n" for q, rel in WORD_QRELS.items() for d, g in rel.items())
    return write_beir(folder, corpus, WORD_QUERIES, qrels)
