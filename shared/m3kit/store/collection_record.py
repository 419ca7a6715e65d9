"""What wrote a collection: its encoder's fingerprint, checked on open, and ``reindex``.

A collection records the :class:`~m3kit.fingerprint.EncoderFingerprint` of the encoder that
wrote it (:meth:`M3Store.collection_metadata`: qdrant-client's collection metadata, or a file
beside the embedded engine's shard) and every point records that encoder's identity
(``encoder_id``). Opening the collection with another encoder raises
:class:`~m3kit.errors.FingerprintMismatchError`, unless ``reindex=True``: then every stored
document is re-encoded in place from its stored text, in groups, exactly as it was chunked.
A reindex is resumable: the record says where it is going (``reindex_to``) until it is done,
points already re-encoded carry the new identity and are skipped by the next run, and the
collection cannot be used with the old encoder meanwhile. A collection that records the
encoder but holds chunks stamped with another one (a writer that kept the old encoder after a
reindex) is refused at open too (:mod:`m3kit.store.encoder_stamps`).

Record format (JSON)::

    {"format": 1, "fingerprint": {...}, "reindex_to": {...}}   # reindex_to: only while pending
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import EncoderFingerprint
from m3kit.store.encoder_stamps import (
    check_encoder_stamps,
    stamped_documents,
    written_by_others,
)
from m3kit.store.records import Backend
from m3kit.store.unopened import delete_way_out

if TYPE_CHECKING:
    from m3kit.store.connection import ConnectionSettings
    from m3kit.store.index import M3Index
    from m3kit.store.store import M3Store

__all__ = [
    "FORMAT",
    "PENDING_KEY",
    "check_collection",
    "check_recorded_stamps",
    "damaged_record_message",
    "stored_record",
    "unfinished_reindex_message",
    "write_pending_record",
]

logger = logging.getLogger(__name__)

#: Version of the record's layout.
FORMAT = 1

_FINGERPRINT = "fingerprint"
#: Key of a reindex under way: the fingerprint of the encoder it re-encodes with.
PENDING_KEY = _PENDING = "reindex_to"


def _write(
    store: M3Store, fp: EncoderFingerprint, pending: EncoderFingerprint | None = None
) -> None:
    """Record ``fp`` (and a pending reindex); other keys of the record (what ``m3kit index``
    remembers) are kept."""
    kept = {
        k: v
        for k, v in store.collection_metadata().items()
        if k not in ("format", _FINGERPRINT, _PENDING)
    }
    out: dict[str, Any] = {**kept, "format": FORMAT, _FINGERPRINT: fp.to_dict()}
    if pending is not None:
        out[_PENDING] = pending.to_dict()
    store.set_collection_metadata(out)


def _read(
    store: M3Store, meta: Mapping[str, Any] | None = None
) -> tuple[EncoderFingerprint | None, EncoderFingerprint | None]:
    """The record's fingerprint and pending reindex (``meta``: the record, read if ``None``)."""
    meta = store.collection_metadata() if meta is None else meta
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT:
        raise ValueError(
            f"collection {store.collection!r} has an m3kit record of format {fmt}; this m3kit "
            f"reads format {FORMAT}: upgrade m3kit"
        )
    stored = meta.get(_FINGERPRINT)
    pending = meta.get(_PENDING)
    try:
        return (
            EncoderFingerprint.from_dict(stored) if stored is not None else None,
            EncoderFingerprint.from_dict(pending) if pending is not None else None,
        )
    except ValueError as e:
        raise ValueError(damaged_record_message(store.collection, e, store.backend.value)) from e


def damaged_record_message(collection: str, error: ValueError, backend: str | None = None) -> str:
    """Why a collection whose record cannot be read is refused, and how to mend it."""
    where = f" ({backend})" if backend else ""
    return (
        f"collection {collection!r}{where} has a damaged m3kit record "
        f"({error}): it was changed by hand or by another program, so which encoder wrote its "
        "vectors is unknown. To mend it, open it as a plain M3Store (which opens it with a "
        f"warning) and remove the record's {_FINGERPRINT!r} and {_PENDING!r} keys (meta = "
        f"store.collection_metadata(); meta.pop({_FINGERPRINT!r}, None); meta.pop({_PENDING!r}, "
        "None); store.set_collection_metadata(meta)), then open it with the encoder that wrote "
        "it, or with reindex=True (m3kit index --reindex) to re-encode every chunk another "
        "encoder stamped"
    )


def _check_stock_models(store: M3Store, new: EncoderFingerprint) -> list[str]:
    """Check ``new`` against the models an adapter's stock-layout store recorded for the
    collection's vectors (:mod:`m3kit.store.stock_record`), which m3kit's own record lacks:
    such a collection opened with another model took that model's vectors beside them.
    Returns the names of the vectors recorded as ``new``'s.

    Raises:
        FingerprintMismatchError: A vector of the collection is recorded as another model's
            (another m3kit encoder's, or another program's embeddings).
    """
    ours = []
    for name, recorded in sorted(store.stock_models().items()):
        if name not in ("dense", "sparse") or name not in new.heads:
            continue
        if recorded != f"m3kit-{name}:{new.identity}":
            raise FingerprintMismatchError(
                f"collection {store.collection!r} ({store.backend.value}) holds {name} vectors "
                f"an adapter's M3QdrantVectorStore recorded as another model's ({recorded}) "
                f"than {new.describe()} (identity {new.identity}): its documents would be "
                "searched with another model's queries, and this encoder's vectors stored "
                "beside theirs. Open it with the model that wrote it, or write the documents "
                "again with this one into a new collection"
            )
        ours.append(name)
    return ours


