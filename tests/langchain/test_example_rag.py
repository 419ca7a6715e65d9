"""examples/langchain_rag.py runs offline (fake chat model) and retrieves the right document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "langchain_rag.py"


def test_rag_example_runs_offline(minilm_path: Path) -> None:
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
    lines = run.stdout.splitlines()
    assert lines[0] == f"Question: {question}"
    context = lines[lines.index("Retrieved context:") + 1 :]
    assert "great_wall.md" in context[0], run.stdout
    assert sum(1 for line in context if line.startswith("  ")) == 2  # --k default
    assert any(line.startswith("Answer: (FakeListChatModel") for line in lines)


def test_rag_chain_in_process(minilm_encoder: object) -> None:
    """The chain itself: retriever output feeds the prompt the chat model receives."""
    import importlib.util

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_m3 import M3Retriever

    spec = importlib.util.spec_from_file_location("langchain_rag", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = [
        module.Document(p.read_text(encoding="utf-8"), metadata={"source": str(p)})
        for p in sorted((REPO / "examples" / "sample_docs").iterdir())
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
