"""The core entry points refuse an empty or whitespace-only query, as the adapters do.

``M3Index.search`` / ``asearch`` / ``search_mean``, ``m3kit search`` and ``M3Reranker.rerank``
/ ``score`` (``tests/core/test_rerank.py``) encoded a blank query like any text: its sparse
vector is empty (it matches nothing) and its dense one says nothing, so the results were noise.
LangChain's and LlamaIndex's stores already refused it
(``tests/langchain/test_blank_query.py``); the core now refuses it the same way, naming the
problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from m3kit.cli import main
from m3kit.store import M3Index
from m3kit.testing import SAMPLE_TEXTS

BLANKS = ["", "   ", "\n\t ", "\u200b", "\ufeff", " \u200b\u200d "]  # zero-width: as ""


@pytest.fixture(scope="module")
def index(tiny_encoder: Any) -> Any:
    with M3Index.open(tiny_encoder, ":memory:") as opened:
        opened.add_texts(SAMPLE_TEXTS[:4])
        yield opened


@pytest.mark.parametrize("text", BLANKS)
async def test_index_searches_refuse_a_blank_query(index: Any, text: str) -> None:
    expected = re.escape(f"the query is empty ({text!r})")
    with pytest.raises(ValueError, match=expected):
        index.search(text, k=2)
    with pytest.raises(ValueError, match=expected):
        await index.asearch(text, k=2)
    with pytest.raises(ValueError, match=re.escape(f"queries[1] is empty ({text!r})")):
        index.search_mean(["rivers", text], k=2)


def test_a_query_with_text_still_searches(index: Any) -> None:
    assert len(index.search(" rivers ", k=2)) == 2
    assert len(index.search_mean(["rivers", "hills"], k=2)) == 2


def test_cli_search_refuses_a_blank_query(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text(SAMPLE_TEXTS[0], encoding="utf-8")
    where = ["--path", str(tmp_path / "store"), "-q"]
    assert main(["index", str(doc), "--model", str(tiny_m3_path), *where]) == 0
    capsys.readouterr()
    assert main(["search", "  ", *where]) == 1
    assert "m3kit search: error: the query is empty ('  ')" in capsys.readouterr().err
    assert main(["search", "rivers", *where]) == 0


@pytest.mark.parametrize("text", BLANKS)
async def test_llamaindex_retriever_refuses_a_blank_query(tiny_encoder: Any, text: str) -> None:
    """LlamaIndex's ``M3Retriever`` searches through ``search_mean``: it now refuses too."""
    from llama_index.core import Document
    from llama_index.core.schema import QueryBundle

    from llamaindex_m3.retriever import M3Retriever

    docs = [Document(text=t) for t in SAMPLE_TEXTS[:3]]
    with M3Retriever.from_documents(docs, tiny_encoder, similarity_top_k=2) as retriever:
        expected = re.escape(f"the query is empty ({text!r})")
        with pytest.raises(ValueError, match=expected):
            retriever.retrieve(text)
        with pytest.raises(ValueError, match=expected):
            await retriever.aretrieve(text)
        hyde = QueryBundle("rivers", custom_embedding_strs=["rivers", text])
        with pytest.raises(ValueError, match=re.escape(f"queries[1] is empty ({text!r})")):
            retriever.retrieve(hyde)
        assert len(retriever.retrieve("rivers")) == 2