def check_collection(index: M3Index, *, reindex: bool, show_progress: bool | None) -> int:
    """Check (or record) the collection's encoder; re-encode it when asked. Returns how many
    stored documents were re-encoded (0: none).

    - No record and no points (a new collection): the encoder is recorded.
    - No record but points (written before m3kit recorded encoders): the encoder is adopted
      with a warning, or, with ``reindex=True``, every point is re-encoded first.
    - Same encoder: nothing happens (a new precision or model path, and the backbone
      settings a record from an older m3kit lacks, are recorded by the first write:
      :attr:`M3Store.record_at_write`), unless the collection holds
      chunks stamped with another encoder (a writer that kept the old encoder after a
      reindex, :mod:`m3kit.store.encoder_stamps`): :class:`FingerprintMismatchError`, or
      with ``reindex=True`` the documents with such chunks are re-encoded.
    - Another encoder, or a reindex left unfinished: :class:`FingerprintMismatchError`, or
      with ``reindex=True`` the stored documents are re-encoded with this encoder.
    """
    store, new = index.store, index.fingerprint
    stored, pending = _read(store)
    # also once adopted: a reindex finds none of the stock layout's points (they carry no
    # m3kit document), so it re-encoded nothing and recorded the other model over them
    stock = _check_stock_models(store, new)
    if stored is None:
        if store.count() == 0:
            _write(store, new)
        elif reindex:
            return _reindex(index, show_progress)
        elif count := store.count(others := written_by_others(new)):
            docs, named = stamped_documents(store, others)
            raise FingerprintMismatchError(
                f"collection {store.collection!r} ({store.backend.value}) has no record of its "
                f"encoder, and {count} of its chunks, of {len(docs)} document(s), are stamped "
                f"with another encoder (identity {named}) than {new.describe()}; open it with "
                "the encoder that wrote them, or with reindex=True (m3kit index --reindex) to "
                f"re-encode them. {delete_way_out(store, docs)}"
            )
        elif stock:
            logger.info(
                "collection %r: an adapter's M3QdrantVectorStore recorded this encoder's %s "
                "vectors; recording %s as its encoder",
                store.collection,
                " and ".join(stock),
                new.describe(),
            )
            _write(store, new)
        else:
            logger.warning(
                "collection %r has no record of the encoder that wrote it (written before m3kit "
                "recorded encoders); recording %s as its encoder. If it was indexed with "
                "another model, open it once with reindex=True (m3kit index --reindex).",
                store.collection,
                new.describe(),
            )
            _write(store, new)
        return 0
    if pending is None and stored.same_encoder(new):
        if not reindex:  # a late writer's chunks of another encoder: encoder_stamps
            check_encoder_stamps(store, stored, new)
        # a record without ``architecture`` (older m3kit) gains this encoder's
        upgrade = stored.architecture is None and new.architecture is not None
        if (stored.precision, stored.model) != (new.precision, new.model) or upgrade:
            # recorded by this index's first write (record_check.check_write), not here: a
            # search-only opener (its own model folder, a read-only API key) writes nothing
            logger.info(
                "collection %r: same encoder as recorded (%s), now %s: recorded at the first write",
                store.collection,
                stored.describe(),
                new.describe(),
            )
            store.record_at_write = new
        if reindex:  # chunks another encoder wrote (a late writer, or a collection adopted
            # above) are redone: only their documents
            return _reindex(index, show_progress)
        return 0
    if pending is None and store.count() == 0:
        logger.info("empty collection %r: recording %s", store.collection, new.describe())
        _write(store, new)
        return 0
    if pending is not None and not reindex:  # (whichever the encoder)
        raise FingerprintMismatchError(
            unfinished_reindex_message(store.collection, stored, pending)
        )
    if not reindex:
        raise FingerprintMismatchError(_mismatch_message(store, stored, new))
    return _reindex(index, show_progress)


def write_pending_record(store: M3Store) -> None:
    """Write the record an index opened on ``store`` left for its first write
    (:attr:`M3Store.record_at_write`: the same encoder with another precision or model path),
    once, under the write lock: only while the store still writes as that encoder and the
    record still names it, settled (another index may have taken the store over since, or
    re-encoded the collection: its record stays)."""
    fp, store.record_at_write = store.record_at_write, None
    if fp is None or store.writer_id not in (fp.identity, fp.legacy_identity):
        return
    stored, pending = _read(store)
    if pending is None and stored is not None and stored.same_encoder(fp):
        _write(store, fp)


