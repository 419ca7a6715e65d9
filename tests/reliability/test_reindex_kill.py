"""A reindex killed with SIGKILL and run again equals an uninterrupted reindex (both backends)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index

DOCS = 200


def _corpus(squad_dir: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in (squad_dir / "corpus.jsonl").open(encoding="utf-8")]
    assert len(rows) >= DOCS
    with out.open("w", encoding="utf-8") as f:
        for row in rows[:DOCS]:
            f.write(json.dumps({"_id": row["_id"], "text": row["text"][:300]}) + "\n")
    return out


def perturbed_checkpoint(source: Path, out: Path, seed: int = 1) -> Path:
    """A copy of ``source`` whose backbone and head weights have seeded noise added."""
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


def _cli(*args: str | Path, store: Path, backend: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "m3kit.cli",
        *map(str, args),
        "--collection",
        "c",
        "--path",
        str(store),
        "--backend",
        backend,
        "--dtype",
        "fp32",
    ]


def _dump(store: Path, backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(every point as ``{id: (payload, vectors)}``, the collection's m3kit record)."""
    points: dict[str, Any] = {}
    if backend == "client":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(store))
        try:
            records, _ = client.scroll("c", limit=100_000, with_payload=True, with_vectors=True)
            record = dict((client.get_collection("c").config.metadata or {}).get("m3kit", {}))
        finally:
            client.close()
    else:
        import qdrant_edge as qe

        shard = qe.EdgeShard.load(str(store / "c"))
        try:
            records, _ = shard.scroll(
                qe.ScrollRequest(limit=100_000, with_payload=True, with_vector=True)
            )
        finally:
            shard.close()
        record = json.loads((store / "c" / "m3kit_collection.json").read_text())
    for r in records:
        v = r.vector
        points[str(r.id)] = (
            dict(r.payload),
            np.asarray(v["dense"]),
            (list(v["sparse"].indices), np.asarray(v["sparse"].values)),
            np.asarray(v["colbert"]),
        )
    return points, record


def _run_and_kill(cmd: list[str], env: dict[str, str], done: int) -> int:
    """Start ``cmd``; SIGKILL it once its reindex bar shows ``done`` documents written."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    seen = bytearray()
    pattern = re.compile(rb"reindex:.*?\|\s*(\d+)/(\d+)")

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


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_sigkill_mid_reindex_then_rerun_equals_uninterrupted(
    squad_sample_dir: Path, tiny_m3_path: Path, tmp_path: Path, backend: str
) -> None:
    model_b = perturbed_checkpoint(tiny_m3_path, tmp_path / "model_b")
    corpus = _corpus(squad_sample_dir, tmp_path / "corpus.jsonl")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "0"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    base = tmp_path / "base"
    subprocess.run(
        _cli("index", corpus, "--model", tiny_m3_path, store=base, backend=backend),
        check=True,
        **quiet,  # type: ignore[arg-type]
    )
    clean, crashed = (
        shutil.copytree(base, tmp_path / "clean"),
        shutil.copytree(base, tmp_path / "crashed"),
    )
    before, _ = _dump(base, backend)

    enc_a = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    enc_b = M3Encoder.from_pretrained(model_b, dtype="fp32")
    with M3Index.open(enc_b, clean, collection="c", backend=backend, reindex=True):
        pass  # the uninterrupted reindex, in process (the CLI does the same call)
    expected, record = _dump(clean, backend)
    assert expected.keys() == before.keys()  # same points, re-encoded in place

    reindex = ("index", "--reindex", "--model", model_b)
    rc = _run_and_kill(_cli(*reindex, store=crashed, backend=backend), env, done=64)
    assert rc == -signal.SIGKILL, "the reindex finished before it could be interrupted"
    partial, pending = _dump(crashed, backend)
    writers = {p[0]["encoder_id"] for p in partial.values()}
    assert len(writers) == 2 and "reindex_to" in pending  # half done, and the record says so
    with pytest.raises(FingerprintMismatchError, match="interrupted"):
        M3Index.open(enc_a, crashed, collection="c", backend=backend)

    with M3Index.open(enc_b, crashed, collection="c", backend=backend, reindex=True):
        pass  # the rerun
    got, got_record = _dump(crashed, backend)
    assert got_record == record
    assert got.keys() == expected.keys()
    for pid, (payload, dense, sparse, colbert) in expected.items():
        o_payload, o_dense, o_sparse, o_colbert = got[pid]
        assert o_payload == payload
        np.testing.assert_allclose(o_dense, dense, atol=1e-6)
        assert o_sparse[0] == sparse[0]
        np.testing.assert_allclose(o_sparse[1], sparse[1], atol=1e-6)
        np.testing.assert_allclose(o_colbert, colbert, atol=2e-3)
