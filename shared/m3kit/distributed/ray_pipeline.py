"""Index documents with Ray Data (extra ``m3kit[ray]``): an actor pool encodes, M3Index writes.

The driver owns the collection through an :class:`~m3kit.store.M3Index`: it gives documents
their ids and hashes, skips those already stored at the same version (so a re-run of an
interrupted job resumes), and writes the encoded chunks in batches with the index's own
ids, payloads and collection fingerprint. Ray actors (one model load each, ``num_cpus`` /
``num_gpus`` per actor) chunk and encode with :func:`m3kit.store.index.build_records`, the
function :meth:`M3Index.add_texts` uses, and hand the chunks back as Arrow columns: sparse
ids and weights and each chunk's ColBERT matrix as list columns, float32, exact. What m3kit
logs in an actor (a whole document cut at the model's window) comes back with its batch and
is logged by the driver, under the same logger, as :meth:`M3Index.add_texts` logs it.

Example::

    import ray
    from m3kit import M3Encoder
    from m3kit.distributed.ray_pipeline import ChunkerSpec, index_with_ray
    from m3kit.sources import read_documents
    from m3kit.store import M3Index

    ray.init()                                   # or ray.init(address="ray://head:10001")
    enc = M3Encoder.from_pretrained("/models/bge-m3")
    with M3Index.open(enc, url="http://qdrant:6333", collection="docs") as index:
        index_with_ray(index, read_documents(["corpus/"]), chunker=ChunkerSpec("naive"),
                       num_actors=4, num_gpus=1)
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from m3kit.distributed.ray_actor import _EncodeActor, _log_notes, _raise_failure
from m3kit.distributed.ray_arrow import records_from_arrow, records_to_arrow
from m3kit.distributed.ray_queue import DocumentQueue
from m3kit.distributed.spec import EncoderSpec
from m3kit.errors import MissingExtraError
from m3kit.late_config import parse_heads
from m3kit.late_windows import WindowPlacement
from m3kit.store.metadata_updates import update_in_place
from m3kit.store.record_check import check_record

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder, Truncation
    from m3kit.outputs import Head
    from m3kit.sources import SourceDocument
    from m3kit.store.index import M3Index

__all__ = [
    "ChunkerSpec",
    "ChunkingKind",
    "index_with_ray",
    "records_from_arrow",
    "records_to_arrow",
    "require_ray",
]

logger = logging.getLogger(__name__)


def require_ray() -> Any:
    """The ``ray`` module with Ray Data.

    Raises:
        MissingExtraError: Ray Data is not installed (extra ``m3kit[ray]``).
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError(
            'the Ray pipeline needs Ray Data: pip install "m3kit[ray]"'
        ) from None
    return ray


class ChunkingKind(str, enum.Enum):
    """How the actors cut documents (as ``m3kit index`` does)."""

    WHOLE = "whole"  # one chunk per document, cut at the model's window
    NAIVE = "naive"  # sentence-packed chunks, each encoded alone (m3kit index's default)
    LATE = "late"  # the same chunks pooled from a pass over the whole document