def check_recorded_stamps(store: M3Store) -> None:
    """Refuse, when a plain store opens it, a collection holding chunks of another encoder
    than the one it records (:func:`~m3kit.store.encoder_stamps.check_encoder_stamps`): a
    plain store's searches check no stamp of their hits, so they would rank two encoders'
    vectors. Not checked without a recorded encoder, during an unfinished reindex (the
    collection holds two encoders' chunks by design; a plain store opens it, as before), for
    a record of another format (which ``M3Index.open`` refuses), for a damaged record (a
    warning: the plain store is how it is mended, :func:`damaged_record_message`), or for a
    record without ``architecture`` (an older m3kit's, which also writes it again over this
    m3kit's record of the same encoder): the identity this m3kit stamps that encoder's chunks
    with cannot be told from it (``M3Index.open`` checks them with its encoder's, and records
    it).

    Raises:
        FingerprintMismatchError: Such chunks are stored (named, with the ways out).
    """
    meta = store.collection_metadata()
    if meta.get("format", FORMAT) != FORMAT:
        return
    try:
        stored, pending = _read(store, meta)
    except ValueError as e:  # a plain store is the way to mend it (damaged_record_message)
        logger.warning("%s. A plain store cannot check which encoder wrote its chunks", e)
        return
    if stored is not None and pending is None and stored.architecture is not None:
        check_encoder_stamps(store, stored)


def _reindex(index: M3Index, show_progress: bool | None) -> int:
    from m3kit.store.reindex import reindex_collection  # it reads and writes the record

    return reindex_collection(index, show_progress=show_progress)


def unfinished_reindex_message(
    collection: str, stored: EncoderFingerprint, pending: EncoderFingerprint
) -> str:
    """Why a collection part-way through a reindex (from ``stored`` to ``pending``) is refused
    to every encoder unless it is opened with ``reindex=True``, and the ways forward: the one
    message of ``M3Index.open`` and of the ``m3kit`` commands (which give it before a model
    loads)."""
    return (
        f"collection {collection!r} is part-way through a reindex to {pending.describe()}, "
        f"interrupted: it holds vectors of both that encoder and {stored.describe()}, so it "
        "cannot be used until a reindex finishes. Finish it: open it with the encoder it is "
        "reindexing to and reindex=True (m3kit index --reindex; without --model, that model); "
        "or go back: the same with the encoder it was indexed with (--model that model); or "
        "reindex to another encoder the same way"
    )


def _mismatch_message(store: M3Store, stored: EncoderFingerprint, new: EncoderFingerprint) -> str:
    where = f"collection {store.collection!r} ({store.backend.value})"
    diffs = "; ".join(
        f"{name}: stored {old!r} vs new {value!r}" for name, old, value in stored.differences(new)
    )
    return (
        f"{where} was indexed with another encoder: {diffs}. "
        f"Stored: {stored.describe()}. New: {new.describe()}. "
        "Either open it with reindex=True (M3Index.open(encoder, ..., reindex=True), then "
        "give that index to an adapter's store or retriever; m3kit index --reindex --model "
        "NEW_MODEL) to re-encode every stored document with the new encoder (resumable; the "
        "stored texts are used), use the encoder it was indexed with, or index into a new "
        "collection."
    )


# -- reading without an encoder ---------------------------------------------------------------
def stored_record(
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    url: str | None = None,
    api_key: str | None = None,
    backend: Backend | str | None = None,
    connection: ConnectionSettings | None = None,
) -> Mapping[str, Any]:
    """A collection's whole m3kit record, read without an encoder (``{}``: none).

    ``connection``: a server's request settings, as ``M3Store.open`` takes them.

    Raises:
        CollectionNotFoundError: There is no such collection.
        ValueError: ``connection`` without ``url``.
    """
    from m3kit.errors import CollectionNotFoundError
    from m3kit.store.connection import check_server_only
    from m3kit.store.schema import check_collection_name
    from m3kit.store.store import DEFAULT_BACKEND

    check_collection_name(collection)
    check_server_only(connection, url)
    kind = Backend(backend) if backend is not None else None
    kind = Backend.CLIENT if url is not None else kind or DEFAULT_BACKEND
    meta: Mapping[str, Any]
    if kind is Backend.EDGE:
        from m3kit.store.edge_backend import read_meta_file

        if location is None or str(location) == ":memory:":
            raise ValueError("an in-memory collection has no stored record to read")
        shard = Path(location) / collection
        if not shard.is_dir():
            raise CollectionNotFoundError(f"collection {collection!r} does not exist at {location}")
        meta = read_meta_file(shard)
    else:
        from m3kit.store.client_backend import ClientBackend

        impl = ClientBackend(
            collection=collection,
            location=None if location is None else str(location),
            url=url,
            api_key=api_key or (os.environ.get("QDRANT_API_KEY") if url else None),
            connection=connection,
        )
        try:
            if not impl.exists():
                raise CollectionNotFoundError(
                    f"collection {collection!r} does not exist at {impl.where}"
                )
            meta = impl.read_metadata()
        finally:
            impl.close()
    return meta
