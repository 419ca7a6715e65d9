"""examples/llamaindex_query_engine.py runs offline (MockLLM) and retrieves the right file."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.example_runs import (
    LONG_NOTES_QUESTION,
    load_example,
    output_sections,
    run_example,
    write_long_notes,
)


def test_example_runs_offline_with_minilm(minilm_path: Path) -> None:
    question = "Which emperor joined the early walls together?"
    run = run_example("llamaindex_query_engine", minilm_path, question)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"Question: {question}"
    sections = output_sections(run.stdout)
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
    return load_example("llamaindex_query_engine")


def test_example_uses_hybrid_mode_with_an_m3_checkpoint(
    example: ModuleType, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--model", str(tiny_m3_path), "--top-k", "3"]) == 0
    sections = output_sections(capsys.readouterr().out)
    assert list(sections) == [
        "VectorStoreIndex + QdrantVectorStore, hybrid",
        "M3Retriever + RetrieverQueryEngine, rrf",
    ]
    assert all(len(lines) == 3 for lines in sections.values())


def test_a_long_file_is_chunked_by_both_engines(
    minilm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file longer than the model's window: both engines retrieve its last chunk (the
    M3Retriever read only the file's first 256 tokens before it chunked, as VectorStoreIndex's
    SentenceSplitter always did)."""
    write_long_notes(tmp_path)
    module = load_example("llamaindex_query_engine")
    question = LONG_NOTES_QUESTION
    argv = ["--model", str(minilm_path), "--docs", str(tmp_path), "--top-k", "1"]
    assert module.main([*argv, "--question", question]) == 0
    sections = output_sections(capsys.readouterr().out)
    assert len(sections) == 2
    for title, lines in sections.items():
        assert "long_notes.txt: Paragraph" in lines[0], title
        assert "Paragraph 0 " not in lines[0], (title, lines[0])
