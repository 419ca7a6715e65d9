"""The embedded engine is written in requests of a bounded number of vector values.

The engine holds the GIL through a call: one write of 64 BGE-M3 chunks of 256 tokens paused
every other thread (an event loop beside an ``aadd_*``) for 0.4-0.5 s (a review measured it).
The requests are sized in :class:`~m3kit.store.StoreWrites` (not split inside the backend),
so a request that fails leaves its documents as they were, as on a server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.errors import StoreConnectionError
from m3kit.late_chunking import LateChunker
from m3kit.store import M3Index, edge_folder
from m3kit.store.edge_requests import ENGINE_CALL_VALUES
from m3kit.store.plan import PointData
from m3kit.store.points import fitting_batch_size
from m3kit.store.schema import DOC_HASH, DOC_ID


def test_bge_m3_sized_points_go_four_to_a_request() -> None:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(1024).astype(np.float32)
    point = PointData("a", dense, {}, colbert=np.zeros((256, 1024), np.float32))
    assert fitting_batch_size([point] * 10, 64, None, ENGINE_CALL_VALUES) == 4
    huge = PointData("b", dense, {}, colbert=np.zeros((2048, 1024), np.float32))
    assert fitting_batch_size([point, huge], 64, None, ENGINE_CALL_VALUES) == 1


def _versions(index: M3Index) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for hit in index.store._backend.scroll(None, [DOC_ID, DOC_HASH]):
        out.setdefault(str(hit.payload[DOC_ID]), set()).add(str(hit.payload[DOC_HASH]))
    return out


def test_a_request_refused_mid_write_leaves_no_document_half_old(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's case: the engine calls of one request, split inside the backend, left a
    document's first new chunks beside its old ones when a later call was refused."""
    chunker = LateChunker(tiny_encoder, chunk_size=12, window=40)
    old = " ".join(f"Old sentence number {i} about apples." for i in range(8))
    new = " ".join(f"New sentence number {i} about bananas." for i in range(8))
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        index.add_texts([old, "Short old."], doc_ids=["x", "y"], chunker=chunker)
        before = _versions(index)
        index.store._backend.request_values = 1  # one point a request
        calls: list[int] = []
        check_room = edge_folder.ShardFolder.check_room

        def refuse_second(folder: edge_folder.ShardFolder, nbytes: int) -> None:
            calls.append(nbytes)
            if len(calls) == 2:
                raise StoreConnectionError("no room (simulated)")
            check_room(folder, nbytes)

        monkeypatch.setattr(edge_folder.ShardFolder, "check_room", refuse_second)
        with pytest.raises(StoreConnectionError, match="simulated"):
            index.add_texts([new, "Short new."], doc_ids=["x", "y"], chunker=chunker)
        after = _versions(index)
        assert len(after["x"]) == 1 and after["x"] != before["x"], "x is half old, half new"
        assert after["y"] == before["y"]  # its request was never sent: wholly old
        monkeypatch.undo()
        index.store._backend.request_values = ENGINE_CALL_VALUES
        index.add_texts([new, "Short new."], doc_ids=["x", "y"], chunker=chunker)
        assert index.search("New sentence number 5", k=1)[0].doc_id == "x"
