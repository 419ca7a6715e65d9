"""Property test: arbitrary unicode never breaks the chunker's invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3kit.late_chunking import LateChunker

_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_settings
@given(
    text=st.text(max_size=300),
    chunk_size=st.integers(1, 24),
    overlap=st.integers(0, 40),
    placement=st.sampled_from(["centred", "chunks"]),
    late_heads=st.sampled_from([None, ["dense", "sparse", "colbert"]]),
)
def test_arbitrary_unicode(tiny_small_window, h, text, chunk_size, overlap, placement, late_heads):  # type: ignore[no-untyped-def]
    enc = tiny_small_window  # window 64: texts of more than 62 tokens are windowed
    chunker = LateChunker(
        enc,
        chunk_size=chunk_size,
        window=64,
        overlap=overlap,
        placement=placement,
        late_heads=late_heads,
    )
    chunks = chunker.chunk([text])[0]
    h.assert_spans_exact(chunks, text, tiled=True)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(enc, text)))
    for c in chunks:
        assert c.dense.shape == (enc.dense_dim,) and c.dense.dtype == np.float32
        assert np.isfinite(c.dense).all()
        assert abs(float(np.linalg.norm(c.dense)) - 1.0) < 1e-4
        idx, val = c.sparse.indices, c.sparse.values
        assert np.all(np.diff(idx) > 0) and np.all(val > 0) and np.isfinite(val).all()
        expected_rows = c.token_end - max(c.token_start, 1)
        assert c.colbert.shape == (expected_rows, enc.colbert_dim)
        assert c.colbert.dtype == np.float32 and np.isfinite(c.colbert).all()


@_settings
@given(
    text=st.text(max_size=200),
    pairs=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=8),
)
def test_arbitrary_callable_spans(tiny_encoder, h, text, pairs):  # type: ignore[no-untyped-def]
    """Any in-range spans (unsorted, overlapping, empty) give disjoint chunks owning all tokens."""
    n = len(text)
    spans = [(min(a, b, n), min(max(a, b), n)) for a, b in pairs]
    chunks = LateChunker(tiny_encoder, splitter=lambda t: spans).chunk([text])[0]
    h.assert_spans_exact(chunks, text, tiled=False)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(tiny_encoder, text)))
