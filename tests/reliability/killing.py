"""Test helpers for interrupted runs: kill a CLI run mid-write, fail an encoder on the n-th
call, hold a call until released, count the threads asking for a lock, give a checkpoint
other weights, and compare two collections point by point.

Used by the SIGKILL tests here and by ``tests/store/test_fingerprint.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: ``{point id: (payload, {"dense": [d], "sparse": (indices, values), "colbert": [t, d]})}``
Points = dict[str, tuple[dict[str, Any], dict[str, Any]]]


def perturbed_checkpoint(source: Path, out: Path, seed: int = 1) -> Path:
    """A copy of ``source`` whose backbone and head weights have seeded noise added.

    Same sizes and tokenizer, other weights: another encoder for the fingerprint checks.
    """
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out)
    gen = torch.Generator().manual_seed(seed)

    def noisy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in tensors.items()
        }

    save_file(noisy(load_file(out / "model.safetensors")), out / "model.safetensors")
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        torch.save(noisy(torch.load(out / head, weights_only=True)), out / head)
    return out


def cli_command(*args: str | Path, store: Path, backend: str, collection: str = "c") -> list[str]:
    """``python -m m3kit.cli <args> --collection c --path store --backend b --dtype fp32``."""
    return [
        sys.executable,
        "-m",
        "m3kit.cli",
        *map(str, args),
        "--collection",
        collection,
        "--path",
        str(store),
        "--backend",
        backend,
        "--dtype",
        "fp32",
    ]


def run_and_kill(cmd: list[str], env: dict[str, str], *, bar: str, done: int) -> int:
    """Start ``cmd``; SIGKILL it once its ``bar`` progress bar shows ``done`` items written.

    Run with ``TQDM_MININTERVAL=0`` in ``env`` so that every step of the bar is printed.
    Returns the exit code (``-signal.SIGKILL`` when the kill landed).
    """
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    seen = bytearray()
    pattern = re.compile(re.escape(bar.encode()) + rb":.*?\|\s*(\d+)/(\d+)")

    def watch() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
            seen.extend(chunk)
            counts = [int(m.group(1)) for m in pattern.finditer(bytes(seen[-4096:]))]
            if counts and max(counts) >= done:
                proc.send_signal(signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc = proc.wait(timeout=600)
    watcher.join(timeout=10)
    return rc


class FailingEncoder:
    """Wraps an encoder; the ``fail_on``-th encoding call raises (an interruption mid-job).

    ``M3Index`` encodes whole documents from their token ids (``encode_tokenized``), so both
    entry points count. ``calls`` counts them; set it past ``fail_on`` to stop failing, or
    give ``fail_on=0`` to only count.
    """

    def __init__(self, inner: Any, fail_on: int) -> None:
        self._inner, self._fail_on, self.calls = inner, fail_on, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _count(self) -> None:
        self.calls += 1
        if self.calls == self._fail_on:
            raise RuntimeError("interrupted")

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return self._inner.encode(*args, **kwargs)

    def encode_tokenized(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return self._inner.encode_tokenized(*args, **kwargs)


class Gate:
    """Wraps a function; its ``hold``-th call waits until ``release`` is set (``held`` is set
    once it waits): a call caught mid-way, e.g. an encoding when an async add is cancelled."""

    def __init__(self, func: Any, hold: int) -> None:
        self._func, self._hold, self.calls = func, hold, 0
        self.held, self.release = threading.Event(), threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self._hold:
            self.held.set()
            assert self.release.wait(30), "the held call was never released"
        return self._func(*args, **kwargs)


class WatchedLock:
    """A lock that counts the threads that asked for it (``waiting(n)`` waits for ``n``; a
    thread asking again, as :func:`m3kit.store.cancelling.holding` does while it waits, is
    counted once)."""

    def __init__(self, lock: Any) -> None:
        self._lock, self._changed = lock, threading.Condition()
        self._askers: set[int] = set()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._changed:
            self._askers.add(threading.get_ident())
            self._changed.notify_all()
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Any:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def waiting(self, n: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._askers) >= n, timeout=30)


async def cancel_when_held(task: asyncio.Future[Any], gate: Gate, how: str) -> None:
    """Cancel ``task`` (``how``: ``"cancel"``, ``task.cancel()``; ``"wait_for"``, an
    ``asyncio.wait_for`` timeout) once ``gate`` holds its call, which is released 0.3 s later;
    returns once the cancel has raised."""
    assert await asyncio.to_thread(gate.held.wait, 30), "the call was never held"
    threading.Timer(0.3, gate.release.set).start()
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(task, 0.01)


def index_held_at_d(
    encoder: Any, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[Any, Gate]:
    """An in-memory ``M3Index`` (collection ``c``; ``options`` to ``M3Index.open``) holding
    document ``d`` ("first version of d"), writing one document a group, whose encoder's 2nd
    call from now on is held by the returned :class:`Gate`: an add of ``e`` then ``d`` is
    caught encoding ``d``, after ``e`` is written."""
    from m3kit.store import M3Index

    index = M3Index.open(encoder, collection="c", **options)
    index.write_group = 1
    index.add_texts(["first version of d"], doc_ids=["d"])
    gate = Gate(encoder.encode_tokenized, hold=2)  # 1: e; 2: d
    monkeypatch.setattr(encoder, "encode_tokenized", gate)
    return index, gate


def points_of(records: Iterable[Any]) -> Points:
    """Scrolled Qdrant records (qdrant-client or qdrant-edge) as :data:`Points`."""
    out: Points = {}
    for r in records:
        sparse = r.vector["sparse"]
        out[str(r.id)] = (
            dict(r.payload),
            {
                "dense": np.asarray(r.vector["dense"]),
                "sparse": (list(sparse.indices), np.asarray(sparse.values)),
                "colbert": np.asarray(r.vector["colbert"]),
            },
        )
    return out


def index_points(index: Any) -> Points:
    """Every point of an open ``M3Index`` (either backend), read from the engine itself."""
    backend = index.store._backend
    if index.store.backend.value == "client":
        records, _ = backend._client.scroll(
            backend.collection, limit=10_000, with_payload=True, with_vectors=True
        )
        return points_of(records)
    import qdrant_edge as qe

    records, _ = backend.shard.scroll(
        qe.ScrollRequest(limit=10_000, with_payload=True, with_vector=True)
    )
    return points_of(records)


def dump_store(store: Path, backend: str, collection: str = "c") -> tuple[Points, dict[str, Any]]:
    """Every point of a closed store folder and the collection's m3kit record."""
    if backend == "client":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(store))
        try:
            records, offset = [], None
            while True:
                page, offset = client.scroll(
                    collection, limit=256, offset=offset, with_payload=True, with_vectors=True
                )
                records.extend(page)
                if offset is None:
                    break
            meta = client.get_collection(collection).config.metadata or {}
            record = dict(meta.get("m3kit", {}))
        finally:
            client.close()
        return points_of(records), record
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(str(store / collection))
    try:
        records, _ = shard.scroll(
            qe.ScrollRequest(limit=100_000, with_payload=True, with_vector=True)
        )
    finally:
        shard.close()
    record = json.loads((store / collection / "m3kit_collection.json").read_text())
    return points_of(records), record


def assert_same_points(got: Points, want: Points, *, atol: float = 1e-5) -> None:
    """Same ids, payloads and vectors (dense and sparse to ``atol``; ColBERT is float16)."""
    assert got.keys() == want.keys()
    for pid, (payload, vec) in want.items():
        other_payload, other = got[pid]
        assert other_payload == payload, pid
        np.testing.assert_allclose(other["dense"], vec["dense"], atol=atol)
        assert other["sparse"][0] == vec["sparse"][0], pid
        np.testing.assert_allclose(other["sparse"][1], vec["sparse"][1], atol=atol)
        np.testing.assert_allclose(other["colbert"], vec["colbert"], atol=2e-3)
