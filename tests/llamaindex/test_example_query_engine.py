"""examples/llamaindex_query_engine.py runs offline (MockLLM) and retrieves the right file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "llamaindex_query_engine.py"


def _sections(stdout: str) -> dict[str, list[str]]:
    """``{section title: [source lines]}`` from the example's output."""
    out: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("[") and line.endswith("] sources:"):
            current = line[1 : -len("] sources:")]
            out[current] = []
        elif current is not None and line.startswith("  "):
            out[current].append(line)
    return out


def test_example_runs_offline_with_minilm(minilm_path: Path) -> None:
    question = "Which emperor joined the early walls together?"
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(minilm_path), "--question", question],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"Question: {question}"
    sections = _sections(run.stdout)
    assert list(sections) == [
        "VectorStoreIndex + QdrantVectorStore, default",  # MiniLM is dense-only
        "M3Retriever + RetrieverQueryEngine, rrf",
    ]
    for title, lines in sections.items():
        assert len(lines) == 2, title  # --top-k default
        assert "great_wall.md" in lines[0], run.stdout
    assert run.stdout.count("\nAnswer: ") == 2


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llamaindex_query_engine", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_uses_hybrid_mode_with_an_m3_checkpoint(
    example: ModuleType, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--model", str(tiny_m3_path), "--top-k", "3"]) == 0
    sections = _sections(capsys.readouterr().out)
    assert list(sections) == [
        "VectorStoreIndex + QdrantVectorStore, hybrid",
        "M3Retriever + RetrieverQueryEngine, rrf",
    ]
    assert all(len(lines) == 3 for lines in sections.values())
