"""Fixtures of the ``m3kit`` command's tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLE_DOCS = Path(__file__).resolve().parents[2] / "examples" / "sample_docs"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of ``examples/sample_docs`` (six short files) to index and edit."""
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, folder)
    return folder
