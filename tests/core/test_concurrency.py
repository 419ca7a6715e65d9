"""Several threads encoding at once get the same results as a serial run."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

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


def test_threads_asking_a_new_encoder_s_fingerprint_digest_its_weights_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first requests of a web app each asking for the fingerprint (LlamaIndex's
    ``M3Embedding`` takes it with every vector) wait for one digest of the weight files, not
    one each (BGE-M3: 2.2 GB read and hashed per thread)."""
    import m3kit.weights as weights
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.testing import build_tiny_m3_checkpoint

    encoder = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tmp_path), dtype="fp32")
    digest = weights._file_sha256
    hashed: list[Path] = []
    # a second thread hashing the same files meanwhile meets the first here (and both go on);
    # a single digest waits for nobody, until the timeout
    overlap = threading.Barrier(2)

    def watched(path: Path) -> str:
        hashed.append(path)
        with contextlib.suppress(threading.BrokenBarrierError):
            overlap.wait(timeout=0.3)
        return digest(path)

    monkeypatch.setattr(weights, "_file_sha256", watched)
    start = threading.Barrier(4)

    def ask(_: int) -> str:
        start.wait(timeout=30)
        return encoder_fingerprint(encoder).identity

    with ThreadPoolExecutor(max_workers=4) as pool:
        identities = set(pool.map(ask, range(4)))
    assert len(identities) == 1
    assert len(hashed) == len(set(hashed))  # each weight file hashed once
