"""Opening what the ``m3kit`` commands work on: the collection's place, its model, the index.

Split from :mod:`m3kit.cli`: every subcommand reads the same storage and model options.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit.checkpoint import DEFAULT_MODEL
from m3kit.cli_scale import cluster_settings
from m3kit.errors import CollectionNotFoundError

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.store import M3Index
    from m3kit.store.connection import ConnectionSettings

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_PATH",
    "collection_model",
    "collection_record",
    "load_encoder",
    "location",
    "open_index",
    "payload_indexes",
    "refuse_unfinished",
    "refuse_unfinished_cut",
    "refuse_unfinished_reindex",
    "sparse_cut",
    "sparse_min_weight",
    "storage",
]

logger = logging.getLogger("m3kit.cli")

DEFAULT_PATH = Path(".m3kit")
DEFAULT_COLLECTION = "m3kit"
#: Server request flags (:class:`~m3kit.store.connection.ConnectionSettings`), by argparse name.
_CONNECTION_FLAGS = {
    "qdrant_timeout": "--qdrant-timeout",
    "qdrant_max_request_mb": "--qdrant-max-request-mb",
}


def load_encoder(
    args: argparse.Namespace, storage: dict[str, Any], record: dict[str, Any] | None = None
) -> M3Encoder:
    """``--model``, else the model (and max length, query instruction and pooling) the
    collection records, else the default; ``--max-length`` / ``--query-instruction`` /
    ``--pooling`` win when given.

    ``record``: the collection's record when the caller has read it already (one read).
    """
    from m3kit.encoder import M3Encoder

    model, max_length = args.model, args.max_length
    instruction = getattr(args, "query_instruction", None)
    pooling = getattr(args, "pooling", None)
    if model is None:
        stored = collection_model(args, storage, record)
        if stored is not None:
            model = stored.model
            max_length = max_length or stored.max_length
            if instruction is None:  # "": the record's none (None: the checkpoint's own)
                instruction = stored.query_instruction or ""
            if pooling is None:
                pooling = stored.pooling or None
            logger.info("model from collection %r: %s", args.collection, model)
    return M3Encoder.from_pretrained(
        model or DEFAULT_MODEL,
        device=args.device,
        dtype=args.dtype,
        max_length=max_length,
        query_instruction=instruction,
        pooling=pooling,
        batch_size=getattr(args, "batch_size", 32),
        max_batch_tokens=args.max_batch_tokens,
        backend=args.runtime,
        onnx_cache_dir=args.onnx_cache_dir,
    )


def collection_record(
    args: argparse.Namespace, storage: dict[str, Any], *, missing_ok: bool = True
) -> dict[str, Any]:
    """The collection's m3kit record, read without a model (``{}``: no record, or no
    collection when ``missing_ok``: ``m3kit index`` creates it).

    Raises:
        CollectionNotFoundError: There is no such collection and not ``missing_ok`` (the
            message names the collection and where it was looked for).
    """
    from m3kit.store.collection_record import stored_record

    location = storage.get("location")
    if location is not None and not location.is_dir():
        if missing_ok:
            return {}
        raise CollectionNotFoundError(
            f"collection {args.collection!r} does not exist at {location}"
        )
    try:
        return dict(
            stored_record(
                None if location is None else str(location),
                collection=args.collection,
                url=storage.get("url"),
                api_key=storage.get("api_key"),
                backend=storage.get("backend"),
                connection=storage.get("connection"),
            )
        )
    except CollectionNotFoundError:
        if missing_ok:
            return {}
        raise


def collection_model(
    args: argparse.Namespace, storage: dict[str, Any], record: dict[str, Any] | None = None
) -> Any:
    """The fingerprint the collection records (``None``: no collection or no record yet).

    ``record``: the collection's record when already read (else it is read here). While a
    reindex is unfinished, ``m3kit index --reindex`` finishes it with the model it was
    reindexing to; any other command is refused (which model to use is the user's call).

    Raises:
        ValueError: The recorded model folder is gone, or it was a model built in memory.
        FingerprintMismatchError: A reindex is unfinished and this is not
            ``m3kit index --reindex`` (:func:`refuse_unfinished_reindex`).
    """
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.collection_record import PENDING_KEY, damaged_record_message

    if record is None:
        record = collection_record(args, storage)
    fingerprint = record.get("fingerprint")
    if fingerprint is None:
        return None
    refuse_unfinished_reindex(args, record)
    pending = record.get(PENDING_KEY)
    try:
        if pending is not None:
            target = EncoderFingerprint.from_dict(pending)
            logger.info("finishing the interrupted reindex to %s", target.describe())
            fingerprint = pending
        stored = EncoderFingerprint.from_dict(fingerprint)
    except ValueError as e:  # named as the library names it, before a model loads
        raise ValueError(damaged_record_message(args.collection, e)) from e
    if stored.model is None or not Path(stored.model).is_dir():
        what = "a model built in memory" if stored.model is None else f"the model {stored.model}"
        gone = "" if stored.model is None else ", which no longer exists"
        raise ValueError(
            f"collection {args.collection!r} was indexed with {what}{gone}; pass --model "
            "(that model, or another one with `m3kit index --reindex`)"
        )
    return stored


def refuse_unfinished(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Refuse, from the collection's ``record`` and before a model loads, a collection that
    ``M3Index.open`` would refuse whatever the model: one part-way through a change of its
    sparse cut (:func:`refuse_unfinished_cut`), then one part-way through a reindex
    (:func:`refuse_unfinished_reindex`), in the order the index checks them.

    Raises:
        ValueError: As ``M3Index.open`` would, with its message.
    """
    refuse_unfinished_cut(args, record)
    refuse_unfinished_reindex(args, record)


def refuse_unfinished_reindex(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Refuse a collection part-way through a reindex to another encoder, from its ``record``
    (:func:`collection_record`), before a model loads: ``M3Index.open`` refuses it to every
    encoder, so loading one (a minute for BGE-M3) would only delay the refusal;
    ``m3kit index --reindex`` passes (it finishes the reindex, or goes back).

    Raises:
        FingerprintMismatchError: The record holds a pending reindex and this is not
            ``m3kit index --reindex``: the message is the one opening the index gives
            (:func:`m3kit.store.collection_record.unfinished_reindex_message`).
    """
    from m3kit.errors import FingerprintMismatchError
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.collection_record import PENDING_KEY, unfinished_reindex_message

    fingerprint, pending = record.get("fingerprint"), record.get(PENDING_KEY)
    if fingerprint is None or pending is None or getattr(args, "reindex", False):
        return  # (a record without a fingerprint: the index ignores what it says is pending)
    raise FingerprintMismatchError(
        unfinished_reindex_message(
            args.collection,
            EncoderFingerprint.from_dict(fingerprint),
            EncoderFingerprint.from_dict(pending),
        )
    )


def refuse_unfinished_cut(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Refuse a collection part-way through a change of its sparse cut, from its ``record``
    (:func:`collection_record`), before a model loads, as an unfinished reindex is refused
    (:func:`collection_model`); ``m3kit index --reindex`` passes (it finishes the change).

    Raises:
        ValueError: The record holds a pending cut change and this is not
            ``m3kit index --reindex``: the message is the one opening the index would give
            (:func:`m3kit.store.sparse_cut.unfinished_message`).
    """
    from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut, unfinished_message

    pending = record.get(PENDING_KEY)
    if pending is None or getattr(args, "reindex", False):
        return
    stored = SparseCut.from_record(record[RECORD_KEY]) if RECORD_KEY in record else SparseCut()
    raise ValueError(unfinished_message(args.collection, stored, SparseCut.from_record(pending)))


def storage(args: argparse.Namespace) -> dict[str, Any]:
    """Where the collection lives, checked before anything slow happens."""
    if args.qdrant_url is None:
        if args.api_key:
            raise ValueError("--api-key needs --qdrant-url")
        given = [flag for name, flag in _CONNECTION_FLAGS.items() if getattr(args, name, None)]
        if given:
            raise ValueError(
                f"{', '.join(given)} configure requests to a Qdrant server: they need "
                "--qdrant-url (the local engines send none)"
            )
        folder = args.path if args.path is not None else DEFAULT_PATH
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--path {folder} is not a folder")
        _check_layout(folder, args.collection, args.backend)
        return {"location": folder, "backend": args.backend}
    if args.path is not None:
        raise ValueError("give either --path or --qdrant-url, not both")
    if args.backend == "edge":
        raise ValueError("--backend edge is the embedded engine; it cannot use --qdrant-url")
    api_key = args.api_key or os.environ.get("QDRANT_API_KEY") or None
    return {"url": args.qdrant_url, "api_key": api_key, "connection": _connection(args)}


def _connection(args: argparse.Namespace) -> ConnectionSettings | None:
    """``--qdrant-timeout`` / ``--qdrant-max-request-mb`` as ``ConnectionSettings`` (``None``:
    neither given)."""
    from m3kit.store.connection import DEFAULT_MAX_REQUEST_MB, ConnectionSettings

    timeout = getattr(args, "qdrant_timeout", None)
    limit = getattr(args, "qdrant_max_request_mb", None)
    if timeout is None and limit is None:
        return None
    return ConnectionSettings(timeout=timeout, max_request_mb=limit or DEFAULT_MAX_REQUEST_MB)


def _check_layout(folder: Path, collection: str, backend: str | None) -> None:
    """Refuse a ``--path`` folder whose collection the other local engine wrote.

    Checked before a model loads: opened with the wrong engine, the folder would look
    like it holds no collection (no model recorded) and fail only later, in library terms.

    Args:
        folder: The ``--path`` folder (or the default one).
        collection: ``--collection``.
        backend: ``--backend`` (``None``: the embedded engine, the default).

    Raises:
        ValueError: The folder holds ``collection`` in the other engine's layout; the
            message names the ``--backend`` to add.
    """
    from m3kit.store.opening import DEFAULT_BACKEND, folder_backend
    from m3kit.store.records import Backend

    found = folder_backend(folder, collection)
    if found is None or found is Backend(backend or DEFAULT_BACKEND):
        return
    what = (
        "a qdrant-client local collection"
        if found is Backend.CLIENT
        else "an embedded-engine (qdrant-edge) collection"
    )
    hint = f"--backend {found.value}, not {backend}" if backend else f"--backend {found.value}"
    hint = f"use {hint}" if backend else f"add {hint}"
    raise ValueError(f"--path {folder} holds {what} {collection!r}; {hint}")


def open_index(
    encoder: M3Encoder, args: argparse.Namespace, storage: dict[str, Any], *, create: bool = True
) -> M3Index:
    from m3kit.store import M3Index

    location = storage.get("location")
    if location is not None:
        location.mkdir(parents=True, exist_ok=True)
        return M3Index.open(
            encoder,
            str(location),
            collection=args.collection,
            backend=storage["backend"],
            create=create,
            reindex=getattr(args, "reindex", False),
            show_progress=not args.quiet,
            payload_indexes=payload_indexes(args),
            **sparse_cut(args),
        )
    return M3Index.open(
        encoder,
        collection=args.collection,
        url=storage["url"],
        api_key=storage["api_key"],
        connection=storage["connection"],
        create=create,
        reindex=getattr(args, "reindex", False),
        show_progress=not args.quiet,
        payload_indexes=payload_indexes(args),
        cluster=cluster_settings(args),
        **sparse_cut(args),
    )


def payload_indexes(args: argparse.Namespace) -> dict[str, Any]:
    """``--index-field`` as ``M3Index.open``'s ``payload_indexes`` (``{}``: none, or a
    command without the flag); a key given twice with one type is one index.

    Raises:
        ValueError: A key given twice with two types, naming it and both.
    """
    out: dict[str, Any] = {}
    for key, kind in getattr(args, "index_field", []):
        if key in out and out[key] != kind:
            first, then = (getattr(k, "value", k) for k in (out[key], kind))
            raise ValueError(
                f"--index-field {key} is given twice, as {first} and as {then}; give one type "
                "per key"
            )
        out[key] = kind
    return out


def sparse_cut(args: argparse.Namespace) -> dict[str, Any]:
    """``--sparse-top-k`` / ``--sparse-min-weight`` as ``M3Index.open`` arguments (``None``:
    not given, the collection's recorded cut)."""
    return {
        "sparse_top_k": getattr(args, "sparse_top_k", None),
        "sparse_min_weight": getattr(args, "sparse_min_weight", None),
    }


def sparse_min_weight(value: str) -> float:
    """argparse type of ``--sparse-min-weight``: a finite number >= 0, refused with the
    message of :func:`m3kit.sparse_options.check_sparse_min_weight` (the check of every entry
    point that takes it) when it is NaN or infinite."""
    from m3kit.sparse_options import check_sparse_min_weight

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    try:
        check_sparse_min_weight(number)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be a number >= 0 (0: keep every weight)")
    return number


def location(args: argparse.Namespace) -> str:
    if args.qdrant_url:
        return str(args.qdrant_url)
    return str(args.path if args.path is not None else DEFAULT_PATH)
