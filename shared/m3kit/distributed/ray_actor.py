"""The Ray pipeline's encoder actor, and what it hands back besides chunks (logs, errors).

:func:`m3kit.distributed.ray_pipeline.index_with_ray` runs :class:`_EncodeActor` in a Ray
Data actor pool; this module imports Ray only through what the actor is given.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from m3kit.distributed.ray_arrow import records_to_arrow
from m3kit.distributed.spec import EncoderSpec
from m3kit.outputs import Head

if TYPE_CHECKING:
    from m3kit.distributed.ray_pipeline import ChunkerSpec
    from m3kit.encoder import Truncation

__all__: list[str] = []


# -- what actors log -------------------------------------------------------------------------
_NOTES = "notes"  # the column of a batch's relayed log records (on its first row)


class _Relay(logging.Handler):
    """Keeps the log records of one batch as JSON ``[logger, level, message, truncated]``."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        from m3kit.chunking import TRUNCATED

        truncated = getattr(record, TRUNCATED, None) is not None
        self.notes.append(json.dumps([record.name, record.levelno, record.getMessage(), truncated]))


@contextlib.contextmanager
def _relayed() -> Iterator[list[str]]:
    """What m3kit logs in this actor meanwhile, kept for the driver instead of printed here.

    Printed here, it reached the driver only as Ray's copy of the actor's stderr: not at all
    with ``log_to_driver=False`` (``m3kit index --ray --quiet``), never through the driver's
    logging (its handlers, levels, ``caplog``), and it could not stop the run.
    """
    log = logging.getLogger("m3kit")
    relay, propagate = _Relay(), log.propagate
    log.addHandler(relay)
    log.propagate = False
    try:
        yield relay.notes
    finally:
        log.removeHandler(relay)
        log.propagate = propagate


def _log_notes(table: Any, truncation: Truncation) -> None:
    """Log the actors' records of ``table`` here, as the single-process path logs them.

    Raises:
        TruncationError: A document was cut at the model's window and ``truncation`` is
            ``"error"`` (before the batch is written).
    """
    from m3kit.encoder import Truncation
    from m3kit.errors import TruncationError

    if _NOTES not in table.column_names:
        return
    for notes in table.column(_NOTES).to_pylist():
        for note in notes or ():
            name, level, message, truncated = json.loads(note)
            if truncated and truncation is Truncation.ERROR:
                raise TruncationError(message)
            logging.getLogger(name).log(level, "%s", message)


# -- the actor -------------------------------------------------------------------------------
class _EncodeActor:
    """Loads the encoder once; encodes batches of documents into Arrow chunk records."""

    def __init__(
        self, spec: EncoderSpec, chunker: ChunkerSpec, heads: list[str], gpus: float = 0.0
    ) -> None:
        # The GPU Ray reserved for this actor, if any; not whichever it sees: recent Ray
        # (ray-project/ray#54868; 2.60 tested) leaves CUDA_VISIBLE_DEVICES alone for an
        # actor given no GPU, so a CPU actor on a GPU node sees every GPU of the node, and
        # would share one unreserved, in the precision "auto" picks there.
        self.encoder = spec.load("cuda" if gpus > 0 else "cpu")
        self.chunker = chunker.build(self.encoder)
        self.heads = Head.parse(heads)

    def __call__(self, batch: dict[str, Any]) -> Any:
        from m3kit.store.index import _Doc, build_records

        docs = [
            _Doc(
                str(doc_id),
                str(text),
                json.loads(str(meta)),
                str(doc_hash),
                json.loads(str(chunking)),
            )
            for doc_id, text, meta, doc_hash, chunking in zip(
                batch["doc_id"],
                batch["text"],
                batch["metadata"],
                batch["doc_hash"],
                batch["chunking"],
                strict=True,
            )
        ]
        with _relayed() as notes:
            records, empty = build_records(self.encoder, self.heads, docs, self.chunker, False)
        if empty:
            raise ValueError(f"documents {empty[:5]} gave no chunk (empty text)")
        import pyarrow as pa

        table = records_to_arrow(records, self.heads)
        column = [notes, *[[]] * (table.num_rows - 1)] if table.num_rows else []
        return table.append_column(_NOTES, pa.array(column, pa.list_(pa.string())))
