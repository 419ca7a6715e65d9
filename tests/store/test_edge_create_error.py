"""A collection another process creates at the same moment: the error says so.

Two processes creating one embedded collection at once: the loser's engine sometimes failed on
a file the winner was making ("No such file or directory"), and the message advised checking
that the folder exists and holds an m3kit collection (a review's run: 1 in 9 tries).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import qdrant_edge as qe

from m3kit import M3Encoder
from m3kit.errors import StoreConnectionError
from m3kit.store import M3Index


def test_a_failed_create_names_a_concurrent_creator(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def racing(path: str, config: object) -> object:
        raise RuntimeError(
            "Service internal error: IO Error: No such file or directory (os error 2)"
        )

    monkeypatch.setattr(qe.EdgeShard, "create", racing)
    with pytest.raises(StoreConnectionError, match="creating it at the same moment: open it again"):
        M3Index.open(tiny_encoder, tmp_path / "db", collection="c")
