"""Window placement (issue #19): every token's state from exactly one window, context both sides."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from m3kit import M3Encoder
from m3kit.late_chunking import LateChunker
from m3kit.late_windows import WindowPlacement, plan_document_windows

ALL = ["dense", "sparse", "colbert"]


@st.composite
def _documents(draw):  # type: ignore[no-untyped-def]
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=25))
    ends = np.cumsum(sizes).tolist()
    bounds = [(e - s, e) for e, s in zip(ends, sizes, strict=True)]
    capacity = draw(st.integers(1, 80))
    overlap = draw(st.integers(0, capacity - 1))
    placement = draw(st.sampled_from(list(WindowPlacement)))
    return bounds, capacity, overlap, placement


@settings(max_examples=400, deadline=None)
@given(_documents())
def test_every_token_from_exactly_one_window(doc) -> None:  # type: ignore[no-untyped-def]
    bounds, capacity, overlap, placement = doc
    n = bounds[-1][1]
    windows = plan_document_windows(placement, bounds, capacity, overlap)
    owners = np.zeros(n, dtype=int)
    for w in windows:
        assert 0 <= w.start <= w.own_start <= w.own_end <= w.end <= n
        assert w.end - w.start <= capacity or (n <= capacity and w.end - w.start == n)
        owners[w.own_start : w.own_end] += 1
    assert owners.tolist() == [1] * n  # each token's state is taken once


@settings(max_examples=400, deadline=None)
@given(_documents())
def test_centred_chunks_have_context_on_both_sides(doc) -> None:  # type: ignore[no-untyped-def]
    """Each chunk sees >= overlap // 2 tokens beyond itself on both sides (or the document's
    edge): its first token's window reaches back, its last token's window reaches forward."""
    bounds, capacity, overlap, _ = doc
    n = bounds[-1][1]
    windows = plan_document_windows(WindowPlacement.CENTRED, bounds, capacity, overlap)

    def owner(t: int):  # type: ignore[no-untyped-def]
        (w,) = [w for w in windows if w.own_start <= t < w.own_end]
        return w

    for a, b in bounds:
        first, last = owner(a), owner(b - 1)
        assert a - first.start >= min(overlap // 2, a)
        assert last.end - b >= min(overlap // 2, n - b)
        if overlap >= 2 and a > 0 and b < n:
            assert first.start < a and last.end > b  # context on both sides


def test_chunks_placement_can_leave_one_sided_context() -> None:
    """Why centred is the default: without overlap, chunk windows end at a chunk's edge."""
    bounds = [(0, 10), (10, 20), (20, 30), (30, 40)]
    chunks = plan_document_windows(WindowPlacement.CHUNKS, bounds, 20, 0)
    assert [(w.start, w.end) for w in chunks] == [(0, 20), (20, 40)]  # chunk 1 sees no right
    centred = plan_document_windows(WindowPlacement.CENTRED, bounds, 20, 10)
    first = next(w for w in centred if w.own_start <= 10 < w.own_end)
    last = next(w for w in centred if w.own_start <= 19 < w.own_end)
    assert first.start < 10 and last.end > 20


def test_centred_states_match_direct_forward(tiny_small_window, h):  # type: ignore[no-untyped-def]
    """A long document, centred windows: each token's state is its owning window's state."""
    enc: M3Encoder = tiny_small_window  # max_length 64
    text = " ".join([h.texts["english"]] * 3)
    chunker = LateChunker(enc, chunk_size=10, window=40, overlap=12, late_heads=ALL)
    assert chunker.placement is WindowPlacement.CENTRED
    chunks = chunker.chunk([text])[0]
    ids = h.document_ids(enc, text)
    content = ids[1:-1]
    windows = plan_document_windows(WindowPlacement.CENTRED, [(0, len(content))], 38, 12)
    assert len(windows) >= 4
    assert any(  # some chunk really takes its states from two windows
        sum(w.own_start < c.token_end - 1 and c.token_start - 1 < w.own_end for w in windows) == 2
        for c in chunks
    )
    hidden = np.zeros((len(ids), enc.dense_dim), dtype=np.float32)
    sparse = np.zeros(len(ids), dtype=np.float32)
    for w in windows:
        ref = h.reference_states(enc, [ids[0], *content[w.start : w.end], ids[-1]])
        src = slice(1 + w.own_start - w.start, 1 + w.own_end - w.start)
        hidden[1 + w.own_start : 1 + w.own_end] = ref.hidden[src]
        sparse[1 + w.own_start : 1 + w.own_end] = ref.sparse[src]
        if w.own_start == 0:
            hidden[0], sparse[0] = ref.hidden[0], ref.sparse[0]
        if w.own_end == len(content):
            hidden[-1], sparse[-1] = ref.hidden[-1], ref.sparse[-1]
    for c in chunks:
        ts, te = c.token_start, c.token_end
        mean = hidden[ts:te].mean(0)
        np.testing.assert_allclose(c.dense, mean / np.linalg.norm(mean), atol=1e-5)
        want = enc.sparse_vector(np.asarray(ids[ts:te]), sparse[ts:te])
        assert c.sparse.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(c.sparse.values, want.values, atol=1e-5)


def test_signature_names_every_setting(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    base = LateChunker(tiny_encoder, chunk_size=32)
    others = [
        LateChunker(tiny_encoder, chunk_size=32, placement="chunks"),
        LateChunker(tiny_encoder, chunk_size=32, late_heads=["colbert", "sparse"]),
        LateChunker(tiny_encoder, chunk_size=32, late_heads=["colbert"]),
        LateChunker(tiny_encoder, chunk_size=32, overlap=0),
        LateChunker(tiny_encoder, chunk_size=32, window=128),
    ]
    signatures = {base.signature, *(c.signature for c in others)}
    assert len(signatures) == len(others) + 1
    same = LateChunker(tiny_encoder, chunk_size=32, late_heads=ALL)
    assert same.signature == base.signature  # the defaults, spelled out
