"""The examples in llamaindex_m3's docstrings run (pytest's testpaths do not cover the package)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["llamaindex_m3.embeddings", "llamaindex_m3.filters", "llamaindex_m3.retriever"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(
        importlib.import_module(module),
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
    )
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0
