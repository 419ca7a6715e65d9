"""The examples in llamaindex_m3's docstrings run (pytest's testpaths do not cover the package).

Every module of the package that holds a ``>>>`` example is run: the list was written by hand
and left out ``postprocessor``, ``vector_store`` and ``vector_store_query``, whose examples
no test ran.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "llamaindex_m3"
MODULES = sorted(
    f"llamaindex_m3.{path.stem}"
    for path in PACKAGE.glob("*.py")
    if ">>> " in path.read_text(encoding="utf-8")
)


def test_every_module_with_examples_is_found() -> None:
    assert {
        "llamaindex_m3.embeddings",
        "llamaindex_m3.filters",
        "llamaindex_m3.postprocessor",
        "llamaindex_m3.retriever",
        "llamaindex_m3.vector_store",
        "llamaindex_m3.vector_store_query",
    } <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(
        importlib.import_module(module),
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
    )
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0
