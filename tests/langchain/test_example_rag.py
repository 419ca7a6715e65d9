"""examples/langchain_rag.py runs offline (fake chat model) and retrieves the right document."""

from __future__ import annotations

from pathlib import Path

from tests.example_runs import EXAMPLES, load_example, run_example


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
