"""examples/llamaindex_vector_store.py: the same app on QdrantVectorStore and M3VectorStore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.example_runs import EXAMPLES, load_example, output_sections

EXAMPLE = EXAMPLES / "llamaindex_vector_store.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("llamaindex_vector_store")


def test_same_app_same_answers_with_minilm(
    example: ModuleType, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question = "Which emperor joined the early walls together?"
    assert example.main(["--model", str(minilm_path), "--question", question]) == 0
    out = capsys.readouterr().out
    sections = output_sections(out)
    assert list(sections) == ["QdrantVectorStore, default", "M3VectorStore, default"]
    for lines in sections.values():
        assert len(lines) == 2 and "great_wall.md" in lines[0], out
    # dense search on either store: the same chunks with the same cosine scores
    assert sections["QdrantVectorStore, default"] == sections["M3VectorStore, default"]
    assert out.count("\nAnswer: ") == 2


def test_hybrid_with_an_m3_checkpoint(
    example: ModuleType, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--model", str(tiny_m3_path), "--top-k", "3"]) == 0
    sections = output_sections(capsys.readouterr().out)
    assert list(sections) == [
        "QdrantVectorStore, default",
        "M3VectorStore, default",
        "M3VectorStore, hybrid",
    ]
    assert all(len(lines) == 3 for lines in sections.values())


def test_runs_as_a_script() -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "changing only its vector store line" in " ".join(run.stdout.split())
