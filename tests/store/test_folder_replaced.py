"""An embedded collection whose folder is removed or replaced under an open store is refused.

The engine holds its files open: before, a store whose folder was replaced by a restored
backup went on answering from the old files and wrote a confirmed document into them (lost),
and one whose folder was removed (``rm -rf``) kept answering searches and failed a write with
a bare ``FileNotFoundError``. Now every operation checks the folder is the one it loaded.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.errors import StoreConnectionError
from m3kit.store import M3Index


def test_a_backup_restored_under_an_open_store_is_refused(
    tiny_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, backup = tmp_path / "db", tmp_path / "backup"
    with M3Index.open(tiny_encoder, db, collection="c") as index:
        index.add_texts(["First document."], doc_ids=["a"])
    shutil.copytree(db, backup)
    index = M3Index.open(tiny_encoder, db, collection="c")
    index.add_texts(["Second document."], doc_ids=["b"])
    shutil.move(db, tmp_path / "db.old")
    shutil.copytree(backup, db)  # the restore, while the store is still open
    with pytest.raises(StoreConnectionError, match="removed or replaced while this store"):
        index.add_texts(["Third document."], doc_ids=["c"])
    with pytest.raises(StoreConnectionError, match="removed or replaced"):
        index.search("document", k=3)
    with caplog.at_level(logging.WARNING, logger="m3kit.store.edge_folder"):
        index.close()
    assert "restore it again now that the store is closed" in caplog.text


def test_a_removed_folder_is_refused_not_searched(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        index.add_texts(["First document."], doc_ids=["a"])
        shutil.rmtree(tmp_path / "db" / "c")
        with pytest.raises(StoreConnectionError, match="removed or replaced"):
            index.search("document", k=3)  # answered from the deleted files
        with pytest.raises(StoreConnectionError, match="removed or replaced"):
            index.add_texts(["Second document."], doc_ids=["b"])  # a bare FileNotFoundError


def test_an_untouched_folder_reopened_is_used(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    """The check compares the folder with the one loaded, not with the first open's."""
    for text in ("First document.", "Second document."):
        with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
            index.add_texts([text])
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        assert index.count() == 2
