"""Several threads encoding at once get the same results as a serial run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from m3kit import M3Encoder


def test_eight_threads_equal_serial(tiny_encoder: M3Encoder) -> None:
    batches = [[f"text {i} {'word ' * (i * 3)}", f"北京 {i}", ""] for i in range(16)]
    serial = [tiny_encoder.encode(b) for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(tiny_encoder.encode, batches))
    for s, p in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(s.dense, p.dense, atol=1e-6)
        assert s.sparse == p.sparse
        for a, b in zip(s.colbert, p.colbert, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
