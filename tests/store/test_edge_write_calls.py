"""The embedded engine is written in calls of a bounded size.

The engine holds the GIL through a call: one write of 64 BGE-M3 chunks of 256 tokens paused
every other thread (an event loop beside an ``aadd_*``) for 0.4-0.5 s (a review measured it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index, edge_backend
from m3kit.store.edge_requests import engine_calls
from m3kit.store.plan import PointData


def test_bge_m3_sized_points_go_four_to_a_call() -> None:
    rng = np.random.default_rng(0)
    point = PointData(
        "a",
        rng.standard_normal(1024).astype(np.float32),
        {},
        colbert=rng.standard_normal((256, 1024)).astype(np.float32),
    )
    assert [len(part) for part in engine_calls([point] * 10)] == [4, 4, 2]
    huge = PointData("b", point.dense, {}, colbert=np.zeros((2048, 1024), np.float32))
    assert [len(part) for part in engine_calls([point, huge, point])] == [1, 1, 1]


def test_a_write_in_several_calls_stores_every_chunk(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"Document number {i} about topic {i % 3}." for i in range(12)]
    calls: list[int] = []

    def spied(points: Sequence[PointData]) -> Iterator[Sequence[PointData]]:
        for part in engine_calls(points, budget=1):  # one point a call
            calls.append(len(part))
            yield part

    monkeypatch.setattr(edge_backend, "engine_calls", spied)
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        index.add_texts(texts, doc_ids=[str(i) for i in range(12)])
    assert calls.count(1) == len(calls) >= 12, calls
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        assert index.count() == 12
        assert index.search("Document number 7", k=1)[0].doc_id == "7"
