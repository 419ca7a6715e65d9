"""Fixtures of the core tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.testing import build_tiny_m3_checkpoint


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny M3 checkpoints of the same sizes, other random weights."""
    return (
        build_tiny_m3_checkpoint(tmp_path / "a", seed=0),
        build_tiny_m3_checkpoint(tmp_path / "b", seed=1),
    )
