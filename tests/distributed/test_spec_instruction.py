"""EncoderSpec: a worker encodes queries with the parent's query instruction, also none.

A checkpoint can declare a query instruction (``m3kit.json``); a parent loaded from it whose
``query_instruction`` was then set to ``None`` (no prefix) handed the workers ``None``, which
``from_pretrained`` reads as "the checkpoint's own": they prefixed queries the parent did not,
and the fingerprint check refused them blaming a checkpoint changed on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec


def _declaring(tiny_encoder: M3Encoder, folder: Path) -> Path:
    tiny_encoder.model.save(folder, tiny_encoder.tokenizer, query_instruction="q: ")
    return folder


def test_a_worker_takes_the_parents_instruction_removed(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    path = _declaring(tiny_encoder, tmp_path / "declares")
    parent = M3Encoder.from_pretrained(path, dtype="fp32")
    assert parent.query_instruction == "q: "
    parent.query_instruction = None
    worker = EncoderSpec.of(parent).load("cpu")  # the fingerprint check passes
    assert worker.query_instruction is None
    ours = parent.encode_queries(["which river?"]).dense
    np.testing.assert_allclose(worker.encode_queries(["which river?"]).dense, ours)


def test_a_worker_keeps_the_declared_instruction(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    path = _declaring(tiny_encoder, tmp_path / "declares")
    parent = M3Encoder.from_pretrained(path, dtype="fp32")
    worker = EncoderSpec.of(parent).load("cpu")
    assert worker.query_instruction == "q: "
