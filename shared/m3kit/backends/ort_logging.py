"""ONNX Runtime's quantiser logs on the root logger; the app's logging setup is kept.

``onnxruntime.quantization`` logs with module-level ``logging.warning(...)`` calls, which run
``logging.basicConfig()`` when the root logger has no handler: an app that configures logging
after building its first int8 encoder had its own ``basicConfig`` silently ignored (it does
nothing once the root logger has a handler). No ORT option turns those calls off, hence this
small handler.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["root_logger_kept"]

logger = logging.getLogger(__name__)


class _ToModuleLogger(logging.Handler):
    """Root-logger records of ONNX Runtime's quantiser go to this module's logger (DEBUG);
    other records reaching the root logger meanwhile go where they would have gone without a
    handler there (:data:`logging.lastResort`)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "root":
            logger.debug("onnxruntime quantisation: %s", record.getMessage())
        elif logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """ONNX Runtime's quantiser logs with ``logging.warning(...)``, which calls
    ``logging.basicConfig()`` when the root logger has no handler: the app's own
    ``basicConfig`` later was then silently ignored. A handler held on the root logger while
    it runs leaves the root logger as the app had it."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = _ToModuleLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
