"""Helpers of the ``m3kit index`` tests: run it in-process, read back what it stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import M3Index
from m3kit.store.schema import CHUNK_INDEX, DOC_ID, PAGE_CONTENT


def index_run(
    capsys: pytest.CaptureFixture[str], store: Path, model: Path, *argv: str | Path
) -> tuple[int, str]:
    """Run ``m3kit index``; its exit code and what it printed (stdout + stderr)."""
    capsys.readouterr()
    where = ["--path", str(store), "--model", str(model), "--dtype", "fp32", "-q"]
    code = main(["index", *map(str, argv), *where])
    out = capsys.readouterr()
    return code, out.out + out.err


def stored_texts(store: Path, model: Path) -> dict[str, str]:
    """``{doc_id: text of its first chunk}`` of every stored document."""
    with M3Index.open(M3Encoder.from_pretrained(model), str(store)) as index:
        points = index.store.points(filter=models.Filter()).values()
        return {p[DOC_ID]: p[PAGE_CONTENT] for p in points if p[CHUNK_INDEX] == 0}
