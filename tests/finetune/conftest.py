"""Fixtures of the fine-tuning tests: small training rows and a dense-only tiny checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3kit.finetune import FinetuneConfig, TrainingExample

TOPICS = {
    "rhine": "The Rhine flows from the Swiss Alps through Germany to the North Sea.",
    "oxygen": "Oxygen is a chemical element with symbol O and atomic number 8.",
    "tesla": "Nikola Tesla was an inventor known for alternating current systems.",
    "warsaw": "Warsaw is the capital and largest city of Poland, on the Vistula river.",
    "prime": "A prime number is a natural number greater than 1 with no divisors but 1 and itself.",
    "amazon": "The Amazon rainforest covers most of the Amazon basin of South America.",
}
QUESTIONS = {
    "rhine": ["Where does the Rhine flow?", "Which sea does the Rhine reach?"],
    "oxygen": ["What is the atomic number of oxygen?", "What is the symbol of oxygen?"],
    "tesla": ["What was Tesla known for?", "Who invented alternating current systems?"],
    "warsaw": ["What is the capital of Poland?", "Which river runs through Warsaw?"],
    "prime": ["What is a prime number?", "Which numbers have no divisors but 1 and themselves?"],
    "amazon": ["What does the Amazon rainforest cover?", "Where is the Amazon basin?"],
}


@pytest.fixture(scope="session")
def toy_examples() -> list[TrainingExample]:
    """12 queries over 6 passages; two queries share each positive."""
    out = []
    names = list(TOPICS)
    for i, name in enumerate(names):
        negs = (TOPICS[names[(i + 1) % len(names)]], TOPICS[names[(i + 2) % len(names)]])
        for q in QUESTIONS[name]:
            out.append(TrainingExample(q, (TOPICS[name],), negs))
    return out


@pytest.fixture(scope="session")
def tiny_dense_path(tiny_m3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny M3 checkpoint without its head files: a dense-only (CLS) checkpoint."""
    out = tmp_path_factory.mktemp("tiny_dense") / "model"
    shutil.copytree(tiny_m3_path, out)
    (out / "colbert_linear.pt").unlink()
    (out / "sparse_linear.pt").unlink()
    return out


@pytest.fixture(scope="session")
def tiny_dense_xlmr_path(tiny_m3_xlmr_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny XLM-R-vocabulary checkpoint without its head files (dense-only, CLS)."""
    out = tmp_path_factory.mktemp("tiny_dense_xlmr") / "model"
    shutil.copytree(tiny_m3_xlmr_path, out)
    (out / "colbert_linear.pt").unlink()
    (out / "sparse_linear.pt").unlink()
    return out


def assert_flagembedding_matches(path: Path, texts: list[str]) -> None:
    """FlagEmbedding's ``BGEM3FlagModel`` loads ``path`` and encodes ``texts`` exactly as
    ``M3Encoder`` does (1e-5, every head)."""
    import numpy as np
    from FlagEmbedding import BGEM3FlagModel  # the dev extra installs it: a missing one fails

    from m3kit import M3Encoder

    ours = M3Encoder.from_pretrained(path, dtype="fp32").encode(texts)
    ref = BGEM3FlagModel(str(path), devices="cpu", use_fp16=False).encode(
        texts, return_dense=True, return_sparse=True, return_colbert_vecs=True, batch_size=2
    )
    np.testing.assert_allclose(ours.dense, ref["dense_vecs"], atol=1e-5)
    for mine, theirs in zip(ours.sparse, ref["lexical_weights"], strict=True):
        ids = sorted(int(k) for k in theirs)
        assert mine.indices.tolist() == ids
        np.testing.assert_allclose(mine.values, [theirs[str(k)] for k in ids], atol=1e-5)
    for mine_c, theirs_c in zip(ours.colbert, ref["colbert_vecs"], strict=True):
        np.testing.assert_allclose(mine_c, theirs_c, atol=1e-5)


def tiny_finetune_config(model: Path, out: Path, **overrides: object) -> FinetuneConfig:
    """Two CPU steps of 4 queries at high lr: what the trainer tests train with."""
    base: dict[str, object] = {
        "model": model,
        "output_path": out,
        "max_steps": 2,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "passage_max_length": 48,
        "query_max_length": 24,
        "show_progress": False,
        "device": "cpu",
    }
    base.update(overrides)
    return FinetuneConfig(**base)  # type: ignore[arg-type]
