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


def test_two_encoders_fingerprints_are_taken_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking one encoder's fingerprint (reading and hashing its weights) held one lock for
    every encoder of the process: an app opening two collections with two models waited for
    one digest before the other began. The lock is per encoder now: the two digests run at
    once (the same encoder's still wait for one: the test above)."""
    import m3kit.weights as weights
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.testing import build_tiny_m3_checkpoint

    encoders = [
        M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tmp_path / name), dtype="fp32")
        for name in ("a", "b")
    ]
    digest = weights._file_sha256
    both = threading.Barrier(2)  # met only while the two encoders' files are hashed at once
    met: list[Path] = []

    def watched(path: Path) -> str:
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait(timeout=5)
            met.append(path)
        return digest(path)

    monkeypatch.setattr(weights, "_file_sha256", watched)
    with ThreadPoolExecutor(max_workers=2) as pool:
        identities = list(pool.map(lambda e: encoder_fingerprint(e).identity, encoders))
    assert all(identities)
    assert met, "the second encoder's digest waited for the first one's"
