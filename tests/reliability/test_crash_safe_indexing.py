"""Interrupted indexing: a re-run gives exactly the collection an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index


def _corpus(squad_dir: Path, tmp: Path, n: int) -> Path:
    """``n`` documents: the sample's paragraphs cut in two at the space nearest the middle."""
    rows = [json.loads(line) for line in (squad_dir / "corpus.jsonl").open(encoding="utf-8")]
    docs = []
    for row in rows:
        text = row["text"]
        cut = text.find(" ", len(text) // 2)
        for half, part in enumerate((text[:cut], text[cut + 1 :])):
            docs.append({"_id": f"{row['_id']}_h{half}", "text": part, "title": row["title"]})
    assert len(docs) >= n, f"{squad_dir} gives {len(docs)} documents, {n} wanted"
    out = tmp / "corpus.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for doc in docs[:n]:
            f.write(json.dumps(doc) + "\n")
    return out


def _index_cmd(corpus: Path, store: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "m3kit.cli",
        "index",
        str(corpus),
        "--collection",
        "c",
        "--path",
        str(store),
        "--model",
        str(model),
        "--backend",
        "client",
        "--dtype",
        "fp32",
    ]


def _dump(store: Path) -> dict[str, Any]:
    """Every point with its payload and vectors, read with qdrant-client directly."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(store))
    try:
        points, offset = [], None
        while True:
            page, offset = client.scroll(
                "c", limit=256, offset=offset, with_payload=True, with_vectors=True
            )
            points.extend(page)
            if offset is None:
                break
    finally:
        client.close()
    return {str(p.id): p for p in points}


def _kill_after_first_writes(cmd: list[str], env: dict[str, str], done: int) -> int:
    """Start ``cmd``; SIGKILL it once its progress bar shows ``done`` documents written."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    assert proc.stderr is not None
    seen = bytearray()
    pattern = re.compile(rb"index:.*?\|\s*(\d+)/(\d+)")

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


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(
    squad_sample_dir: Path, tiny_m3_path: Path, tmp_path: Path
) -> None:
    corpus = _corpus(squad_sample_dir, tmp_path, 320)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "0"}
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"

    subprocess.run(
        _index_cmd(corpus, clean, tiny_m3_path),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    expected = _dump(clean)
    assert len({p.payload["doc_id"] for p in expected.values()}) == 320  # documents, chunked

    rc = _kill_after_first_writes(_index_cmd(corpus, crashed, tiny_m3_path), env, done=64)
    assert rc == -signal.SIGKILL, "the run finished before it could be interrupted"
    partial = _dump(crashed)
    assert 0 < len(partial) < len(expected), f"expected a partial collection, got {len(partial)}"

    subprocess.run(
        _index_cmd(corpus, crashed, tiny_m3_path),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got = _dump(crashed)
    assert got.keys() == expected.keys()
    for pid, point in expected.items():
        other = got[pid]
        assert other.payload == point.payload
        np.testing.assert_allclose(other.vector["dense"], point.vector["dense"], atol=1e-6)
        assert other.vector["sparse"].indices == point.vector["sparse"].indices
        np.testing.assert_allclose(
            other.vector["sparse"].values, point.vector["sparse"].values, atol=1e-6
        )
        np.testing.assert_allclose(other.vector["colbert"], point.vector["colbert"], atol=2e-3)


class _FailingEncoder:
    """Wraps an encoder; the n-th encoding call raises (an interruption mid-job).

    ``M3Index`` encodes whole documents from their token ids (``encode_tokenized``), so both
    entry points count.
    """

    def __init__(self, inner: M3Encoder, fail_on: int) -> None:
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


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_interrupted_add_keeps_written_groups_and_resumes(
    tiny_encoder: M3Encoder, backend: str
) -> None:
    texts = [f"document number {i} about topic {i % 3}" for i in range(10)]
    flaky = _FailingEncoder(tiny_encoder, fail_on=3)
    index = M3Index.open(flaky, collection="resume", backend=backend)  # type: ignore[arg-type]
    index.write_group = 4
    with pytest.raises(RuntimeError, match="interrupted"):
        index.add_texts(texts)
    assert index.count() == 8  # the two groups written before the failure are kept
    flaky.calls = 100  # no more failures
    index.add_texts(texts)
    assert index.count() == 10
    assert flaky.calls == 101  # only the missing group was encoded again
    index.add_texts(texts)
    assert flaky.calls == 101  # nothing left to do
    index.close()
