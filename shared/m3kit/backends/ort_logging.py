"""ONNX Runtime's quantiser logs through the ``logging`` module's functions; the app's logging
setup is kept.

``onnxruntime.quantization`` logs with module-level ``logging.warning(...)`` / ``info`` /
``debug`` calls, which run ``logging.basicConfig()`` when the root logger has no handler: an
app that configured logging after building its first int8 encoder had its own ``basicConfig``
silently ignored (it does nothing once the root logger has a handler). No ORT option turns
those calls off. While :func:`ort_logging_kept` holds, the ``logging`` name inside ORT's
quantisation modules stands for an object whose logging functions write to this module's
logger at DEBUG; the root logger, and every other module's logging (the app's threads
included), are left alone. Quantisations are serialised (two would restore each other's
stand-in): they are seconds of work each, done once per model and cached.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["ort_logging_kept", "shape_inference_notice_dropped"]

logger = logging.getLogger(__name__)

_PACKAGE = "onnxruntime.quantization"
_LOCK = threading.Lock()  # one quantisation at a time: see the module docstring


class _ToModuleLogger:
    """Stands for the ``logging`` module inside ORT's quantisation modules: its logging
    functions write to this module's logger at DEBUG; any other name is ``logging``'s."""

    def __getattr__(self, name: str) -> Any:
        return getattr(logging, name)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):  # as logging shows a record it cannot format
                text = f"{msg} {args}"
            logger.debug("onnxruntime %s: %s", logging.getLevelName(level).lower(), text)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    warn = warning

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args)

    exception = error

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args)


@contextlib.contextmanager
def ort_logging_kept() -> Iterator[None]:
    """Run ORT's quantiser with its module-level logging calls sent to this module's logger
    (see the module docstring)."""
    stand_in = _ToModuleLogger()
    with _LOCK:
        patched = [
            module
            for name, module in list(sys.modules.items())
            if (name == _PACKAGE or name.startswith(_PACKAGE + "."))
            and getattr(module, "logging", None) is logging
        ]
        for module in patched:
            module.logging = stand_in  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in patched:
                module.logging = logging  # type: ignore[attr-defined]


#: What ORT's transformer optimiser warns on every fusion that asks for shapes while shape
#: inference is off, which :func:`m3kit.backends.onnx_backend._optimize` sets on purpose.
SHAPE_INFERENCE_NOTICE = "symbolic shape inference disabled or failed."
#: The loggers it comes from: ORT imports its fusion modules under both names.
_FUSION_LOGGERS = ("fusion_skiplayernorm", "onnxruntime.transformers.fusion_skiplayernorm")


def _not_the_notice(record: logging.LogRecord) -> bool:
    return record.getMessage() != SHAPE_INFERENCE_NOTICE


@contextlib.contextmanager
def shape_inference_notice_dropped() -> Iterator[None]:
    """Drop ORT's "symbolic shape inference disabled or failed." warnings while it holds.

    m3kit turns the optimiser's shape inference off itself (it copied the whole model per
    fusion), so the warning, printed on every export even with logging unconfigured (Python's
    last-resort handler), reports a choice, not a failure. Every other record of those loggers
    passes; the filter is removed afterwards.
    """
    loggers = [logging.getLogger(name) for name in _FUSION_LOGGERS]
    for each in loggers:
        each.addFilter(_not_the_notice)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(_not_the_notice)
