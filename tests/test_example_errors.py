"""The RAG and query-engine examples say in one line what is missing (a model folder, a docs
path), as ``examples/finetune_squad.py`` does; they printed a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.example_runs import load_example

NAMES = ["langchain_rag", "llamaindex_query_engine", "llamaindex_vector_store"]


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_model_or_docs_path_is_one_line(
    name: str, tmp_path: Path, tiny_m3_path: Path
) -> None:
    main = load_example(name).main
    with pytest.raises(SystemExit, match=r"^error: .*does not exist .*--model: a local"):
        main(["--model", str(tmp_path / "no-model")])
    with pytest.raises(SystemExit, match=r"^error: .*no-docs"):
        main(["--model", str(tiny_m3_path), "--docs", str(tmp_path / "no-docs")])
