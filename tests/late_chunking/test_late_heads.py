"""Per-head late chunking (issue #19): each head late (pooled from the document pass) or naive
(the chunk encoded alone), checked against independent references for every combination."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from m3kit import Head
from m3kit.chunking import NaiveChunker
from m3kit.late_chunking import LateChunker, default_late_heads

_COMBOS = [
    list(c) for r in range(4) for c in itertools.combinations(["dense", "sparse", "colbert"], r)
]


@pytest.mark.parametrize("late", _COMBOS, ids=lambda c: "+".join(c) or "none")
def test_each_head_late_or_naive(tiny_encoder, h, late):  # type: ignore[no-untyped-def]
    text = h.texts["english"]
    whole = tiny_encoder.max_length  # one window: late states are one plain forward pass
    chunker = LateChunker(tiny_encoder, chunk_size=8, window=whole, late_heads=late)
    assert chunker.late_heads == Head.parse(late) if late else not chunker.late_heads
    chunks = chunker.chunk([text])[0]
    assert len(chunks) > 2
    naive = NaiveChunker(tiny_encoder, chunk_size=8).chunk([text])[0]  # each chunk alone
    assert [c.text for c in naive] == [c.text for c in chunks]
    ids = np.asarray(h.document_ids(tiny_encoder, text))
    ref = h.reference_states(tiny_encoder, ids.tolist())  # the whole document, one pass
    for c, alone in zip(chunks, naive, strict=True):
        ts, te = c.token_start, c.token_end
        assert c.vectors.heads == tiny_encoder.available_heads
        if "dense" in late:
            mean = ref.hidden[ts:te].mean(0)
            np.testing.assert_allclose(c.dense, mean / np.linalg.norm(mean), atol=1e-5)
        else:
            np.testing.assert_allclose(c.dense, alone.dense, atol=1e-6)
        if "sparse" in late:
            want = tiny_encoder.sparse_vector(ids[ts:te], ref.sparse[ts:te])
        else:
            want = alone.sparse
        assert c.sparse.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(c.sparse.values, want.values, atol=1e-5)
        if "colbert" in late:
            np.testing.assert_allclose(c.colbert, ref.colbert[max(ts, 1) - 1 : te - 1], atol=1e-5)
        else:
            np.testing.assert_allclose(c.colbert, alone.colbert, atol=1e-6)


def test_all_naive_runs_no_document_pass(tiny_encoder, h, monkeypatch):  # type: ignore[no-untyped-def]
    calls: list[str] = []
    monkeypatch.setattr(tiny_encoder, "token_states", lambda *a, **k: calls.append("doc") or [])
    chunks = LateChunker(tiny_encoder, chunk_size=8, late_heads=[]).chunk([h.texts["english"]])
    assert calls == [] and len(chunks[0]) > 2


def test_default_runs_the_document_pass_alone(tiny_encoder, h, monkeypatch):  # type: ignore[no-untyped-def]
    """A multi-head model's default late chunking encodes no chunk alone: one pass, ~naive cost."""
    calls: list[str] = []

    def counted(name: str) -> Any:
        original = getattr(tiny_encoder, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return call

    for name in ("encode", "encode_tokenized"):
        monkeypatch.setattr(tiny_encoder, name, counted(name))
    chunks = LateChunker(tiny_encoder, chunk_size=8).chunk([h.texts["english"]])
    assert len(chunks[0]) > 2 and calls == []
    LateChunker(tiny_encoder, chunk_size=8, late_heads=["sparse", "colbert"]).chunk(
        [h.texts["english"]]
    )
    assert calls != []  # a naive head costs a pass over every chunk


def test_default_late_heads(tiny_encoder, minilm_encoder, h, caplog):  # type: ignore[no-untyped-def]
    """Every head late for a multi-head model (one pass); nothing late for a dense-only one."""
    assert default_late_heads(minilm_encoder) == frozenset()
    with caplog.at_level("INFO", logger="m3kit.late_chunking"):
        minilm = LateChunker(minilm_encoder, chunk_size=8)
    assert "no head is pooled late" in caplog.text
    text = h.texts["english"]
    naive = NaiveChunker(minilm_encoder, chunk_size=8).chunk([text])[0]
    got = minilm.chunk([text])[0]
    np.testing.assert_allclose([c.dense for c in got], [c.dense for c in naive], atol=1e-6)
    assert default_late_heads(tiny_encoder) == set(Head)
    assert LateChunker(tiny_encoder).naive_heads == frozenset()  # the document pass alone
    assert LateChunker(tiny_encoder, dense_pooling="mean").late_heads == set(Head)
    assert LateChunker(tiny_encoder, dense_pooling="naive").late_heads == {
        Head.SPARSE,
        Head.COLBERT,
    }
    # heads the encoder lacks are ignored: MiniLM is dense only
    assert LateChunker(minilm_encoder, late_heads=["dense", "sparse"]).late_heads == {Head.DENSE}
