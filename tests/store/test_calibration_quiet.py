"""A calibration asked for no progress shows none: ``calibrate_fusion(show_progress=False)``
(``m3kit calibrate --quiet``) also writes its passages without the store's ``upsert`` bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.store.calibration import calibrate_fusion

#: More passages than one write batch (64), so the store would show its bar by default.
CORPUS = {f"p{i}": f"passage {i} about topic {i % 7} and item {i}" for i in range(70)}
QUERIES = {f"q{i}": f"topic {i % 7} item {i}" for i in range(0, 70, 10)}
QRELS = {f"q{i}": {f"p{i}": 1.0} for i in range(0, 70, 10)}


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.mark.parametrize("show_progress", [False, True])
def test_calibration_progress_follows_show_progress(
    encoder: M3Encoder, capfd: pytest.CaptureFixture[str], show_progress: bool
) -> None:
    capfd.readouterr()  # the fixture's loading bars
    calibrate_fusion(
        encoder,
        CORPUS,
        QUERIES,
        QRELS,
        grid_step=0.5,
        min_gain=0.0,
        show_progress=show_progress,
    )
    err = capfd.readouterr().err
    assert ("upsert" in err) is show_progress, err[-500:]
