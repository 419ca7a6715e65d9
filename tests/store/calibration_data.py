"""The fusion calibration tests' data (test_calibration.py, test_calibration_encoder.py):
eight passages, five questions, each with one relevant passage; and the coarse calibration
those tests and tests/finetune/test_identical_ids.py compare scores with."""

from __future__ import annotations

from collections.abc import Mapping

from m3kit import M3Encoder
from m3kit.store import FusionCalibration
from m3kit.store.calibration import calibrate_fusion

#: the coarse grid's step: weights 0, 0.5 and 1
COARSE_STEP = 0.5

TEXTS = [
    "The Amazon rainforest covers most of the Amazon basin of South America.",
    "Paris is the capital and most populous city of France.",
    "The mitochondrion is the powerhouse of the cell.",
    "Photosynthesis turns light energy into chemical energy in plants.",
    "The Great Wall of China was built over many centuries.",
    "Python is a programming language that emphasises readability.",
    "The Pacific is the largest and deepest of the oceans.",
    "Mount Everest is Earth's highest mountain above sea level.",
]
QUERIES = {
    "q0": "Which forest covers the Amazon basin?",
    "q1": "What is the capital of France?",
    "q2": "What is the powerhouse of the cell?",
    "q3": "How do plants turn light into energy?",
    "q4": "Which ocean is the largest?",
}
QRELS = {
    "q0": {"d0": 1.0},
    "q1": {"d1": 1.0},
    "q2": {"d2": 1.0},
    "q3": {"d3": 1.0},
    "q4": {"d6": 1.0},
}
CORPUS = {f"d{i}": t for i, t in enumerate(TEXTS)}


def coarse_calibration(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    candidates: int | None = None,
    ignore_identical_ids: bool = False,
) -> FusionCalibration:
    """``calibrate_fusion`` on the coarse grid, keeping whichever setting scores best (no
    minimum gain, no significance test): quick, and every setting's score is recorded."""
    return calibrate_fusion(
        encoder,
        corpus,
        queries,
        qrels,
        grid_step=COARSE_STEP,
        min_gain=0.0,
        alpha=1.0,
        candidates=candidates,
        ignore_identical_ids=ignore_identical_ids,
    )
