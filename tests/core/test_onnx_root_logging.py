"""Building an int8 ONNX export leaves the app's root logger as it was.

ONNX Runtime's quantiser logs with ``logging.warning(...)``, which configured the root logger
(``logging.basicConfig()``) of an app that had not yet: the app's own ``basicConfig`` later
did nothing, its INFO lines were lost and its format ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from m3kit import M3Encoder


def test_an_int8_export_leaves_an_unconfigured_root_logger_unconfigured(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in an app that has not configured logging
    encoder = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="int8", backend="onnx", onnx_cache_dir=tmp_path
    )
    assert root.handlers == []
    assert encoder.encode(["kept"]).dense.shape[0] == 1
