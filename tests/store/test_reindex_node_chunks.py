"""Chunks recorded as ``{"kind": "nodes"}``: each encoded alone, reindexed one by one.

Framework nodes (a LlamaIndex node parser's) are each encoded alone on their own text, at
positions that may overlap or leave gaps. A reindex re-encodes each from its ``encoded_text``
(else its text) and keeps everything else it stores. Several chunks with no recorded chunking
are refused, saying what is known of them (before, the refusal said they were written before
m3kit recorded chunking, which is not what a LlamaIndex writer's or ``M3Store.upsert``'s
records are).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.store import ChunkRecord, M3Index, output_row
from m3kit.store.schema import CHUNK_COUNT, ENCODER_ID
from tests.reliability.killing import index_points

DOC = "Berlin is a city. It is in Germany. Its river is the Spree."
#: (start, end, encoded_text): overlapping spans, a gap, one encoded on other text
SPANS = [(0, 35, None), (18, 35, "passage: Germany\n\nIt is in Germany."), (36, 58, None)]
NODES = {"kind": "nodes"}


def _records(encoder: M3Encoder, chunking: Any = NODES, count: int = 3) -> list[ChunkRecord]:
    texts = [DOC[s:e] if enc is None else enc for s, e, enc in SPANS]
    out = encoder.encode(texts)
    return [
        ChunkRecord(
            "d",
            i,
            DOC[s:e],
            {"part": i},
            output_row(out, i),
            start=s,
            end=e,
            doc_hash="v1",
            chunk_count=count,
            chunking=chunking,
            chunk_id=f"node-{i}",
            extra={"class_name": "TextNode"},
            encoded_text=enc,
        )
        for i, (s, e, enc) in enumerate(SPANS)
    ]


def _payloads(points: Any) -> dict[int, dict[str, Any]]:
    return {
        p["chunk_index"]: {k: v for k, v in p.items() if k != ENCODER_ID}
        for p, _ in points.values()
    }


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_reindex_encodes_each_node_chunk_alone(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with M3Index.open(enc_a, tmp_path / "old", collection="c", backend=backend) as index:
        index.store.upsert(_records(enc_a), replace=True)
        before = index_points(index)
    with M3Index.open(enc_b, tmp_path / "fresh", collection="c", backend=backend) as index:
        index.store.upsert(_records(enc_b), replace=True)
        want = index_points(index)
    with M3Index.open(
        enc_b, tmp_path / "old", collection="c", backend=backend, reindex=True
    ) as index:
        got = index_points(index)
    assert got.keys() == want.keys() == before.keys() and len(got) == 3
    assert _payloads(got) == _payloads(before) == _payloads(want)
    for pid, (_, vectors) in want.items():
        np.testing.assert_allclose(got[pid][1]["dense"], vectors["dense"], atol=1e-5)
        assert got[pid][1]["sparse"][0] == vectors["sparse"][0]
        np.testing.assert_allclose(got[pid][1]["colbert"], vectors["colbert"], atol=2e-3)


def test_nodes_added_in_several_writes_keep_their_chunks(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    """Nodes of one version added in two writes hold two chunk counts; the reindex writes
    them in one upsert with the larger, and keeps every chunk."""
    records = _records(enc_a)
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        index.store.upsert([replace(r, chunk_count=2) for r in records[:2]], replace=True)
        index.store.upsert(records[2:], replace=True)
    with M3Index.open(enc_b, tmp_path, collection="c", backend="edge", reindex=True) as index:
        points = index_points(index)
    assert sorted(p["chunk_index"] for p, _ in points.values()) == [0, 1, 2]
    assert {p[CHUNK_COUNT] for p, _ in points.values()} == {3}


@pytest.mark.parametrize(
    ("chunkings", "why"),
    [
        ([None, None, None], "several chunks with no recorded chunking"),
        ([NODES, None, NODES], r"chunks recorded as nodes encoded alone mixed with .*none"),
    ],
    ids=["unrecorded", "mixed"],
)
def test_chunks_that_cannot_be_redone_are_refused(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path, chunkings: list[Any], why: str
) -> None:
    records = [replace(r, chunking=c) for r, c in zip(_records(enc_a), chunkings, strict=True)]
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        index.store.upsert(records, replace=True)
        before = index_points(index)
    with pytest.raises(ValueError, match=f"'d': {why}") as caught:
        M3Index.open(enc_b, tmp_path, collection="c", backend="edge", reindex=True)
    assert "written before m3kit recorded chunking" not in str(caught.value)
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        assert index_points(index).keys() == before.keys()
        assert _payloads(index_points(index)) == _payloads(before)
