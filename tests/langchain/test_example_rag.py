"""examples/langchain_rag.py runs offline (fake chat model) and retrieves the right document."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.example_runs import (
    EXAMPLES,
    LONG_NOTES_QUESTION,
    load_example,
    run_example,
    write_long_notes,
)


def test_rag_example_runs_offline(minilm_path: Path) -> None:
    question = "Which emperor joined the early walls together?"
    run = run_example("langchain_rag", minilm_path, question)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"Question: {question}"
    context = lines[lines.index("Retrieved context:") + 1 :]
    assert "great_wall.md" in context[0], run.stdout
    assert sum(1 for line in context if line.startswith("  ")) == 2  # --k default
    assert any(line.startswith("Answer: (FakeListChatModel") for line in lines)


def test_rag_chain_in_process(minilm_encoder: object) -> None:
    """The chain itself: retriever output feeds the prompt the chat model receives."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_m3 import M3Retriever

    module = load_example("langchain_rag")
    docs = [
        module.Document(p.read_text(encoding="utf-8"), metadata={"source": str(p)})
        for p in sorted((EXAMPLES / "sample_docs").iterdir())
    ]
    retriever = M3Retriever.from_documents(docs, minilm_encoder, k=1)  # type: ignore[arg-type]
    llm = FakeListChatModel(responses=["Ganymede."])
    seen: list[str] = []
    chain = module.build_chain(
        retriever, llm.with_listeners(on_start=lambda r: seen.append(str(r.inputs)))
    )
    result = chain.invoke("What is the largest moon in the Solar System?")
    retriever.index.close()
    assert result["answer"] == "Ganymede."
    assert [d.metadata["source"].rsplit("/", 1)[-1] for d in result["docs"]] == ["jupiter.txt"]
    assert "(jupiter.txt)" in seen[0] and "largest moon" in seen[0]


def test_a_long_file_is_chunked_so_its_end_is_found(
    minilm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--docs my_notes/`` with a file longer than the model's window: its last sentence is
    retrieved (without chunking the model read only the file's first 256 tokens)."""
    write_long_notes(tmp_path)
    module = load_example("langchain_rag")
    argv = ["--model", str(minilm_path), "--docs", str(tmp_path), "--k", "1"]
    assert module.main([*argv, "--question", LONG_NOTES_QUESTION]) == 0
    context = capsys.readouterr().out.split("Retrieved context:")[1].split("Answer:")[0]
    # the hit is the file's last chunk, not the file from its start (what one vector held)
    assert "long_notes.txt: Paragraph" in context and "Paragraph 0 " not in context, context