@dataclass(frozen=True)
class ChunkerSpec:
    """A chunker each actor rebuilds on its own encoder (picklable, small).

    Attributes:
        kind: :class:`ChunkingKind`.
        chunk_size: Token budget per chunk (default: ``m3kit index``'s).
        window: Late chunking window in tokens (default: the model's).
        late_heads: Heads pooled from the document pass with late chunking, as
            :class:`~m3kit.late_chunking.LateChunker` takes them (:class:`~m3kit.outputs.Head`
            members or names, one head, or none), kept as their sorted names (default:
            :func:`m3kit.late_chunking.default_late_heads`).
        overlap: Late chunking: text tokens shared by consecutive windows (default:
            :func:`m3kit.late_chunking.default_overlap`).
        placement: Late chunking: how a long document's windows are laid out,
            :class:`~m3kit.late_windows.WindowPlacement` ``"centred"`` or ``"chunks"``
            (default: the chunker's, ``"centred"``).

    Raises:
        ValueError: A setting the kind ignores, a placement that is not one of them, or an
            unknown head.
    """

    kind: ChunkingKind | str = ChunkingKind.NAIVE
    chunk_size: int | None = None
    window: int | None = None
    late_heads: Iterable[Head | str] | Head | str | None = None
    overlap: int | None = None
    placement: WindowPlacement | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ChunkingKind(self.kind))
        if self.chunk_size is not None and self.kind is ChunkingKind.WHOLE:
            raise ValueError(
                "chunk_size applies to kind='naive' or 'late'; kind='whole' keeps each document "
                "as one chunk, cut at the model's max_length"
            )
        if self.window is not None and self.kind is not ChunkingKind.LATE:
            raise ValueError("window applies to late chunking (kind='late') only")
        if self.overlap is not None and self.kind is not ChunkingKind.LATE:
            raise ValueError("overlap applies to late chunking (kind='late') only")
        if self.placement is not None:
            if self.kind is not ChunkingKind.LATE:
                raise ValueError("placement applies to late chunking (kind='late') only")
            try:  # checked here, not by each actor
                object.__setattr__(self, "placement", WindowPlacement(self.placement))
            except ValueError:
                choices = [p.value for p in WindowPlacement]
                raise ValueError(
                    f"placement must be one of {choices}, got {self.placement!r}"
                ) from None
        if self.late_heads is not None:
            if self.kind is not ChunkingKind.LATE:
                raise ValueError("late_heads applies to late chunking (kind='late') only")
            # read as LateChunker reads it (Head members or names, one head, or none), and
            # checked here, not by each actor; str(Head.DENSE) is "Head.DENSE", not a name
            heads = parse_heads(self.late_heads)
            object.__setattr__(self, "late_heads", tuple(sorted(h.value for h in heads)))

    def build(self, encoder: M3Encoder) -> Any:
        """The chunker on ``encoder`` (``None`` for whole documents)."""
        from m3kit.chunking import NaiveChunker, default_chunk_size
        from m3kit.late_chunking import LateChunker

        if self.kind is ChunkingKind.WHOLE:
            return None
        size = default_chunk_size(encoder) if self.chunk_size is None else self.chunk_size
        if self.kind is ChunkingKind.LATE:
            heads = None if self.late_heads is None else list(self.late_heads)
            return LateChunker(
                encoder,
                chunk_size=size,
                window=self.window,
                overlap=self.overlap,
                late_heads=heads,
                **({} if self.placement is None else {"placement": self.placement}),
            )
        return NaiveChunker(encoder, chunk_size=size)


# -- the pipeline ----------------------------------------------------------------------------
def _without_nulls(value: Any) -> Any:
    """``value`` without its ``None`` mapping entries, at any depth (list items are kept).

    What a Ray Dataset row holds of a row that lacked them: a block's rows share one Arrow
    schema, so a key one row lacks (a column, or a field of a nested mapping, in lists too)
    is a null in the others; which keys are filled depends on which rows share a block.

    >>> _without_nulls({"a": None, "b": {"c": None, "d": [None, {"e": None}]}})
    {'b': {'d': [None, {}]}}
    """
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


#: Documents checked (and looked up in the store) at a time before any is encoded.
_CHECK_GROUP = 1024
#: How many times a batch whose actor process died is run again (on a restarted actor).
BATCH_RETRIES = 3


def _input_rows(documents: Any) -> Iterator[Any]:
    """The documents one by one; a Ray Dataset's rows as it streams, without their nulls."""
    if hasattr(documents, "iter_rows") and hasattr(documents, "map_batches"):  # a Dataset
        return (_without_nulls(row) for row in documents.iter_rows())
    return iter(documents)


