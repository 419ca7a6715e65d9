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


def test_the_apps_own_logging_during_an_export_is_untouched(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first guard held a handler on the root logger while ORT quantised: records another
    # thread of the app logged meanwhile were swallowed, and its basicConfig did nothing
    import threading

    import onnxruntime.quantization as quantization

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    monkeypatch.setattr(logging.getLogger(), "handlers", [Keep()])
    real = quantization.quantize_dynamic

    def quantize_while_the_app_logs(*args: object, **kwargs: object) -> object:
        app = threading.Thread(target=lambda: logging.warning("APP while exporting"))
        app.start()
        app.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_dynamic", quantize_while_the_app_logs)
    M3Encoder.from_pretrained(tiny_m3_path, dtype="int8", backend="onnx", onnx_cache_dir=tmp_path)
    shown = [r.getMessage() for r in records]
    assert "APP while exporting" in shown
    assert not any("pre-processing" in m for m in shown)  # ORT's own: m3kit's logger, DEBUG
