"""A replacing write killed before it deleted the old versions is finished at the next open.

Found by a review (SIGKILL during ``add_texts``): the folder reopened with documents holding
the new version's chunks and the old version's tail, and search served both, silently, until
the same documents were written again. The writer below dies (``os._exit``: no ``except`` or
``finally`` runs, as with SIGKILL) right after its new chunks are stored.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.records import Backend
from tests.store.conftest import BACKENDS, PATH_BACKENDS

LONG = " ".join(f"Sentence number {i} of the first version." for i in range(40))
SHORT = "The second version is one short sentence."

_WRITER = """
import os, sys
from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.store import M3Index
from m3kit.store.store_writes import StoreWrites

model, folder, backend, text, die = sys.argv[1:6]
encoder = M3Encoder.from_pretrained(model, dtype="fp32")
index = M3Index.open(encoder, folder, backend=backend)
if die == "before-delete":  # killed once the new chunks are stored, before the old go
    StoreWrites._drop_stale = lambda *a, **k: os._exit(9)
if die == "before-write":  # killed before any new chunk is stored
    index.store._backend.upsert = lambda *a, **k: os._exit(9)
index.add_texts([text, "Another document, unchanged."], doc_ids=["doc", "other"],
                chunker=NaiveChunker(encoder, chunk_size=16))
index.close()
"""


def _write(model: Path, folder: Path, backend: str, text: str, die: str = "no") -> int:
    args = [str(model), str(folder), backend, text, die]
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WRITER), *args],
        capture_output=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        check=False,
    ).returncode


@pytest.mark.parametrize("backend_id", PATH_BACKENDS)
def test_a_write_killed_before_deleting_the_old_version_is_finished_at_open(
    tiny_m3_path: Path, tmp_path: Path, backend_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    kind: Backend = BACKENDS[backend_id][0]
    folder = tmp_path / "db"
    assert _write(tiny_m3_path, folder, kind.value, LONG) == 0
    assert _write(tiny_m3_path, folder, kind.value, SHORT, die="before-delete") == 9
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with caplog.at_level(logging.WARNING), M3Index.open(encoder, folder, backend=kind) as index:
        texts = [h.text for h in index.search("version", k=200) if h.doc_id == "doc"]
        assert texts and all(t in SHORT for t in texts)  # the first version's chunks are gone
        assert index.store.count() == len(texts) + 1  # and "other", one chunk
    assert "interrupted before it deleted the old versions of 1 document(s)" in caplog.text
    assert not list(folder.glob(".m3kit-replacing-*"))


@pytest.mark.parametrize("backend_id", PATH_BACKENDS)
def test_a_write_killed_before_storing_anything_keeps_the_old_version(
    tiny_m3_path: Path, tmp_path: Path, backend_id: str
) -> None:
    kind: Backend = BACKENDS[backend_id][0]
    folder = tmp_path / "db"
    assert _write(tiny_m3_path, folder, kind.value, LONG) == 0
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(encoder, folder, backend=kind) as index:
        before = index.store.count()
    assert _write(tiny_m3_path, folder, kind.value, SHORT, die="before-write") == 9
    assert list(folder.glob(".m3kit-replacing-*"))  # recorded before the write
    with M3Index.open(encoder, folder, backend=kind) as index:
        assert index.store.count() == before  # the old version whole, nothing deleted
        texts = [h.text for h in index.search("version", k=before) if h.doc_id == "doc"]
        assert SHORT not in texts and len(texts) == before - 1
    assert not list(folder.glob(".m3kit-replacing-*"))


def test_a_finished_write_leaves_no_journal(tiny_m3_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "db"
    assert _write(tiny_m3_path, folder, "edge", LONG) == 0
    assert _write(tiny_m3_path, folder, "edge", SHORT) == 0
    assert not list(folder.glob(".m3kit-replacing-*"))


@pytest.mark.parametrize("where", ["after-upsert", "drop-stale"])
def test_an_interrupted_write_is_finished_by_the_next_write_of_the_process(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # Ctrl-C as the engine's upsert returned (or while the old versions were deleted) left
    # the journal; the process's next replacing write overwrote it with its own and removed
    # it, so "doc" kept its old version's tail for good, reopened or not
    from m3kit.chunking import NaiveChunker
    from m3kit.store.store_writes import StoreWrites

    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    chunker = NaiveChunker(encoder, chunk_size=16)
    folder = tmp_path / "db"
    with M3Index.open(encoder, folder) as index:
        index.add_texts([LONG], doc_ids=["doc"], chunker=chunker)
        backend = index.store._backend
        real_upsert = backend.upsert

        def interrupted_upsert(*args: object, **kwargs: object) -> None:
            real_upsert(*args, **kwargs)
            raise KeyboardInterrupt

        def interrupted_drop(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        if where == "after-upsert":
            monkeypatch.setattr(backend, "upsert", interrupted_upsert)
        else:
            monkeypatch.setattr(StoreWrites, "_drop_stale", interrupted_drop)
        with pytest.raises(KeyboardInterrupt):
            index.add_texts([SHORT], doc_ids=["doc"], chunker=chunker)
        monkeypatch.undo()
        index.add_texts(["Another document."], doc_ids=["other"])  # the next write
        texts = [h.text for h in index.search("version", k=200) if h.doc_id == "doc"]
        assert texts and all(t in SHORT for t in texts)
    with M3Index.open(encoder, folder) as index:
        texts = [h.text for h in index.search("version", k=200) if h.doc_id == "doc"]
        assert texts and all(t in SHORT for t in texts)
    assert not list(folder.glob(".m3kit-replacing-*"))
