"""``m3kit mine-negatives``, ``eval``, ``calibrate`` and the calibration of ``finetune
--validation`` encode inside :func:`m3kit.heap.keep_freed_memory` (on by default: the CLI owns
its process), and ``--no-keep-freed-memory`` leaves glibc as it is (``m3kit index``:
tests/cli/test_runtime_options.py; training: tests/finetune/test_freed_memory.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit import M3Encoder
from tests.finetune.beir_folders import numbered, write_beir
from tests.finetune.cli_runs import run_cli
from tests.heap_spy import KeepFreedMemorySpy

TEXTS = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw is a city."]


def _argv(command: str, model: Path, tmp_path: Path) -> list[str]:
    if command == "finetune":  # --validation calibrates the trained checkpoint afterwards
        train = tmp_path / "t.jsonl"
        row = {"query": "Where does the Rhine flow?", "pos": [TEXTS[0]], "neg": [TEXTS[1]]}
        train.write_text(json.dumps(row) + "\n")
        beir = _argv("calibrate", model, tmp_path)[4]
        out = ["--output", str(tmp_path / "ft"), "--max-steps", "1", "--batch-size", "1"]
        return [command, "--model", str(model), "--train", str(train), *out, "--validation", beir]
    if command == "mine-negatives":
        train = tmp_path / "t.jsonl"
        row = {"query": "Where does the Rhine flow?", "pos": [TEXTS[0]]}
        train.write_text(json.dumps(row) + "\n")
        corpus = tmp_path / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
        out = ["--train", str(train), "--corpus", str(corpus), "--range", "0-3"]
        return [command, "--model", str(model), *out, "--output", str(tmp_path / "m.jsonl")]
    queries = numbered("q", [t[:12] for t in TEXTS])
    data = write_beir(tmp_path / "beir", numbered("d", TEXTS), queries, "q0\td0\t1\nq1\td1\t1\n")
    extra = ["--grid-step", "0.5"] if command == "calibrate" else []
    return [command, "--model", str(model), "--data", str(data), *extra, "--quiet"]


@pytest.mark.parametrize("command", ["mine-negatives", "eval", "calibrate", "finetune"])
@pytest.mark.parametrize("flag", [None, "--no-keep-freed-memory"])
def test_encoding_commands_keep_freed_memory_unless_told_not_to(
    tiny_m3_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    flag: str | None,
) -> None:
    import shutil

    import m3kit.heap

    model = tmp_path / "model"  # calibrate writes into the checkpoint's folder
    shutil.copytree(tiny_m3_path, model)
    keep = KeepFreedMemorySpy(m3kit.heap.keep_freed_memory)
    encoded_inside = keep.calls_inside(monkeypatch, M3Encoder, "encode")
    monkeypatch.setattr(m3kit.heap, "keep_freed_memory", keep)
    assert run_cli([*_argv(command, model, tmp_path), *([flag] if flag else [])]) == 0
    assert keep.asked == [flag is None]
    assert encoded_inside and all(encoded_inside)
