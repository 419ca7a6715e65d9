"""Tiny BEIR folders (``corpus.jsonl``, ``queries.jsonl``, qrels) written by the CLI tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["numbered", "write_beir"]


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
