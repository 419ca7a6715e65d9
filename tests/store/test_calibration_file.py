"""A damaged ``m3kit_search.json`` is refused with a clear error, not read as another ranking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.checkpoint import SEARCH_FILE
from m3kit.store import FusionCalibration, M3Index


def _edited(folder: Path, edit: Any) -> None:
    path = folder / SEARCH_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # a misspelled group: read as "no settings for ColBERT collections", so a
        # three-head collection fell back to the dense + sparse settings, rerank off
        (lambda d: d.update(allheads=d.pop("all_heads")), "all_heads"),
        (lambda d: d.pop("dense_sparse"), "dense_sparse"),
        (lambda d: d.update(sparse_cutt=d.pop("sparse_cut")), "sparse_cutt"),
    ],
    ids=["misspelled all_heads", "missing dense_sparse", "misspelled sparse_cut"],
)
def test_a_calibration_file_missing_a_group_or_with_unknown_keys_is_refused(
    calibrated_m3_path: Path, tmp_path: Path, edit: Any, named: str
) -> None:
    folder = Path(shutil.copytree(calibrated_m3_path, tmp_path / "model"))
    assert FusionCalibration.load(folder) is not None  # as saved: read
    _edited(folder, edit)
    with pytest.raises(ValueError, match=rf"{SEARCH_FILE} is not a search calibration.*{named}"):
        FusionCalibration.load(folder)
    # and an index does not search with what it made of it
    encoder = M3Encoder.from_pretrained(folder, dtype="fp32")
    with pytest.raises(ValueError, match=named):
        M3Index.open(encoder, None, collection="damaged")