def _rows(
    documents: Iterable[Any], first: int = 0
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Texts, metadatas and ids from SourceDocuments, mappings or a Ray Dataset.

    A Dataset's rows lose their null values (see :func:`index_with_ray`); a ``metadata``
    column of JSON strings is read as it is. ``first`` is the position of the first
    document in the caller's input (for messages).

    Raises:
        TypeError: A ``doc_id`` is neither a str nor an int (an int is its digits, as
            :meth:`~m3kit.store.M3Index.add_texts` stores it); a document that is neither a
            mapping nor a SourceDocument, a text that is not a str, or a ``metadata`` that is
            neither a mapping nor a JSON object (``None`` is none).
        ValueError: A mapping without ``text``, a document without ``doc_id``, a key both a
            column and in its ``metadata``, or a ``metadata`` string that is not JSON.
    """
    from m3kit.store.filters import doc_id_text

    texts, metas, ids = [], [], []
    for i, d in enumerate(_input_rows(documents), start=first):
        if isinstance(d, Mapping):
            if "text" not in d:
                raise ValueError(f"document {i} has no 'text' column (columns: {sorted(d)})")
            text, meta, doc_id = d["text"], _row_metadata(d.get("metadata"), i), d.get("doc_id")
            # other columns are metadata, as `m3kit index` reads a jsonl row's other keys
            extra = {k: v for k, v in d.items() if k not in ("text", "doc_id", "metadata")}
            clash = sorted(set(extra) & set(meta))
            if clash:
                raise ValueError(
                    f"document {i} has {clash} both as columns and in its 'metadata'; keep one"
                )
            meta = {**meta, **extra}
        elif all(hasattr(d, a) for a in ("text", "metadata", "doc_id")):  # a SourceDocument
            text, meta, doc_id = d.text, _row_metadata(d.metadata, i), d.doc_id
        else:
            raise TypeError(
                f"document {i} is a {type(d).__name__}, not a mapping with 'text' and 'doc_id' "
                "(and optional 'metadata') or a SourceDocument"
            )
        if not isinstance(text, str):
            raise TypeError(f"document {i}'s text is {type(text).__name__}, not str")
        if doc_id is None:
            raise ValueError(f"document {i} has no doc_id")
        texts.append(text)
        metas.append(dict(meta))
        ids.append(doc_id_text(doc_id, f"document {i}'s doc_id"))  # as add_texts takes it
    return texts, metas, ids


def _row_metadata(meta: Any, i: int) -> Mapping[str, Any]:
    """Document ``i``'s ``metadata``: a mapping, or a JSON object as a string; ``None`` or
    ``""`` (a CSV's empty cell, which ``ray.data.read_csv`` reads as ``""``): none.

    Raises:
        TypeError: Anything else (``0``, ``False``, a list...), which was stored as no
            metadata at all.
        ValueError: A string that is not JSON.
    """
    if meta is None or meta == "":
        return {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"document {i}'s metadata is not JSON ({exc}): {meta[:60]!r}"
            ) from None
    if not isinstance(meta, Mapping):
        raise TypeError(
            f"document {i}'s metadata is {type(meta).__name__} {meta!r:.60}, not a mapping "
            "(or a JSON object); give None (or an empty string) or leave it out for no metadata"
        )
    return meta


def _groups(documents: Any, size: int) -> Iterator[tuple[int, list[Any]]]:
    """``documents`` in lists of ``size`` (the position of each list's first document).

    A Ray Dataset is read row by row as it streams (its rows without their nulls, see
    :func:`index_with_ray`), never whole into this process.
    """
    rows = _input_rows(documents)
    first = 0
    while group := list(itertools.islice(rows, size)):
        yield first, group
        first += len(group)


def index_with_ray(
    index: M3Index,
    documents: Iterable[SourceDocument | Mapping[str, Any]] | Any,
    *,
    chunker: ChunkerSpec | None = None,
    num_actors: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    docs_per_batch: int = 16,
    truncation: Truncation | str = "warn",
    show_progress: bool | None = None,
) -> list[str]:
    """Encode documents on a Ray cluster and write them through ``index``.

    Args:
        index: The opened collection (embedded, local or a server); it writes.
        documents: :class:`~m3kit.sources.SourceDocument` s (what ``m3kit index`` reads),
            mappings with ``text``, ``doc_id`` and optional ``metadata`` (a mapping or
            JSON; any other column is metadata too, as ``m3kit index`` reads a jsonl row), or
            a ``ray.data.Dataset`` of such rows. Arrow cannot tell a key a row lacks from a
            null (a Dataset's rows share one schema per block), so a Dataset row's ``None``
            metadata values are dropped, at any depth but list items: the row is stored as
            the same row without them, whichever rows share its block. Types are Arrow's
            (an int column with nulls stays int; a pandas-made one is float already). For
            ``None`` values stored as JSON null (as :meth:`M3Index.add_texts` and a list
            of rows store them), give rows a ``metadata`` column of JSON strings.
        chunker: How to cut documents (default: :class:`ChunkerSpec` ``("naive")``, as
            ``m3kit index``).
        num_actors: Encoder actors (one model load each).
        num_cpus: CPUs per actor (also its torch threads).
        num_gpus: GPUs per actor (0: CPU).
        docs_per_batch: Documents per actor call.
        truncation: With ``kind="whole"``, a document longer than the model's window is
            ``"warn"``: cut, with the warning :meth:`M3Index.add_texts` logs, logged by this
            process; ``"error"``: :class:`~m3kit.errors.TruncationError`, raised as the
            documents are checked, before any is encoded. The chunkers never cut.
        show_progress: Ray Data's progress bars while the actors encode (``None``: Ray's own
            setting, ``DataContext.enable_progress_bars``; set for this run only).

    Every document is checked (and looked up in the collection) before the first is encoded,
    so a refused one leaves the collection as it was; the input is read in groups as it
    streams (a Dataset is never pulled whole into this process), which keeps each document's
    id and version, and hands the documents to encode to Ray's object store.

    Returns:
        The document ids, in input order.

    Raises:
        MissingExtraError: Ray Data is not installed.
        TruncationError: See ``truncation``.
        TypeError: A document that is neither a mapping nor a SourceDocument, a text that
            is not a str, a ``metadata`` that is neither a mapping nor a JSON object
            (``None`` is none), or a ``doc_id`` that is neither a str nor an int, named by
            its position: nothing is written.
        ValueError: A document is refused as :meth:`M3Index.add_texts` refuses it (an id
            given twice with different content, metadata that is not plain JSON), or has no
            ``text`` or ``doc_id``: nothing is written. Or an actor refused to encode: the
            model it loaded is not ``index``'s encoder (the checkpoint changed on disk, or
            its node holds another model at that path), or its device cannot run the
            precision given. Whatever an actor raises is raised here with its type (its
            traceback is the ``__cause__``), before the batch is written. Or the
            collection's sparse cut changed since ``index`` opened it.
        RuntimeError: An actor's process died on one batch (out of memory, a crash) more
            than :data:`BATCH_RETRIES` times over, naming the documents not written (the
            one it died on among them): the batches written before stay.
        FingerprintMismatchError: ``index``'s encoder changed in memory since it was opened
            (:class:`~m3kit.errors.EncoderChangedError`), or another index or process
            re-encoded the collection since: before any actor starts, nothing written.
    """
    from m3kit.encoder import Truncation

    ray = require_ray()
    mode = Truncation(truncation)
    if num_actors < 1 or docs_per_batch < 1:
        raise ValueError("num_actors and docs_per_batch must be >= 1")
    # refused before the actors load their models and encode (the first write would refuse
    # it too, after that work): an encoder changed in memory, or a collection another
    # process re-encoded or re-cut since the index opened it
    index.check_encoder()
    check_record(index.store, "nothing was encoded or written")
    spec_chunker = chunker if chunker is not None else ChunkerSpec()
    local_chunker = spec_chunker.build(index.encoder)  # its signature fixes the doc hashes
    queue = DocumentQueue(ray, docs_per_batch)
    for first, group in _groups(documents, _CHECK_GROUP):
        queue.add(index, local_chunker, first, _rows(group, first), mode)
    logger.info("Ray indexing: %d document(s), %d to encode", len(queue.order), queue.todo)
    if not queue.todo:
        update_in_place(index, queue.moves)
        return queue.order
    context = ray.data.DataContext.get_current()
    shown = context.enable_progress_bars
    context.enable_progress_bars = shown if show_progress is None else show_progress
    try:
        heads = sorted(h.value for h in index.store.heads)
        with warnings.catch_warnings():
            # max_task_retries has no named parameter yet (Ray 2.60 warns that ray_remote_args
            # go in 2.64; a Ray without them refuses the keyword: a loud TypeError, no hang)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = queue.dataset().map_batches(
                _EncodeActor,
                fn_constructor_kwargs={
                    "spec": EncoderSpec.of(index.encoder),
                    "chunker": spec_chunker,
                    "heads": heads,
                    "gpus": num_gpus,
                },
                batch_size=docs_per_batch,
                batch_format="numpy",
                # a fixed pool of num_actors actors (``concurrency=`` is deprecated since 2.51)
                compute=ray.data.ActorPoolStrategy(size=num_actors),
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                # Ray Data retries a batch whose actor process died forever by default: a
                # document that kills its worker every time (out of memory) hung the job
                max_task_retries=BATCH_RETRIES,
            )
        written: set[str] = set()
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            _log_notes(table, mode)
            _raise_failure(table)  # before the batch is written
            records = records_from_arrow(table)
            index.write_records(records)
            written.update(r.doc_id for r in records)
    except ray.exceptions.RayActorError as e:  # (died, or unreachable: ActorUnavailableError)
        # Ray does not say which batch its actor held: the documents not written include it
        raise RuntimeError(
            f"Ray indexing stopped: an encoder actor's process died or became unreachable on "
            f"one batch {BATCH_RETRIES + 1} times (out of memory, a crash, a lost node: see "
            f"the actor's log); {queue.unwritten(written)}. The batches written before "
            "stay; index again to write the rest, with fewer documents per batch or more "
            "memory per actor"
        ) from e
    finally:
        context.enable_progress_bars = shown
    update_in_place(index, queue.moves)
    return queue.order
