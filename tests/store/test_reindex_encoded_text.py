"""A chunk's ``encoded_text`` (what its writer encoded, other than its text) survives reindex."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.store import ChunkRecord, M3Index, output_row
from m3kit.store.schema import ENCODED_TEXT, PAGE_CONTENT
from tests.reliability.killing import index_points

TEXT = "Berlin is the capital of Germany."
ENCODED = "passage: title: Capitals of Europe\n\nBerlin is the capital of Germany."


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_reindex_encodes_a_whole_documents_encoded_text(
    enc_a: M3Encoder, enc_b: M3Encoder, backend: str, tmp_path: Path
) -> None:
    with M3Index.open(enc_a, tmp_path, collection="c", backend=backend) as index:
        records = [
            ChunkRecord(
                "d", 0, TEXT, {}, output_row(enc_a.encode([ENCODED]), 0), encoded_text=ENCODED
            ),
            # the same text as encoded_text is not stored
            ChunkRecord("e", 0, TEXT, {}, output_row(enc_a.encode([TEXT]), 0), encoded_text=TEXT),
        ]
        index.store.upsert(records)
        stored = {p[0]["doc_id"]: p[0] for p in index_points(index).values()}
        assert stored["d"][ENCODED_TEXT] == ENCODED and ENCODED_TEXT not in stored["e"]
    with M3Index.open(enc_b, tmp_path, collection="c", backend=backend, reindex=True) as re:
        points = {p[0]["doc_id"]: p for p in index_points(re).values()}
    payload, vectors = points["d"]
    assert (payload[PAGE_CONTENT], payload[ENCODED_TEXT]) == (TEXT, ENCODED)
    want = enc_b.encode([ENCODED])
    np.testing.assert_allclose(vectors["dense"], want.dense[0], atol=1e-5)
    assert vectors["sparse"][0] == list(want.sparse[0].indices)
    assert len(vectors["colbert"]) == len(want.colbert[0])
    payload, vectors = points["e"]
    assert ENCODED_TEXT not in payload
    np.testing.assert_allclose(vectors["dense"], enc_b.encode([TEXT]).dense[0], atol=1e-5)


def test_reindex_refuses_chunks_of_a_chunked_document_with_encoded_text(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path
) -> None:
    parts = ["Berlin is a city. ", "It is in Germany."]
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        out = enc_a.encode(["x: " + p for p in parts])
        index.store.upsert(
            [
                ChunkRecord(
                    "d",
                    i,
                    p,
                    {},
                    output_row(out, i),
                    start=sum(map(len, parts[:i])),
                    end=sum(map(len, parts[: i + 1])),
                    chunking={"kind": "naive"},
                    encoded_text="x: " + p,
                )
                for i, p in enumerate(parts)
            ]
        )
    with pytest.raises(ValueError, match=r"'d': chunks encoded from other texts than stored"):
        M3Index.open(enc_b, tmp_path, collection="c", backend="edge", reindex=True)
