"""A reindex killed with SIGKILL and run again equals an uninterrupted reindex (both backends)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index
from tests.reliability.killing import (
    assert_same_points,
    cli_command,
    dump_store,
    perturbed_checkpoint,
    run_and_kill,
)

DOCS = 200


def _corpus(squad_dir: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in (squad_dir / "corpus.jsonl").open(encoding="utf-8")]
    assert len(rows) >= DOCS
    with out.open("w", encoding="utf-8") as f:
        for row in rows[:DOCS]:
            f.write(json.dumps({"_id": row["_id"], "text": row["text"][:300]}) + "\n")
    return out


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
        cli_command("index", corpus, "--model", tiny_m3_path, store=base, backend=backend),
        check=True,
        **quiet,  # type: ignore[arg-type]
    )
    clean, crashed = (
        shutil.copytree(base, tmp_path / "clean"),
        shutil.copytree(base, tmp_path / "crashed"),
    )
    before, _ = dump_store(base, backend)

    enc_a = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    enc_b = M3Encoder.from_pretrained(model_b, dtype="fp32")
    with M3Index.open(enc_b, clean, collection="c", backend=backend, reindex=True):
        pass  # the uninterrupted reindex, in process (the CLI does the same call)
    expected, record = dump_store(clean, backend)
    assert expected.keys() == before.keys()  # same points, re-encoded in place

    reindex = ("index", "--reindex", "--model", model_b)
    cmd = cli_command(*reindex, store=crashed, backend=backend)
    rc = run_and_kill(cmd, env, bar="reindex", done=64)
    assert rc == -signal.SIGKILL, "the reindex finished before it could be interrupted"
    partial, pending = dump_store(crashed, backend)
    writers = {payload["encoder_id"] for payload, _ in partial.values()}
    assert len(writers) == 2 and "reindex_to" in pending  # half done, and the record says so
    with pytest.raises(FingerprintMismatchError, match="interrupted"):
        M3Index.open(enc_a, crashed, collection="c", backend=backend)

    with M3Index.open(enc_b, crashed, collection="c", backend=backend, reindex=True):
        pass  # the rerun
    got, got_record = dump_store(crashed, backend)
    assert got_record == record
    assert_same_points(got, expected, atol=1e-6)
