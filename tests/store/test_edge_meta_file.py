"""The embedded engine's metadata file is written whole and readable as the umask allows.

A refactor wrote it through ``replace_journal.write_whole``, whose ``mkstemp`` file is
owner-only (0600): a collection built by one user and served by another (a search service
under its own account) could no longer be opened. A review caught it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.edge_backend import META_FILE


def test_the_metadata_file_follows_the_umask(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with M3Index.open(
            tiny_encoder, tmp_path / "db", collection="docs", backend="edge"
        ) as index:
            index.add_texts(["Apples are red."])
    finally:
        os.umask(old)
    meta = tmp_path / "db" / "docs" / META_FILE
    assert stat.S_IMODE(meta.stat().st_mode) == 0o644
    # written whole: no temporary file is left beside it
    assert sorted(p.name for p in meta.parent.iterdir() if META_FILE in p.name) == [META_FILE]
