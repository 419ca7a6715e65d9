"""Interrupted indexing: a re-run gives exactly the collection an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index
from tests.reliability.killing import (
    FailingEncoder,
    assert_same_points,
    cli_command,
    dump_store,
    run_and_kill,
)


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
    return cli_command("index", corpus, "--model", model, store=store, backend="client")


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
    expected, _ = dump_store(clean, "client")
    assert len({payload["doc_id"] for payload, _ in expected.values()}) == 320  # chunked

    rc = run_and_kill(_index_cmd(corpus, crashed, tiny_m3_path), env, bar="index", done=64)
    assert rc == -signal.SIGKILL, "the run finished before it could be interrupted"
    partial, _ = dump_store(crashed, "client")
    assert 0 < len(partial) < len(expected), f"expected a partial collection, got {len(partial)}"

    subprocess.run(
        _index_cmd(corpus, crashed, tiny_m3_path),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got, _ = dump_store(crashed, "client")
    assert_same_points(got, expected, atol=1e-6)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_interrupted_add_keeps_written_groups_and_resumes(
    tiny_encoder: M3Encoder, backend: str
) -> None:
    texts = [f"document number {i} about topic {i % 3}" for i in range(10)]
    flaky = FailingEncoder(tiny_encoder, fail_on=3)
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
