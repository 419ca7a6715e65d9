"""A write the embedded engine's disk has no room for is refused, not a crash.

The engine maps its files: a write into a mapped page a full disk cannot hold killed the
process with SIGBUS (exit 135, nothing logged; a review measured it on a full tmpfs). Free
space is simulated here (``shutil.disk_usage``), which is what the check reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.errors import StoreConnectionError
from m3kit.store import M3Index, edge_folder


def _free(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    disk_usage = shutil.disk_usage

    def usage(path: Any) -> Any:
        real = disk_usage(path)
        return type(real)(real.total, real.total - nbytes, nbytes)

    monkeypatch.setattr(edge_folder.shutil, "disk_usage", usage)


def test_a_write_without_room_is_refused_and_nothing_is_written(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        index.add_texts(["First document."], doc_ids=["a"])
        _free(monkeypatch, edge_folder.ROOM_MARGIN)  # the margin, and not a byte more
        with pytest.raises(StoreConnectionError, match="MiB free; this write needs about"):
            index.add_texts(["Second document."], doc_ids=["b"])
        monkeypatch.undo()
        assert index.count() == 1
        index.add_texts(["Second document."], doc_ids=["b"])  # room again: written
        assert index.count() == 2


def test_creating_a_collection_without_room_is_refused(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _free(monkeypatch, 3 * 2**20)
    with pytest.raises(StoreConnectionError, match="3 MiB free"):
        M3Index.open(tiny_encoder, tmp_path / "db", collection="c")
