"""The Ray pipeline's encoder actor, and what it hands back besides chunks (logs, errors).

:func:`m3kit.distributed.ray_pipeline.index_with_ray` runs :class:`_EncodeActor` in a Ray
Data actor pool; this module imports Ray only through what the actor is given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import traceback
from collections.abc import Iterator, Sequence
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


# -- what fails in an actor ------------------------------------------------------------------
_ERROR = "error"  # the column of a batch's failure (on its first row): see _failure


class _RemoteTraceback(Exception):
    """The traceback of an error raised in an actor (the re-raised error's ``__cause__``)."""


def _failure(exc: BaseException, documents: Sequence[str] = ()) -> bytes:
    """``exc`` as the driver re-raises it: pickled, with its type's name, text and traceback.

    Ray hands the driver only the text of an error raised in an actor, wrapped in its own
    exception types (``ActorDiedError`` from ``__init__``, ``RayTaskError`` from a batch), so
    a caller's ``except ValueError`` missed a worker's refusal. An exception that does not
    survive a pickle round trip is carried by its type's name and text. ``documents``: the
    ids of the batch that failed (none when the actor could not start), named by the driver.
    """
    blob: bytes | None
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = None
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return pickle.dumps((blob, kind, str(exc), where, list(documents)))


def _raise_failure(table: Any) -> None:
    """Raise the first error an actor put in ``table`` (see :func:`_failure`), if any.

    Raises:
        Exception: The actor's exception, of its type, its traceback as ``__cause__``; a
            ``RuntimeError`` naming its type and text when it could not be carried. A batch's
            error names the batch's documents (:func:`_naming_batch`).
    """
    if _ERROR not in table.column_names:
        return
    for blob in table.column(_ERROR).to_pylist():
        if blob is None:
            continue
        carried, kind, message, where, documents = pickle.loads(blob)
        batch = _batch_named(documents)
        during = f"encoding {batch}, " if batch else ""
        remote = _RemoteTraceback(f"{during}in a Ray encoder actor:\n{where}")
        if carried is None:
            raise RuntimeError(
                f"{during}a Ray encoder actor failed with {kind}: {message}"
            ) from remote
        raise _naming_batch(pickle.loads(carried), batch) from remote


def _batch_named(documents: Sequence[str], shown: int = 20) -> str:
    """``documents [...]`` of a failed batch (at most ``shown`` ids); ``""`` for none.

    >>> _batch_named(["a", "b"])
    "documents ['a', 'b'] (their batch was not written)"
    >>> _batch_named(["a", "b", "c"], shown=2)
    "documents ['a', 'b'] and 1 more (their batch was not written)"
    """
    if not documents:
        return ""
    more = f" and {len(documents) - shown} more" if len(documents) > shown else ""
    return f"documents {list(documents[:shown])}{more} (their batch was not written)"


def _naming_batch(error: BaseException, batch: str) -> BaseException:
    """``error`` (its type kept) with ``batch`` (:func:`_batch_named`) first in its message.

    An error of one text argument (most) gets it in that text, so it is in ``str(error)``
    (what ``m3kit index`` prints); any other gets it as a note (Python 3.11+: shown with
    the traceback).
    """
    if not batch:
        return error
    text = f"encoding {batch}:"
    if len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (f"{text} {error.args[0]}",)
    if text not in str(error) and hasattr(error, "add_note"):
        error.add_note(f"while {text.rstrip(':')}")
    return error


def _failure_table(heads: frozenset[Head], failure: bytes, notes: list[str]) -> Any:
    """One row of nulls but its notes and ``failure``, in the schema of a batch's records."""
    import pyarrow as pa

    schema = records_to_arrow([], heads).schema
    table = pa.table({f.name: pa.nulls(1, f.type) for f in schema}, schema=schema)
    table = table.append_column(_NOTES, pa.array([notes], pa.list_(pa.string())))
    return table.append_column(_ERROR, pa.array([failure], pa.binary()))


# -- the actor -------------------------------------------------------------------------------
class _EncodeActor:
    """Loads the encoder once; encodes batches of documents into Arrow chunk records.

    What it raises (the model it loaded is not the driver's, a precision its device cannot
    run, a batch that fails) comes back as a row of the batch's table (see
    :func:`_raise_failure`), not as Ray's wrapper of its text.
    """

    def __init__(
        self, spec: EncoderSpec, chunker: ChunkerSpec, heads: list[str], gpus: float = 0.0
    ) -> None:
        self.heads = Head.parse(heads)
        self.failure: bytes | None = None
        try:
            # The GPU Ray reserved for this actor, if any; not whichever it sees: recent Ray
            # (ray-project/ray#54868; 2.60 tested) leaves CUDA_VISIBLE_DEVICES alone for an
            # actor given no GPU, so a CPU actor on a GPU node sees every GPU of the node,
            # and would share one unreserved, in the precision "auto" picks there.
            self.encoder = spec.load("cuda" if gpus > 0 else "cpu")
            self.chunker = chunker.build(self.encoder)
        except Exception as exc:  # every batch hands it to the driver: nothing is encoded
            self.failure = _failure(exc)

    def __call__(self, batch: dict[str, Any]) -> Any:
        if self.failure is not None:
            return _failure_table(self.heads, self.failure, [])
        with _relayed() as notes:
            try:
                table = self._encode(batch)
            except Exception as exc:
                documents = [str(d) for d in batch["doc_id"]]
                return _failure_table(self.heads, _failure(exc, documents), notes)
        import pyarrow as pa

        column = [notes, *[[]] * (table.num_rows - 1)] if table.num_rows else []
        table = table.append_column(_NOTES, pa.array(column, pa.list_(pa.string())))
        return table.append_column(_ERROR, pa.nulls(table.num_rows, pa.binary()))

    def _encode(self, batch: dict[str, Any]) -> Any:
        from m3kit.store.index import _Doc, build_records

        docs = [
            _Doc(
                str(doc_id),
                str(text),
                json.loads(str(meta)),
                str(doc_hash),
                json.loads(str(chunking)),
                extra=json.loads(str(extra)),
            )
            for doc_id, text, meta, doc_hash, chunking, extra in zip(
                batch["doc_id"],
                batch["text"],
                batch["metadata"],
                batch["doc_hash"],
                batch["chunking"],
                batch["extra"],
                strict=True,
            )
        ]
        records, empty = build_records(self.encoder, self.heads, docs, self.chunker, False)
        if empty:
            raise ValueError(f"documents {empty[:5]} gave no chunk (empty text)")
        return records_to_arrow(records, self.heads)
