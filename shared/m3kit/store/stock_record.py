"""Which m3kit model wrote a collection in a framework's own Qdrant layout.

langchain-qdrant's and LlamaIndex's ``QdrantVectorStore`` record nothing of the model that made
a collection's vectors: a collection written with one checkpoint and opened with another (a
fine-tune saved to a new folder, the same model at another ``max_length`` or query
instruction) is searched with the new model's queries against the old model's vectors,
silently. The adapters' stock-layout stores (``langchain_m3.M3QdrantVectorStore``,
``llamaindex_m3.M3QdrantVectorStore``) record the identity of the m3kit encoders that make
their vectors (:func:`dense_identity`, :func:`sparse_identity`) in the collection's metadata
under :data:`RECORD_KEY` when they write, and refuse another model's when they are built on
the collection. Points and payloads stay the framework's, so its own store still reads the
collection. A collection written by another program has no record until its first write
through such a store. A collection :class:`~m3kit.store.M3Index` wrote (``m3kit index``, the
adapters' ``M3VectorStore``), which such a store reads with ``vector_name="dense"``, records
its encoder in m3kit's own record (:mod:`m3kit.store.collection_record`): another model than
that one is refused too (not checked: a record from an m3kit before ``architecture``, which
``M3Index.open`` updates, or a damaged one).

The sparse embeddings' cut (``sparse_top_k`` / ``sparse_min_weight``, which every stored and
queried sparse vector is cut with) is recorded beside the model (:data:`SPARSE_CUT`, the
cut's :meth:`~m3kit.store.sparse_cut.SparseCut.stamp`), and another cut is refused: the
collection would hold, and be searched with, vectors cut two ways (``ValueError``, as
``M3Index`` refuses another cut). A record written before
it was recorded gains it at the next write; m3kit's own record names its cut (none when it
names none).

The document prefix the sparse (LlamaIndex: ``text_instruction``) vectors were encoded after
is recorded the same way (:data:`TEXT_INSTRUCTION`, ``""``: none; LangChain's stores never
prefix), and a write with another prefix is refused (``ValueError``,
:mod:`m3kit.store.doc_prefix`): the collection would hold prefixed and bare document vectors.
LlamaIndex's store also refuses another prefix when built on the collection, also than the one
m3kit's own record names; LangChain's, which only reads it then, at its first write. A record
written before the prefix was recorded gains the first writer's prefix at its next write
(which prefix wrote the vectors before cannot be told from the stock layout).

Such a store only reads a collection ``M3Index`` keeps: its writes are refused
(``ValueError``, :func:`index_write_message`, with any embeddings). Its points would carry
neither m3kit's chunk payload nor a ColBERT vector, so the index's searches (ColBERT-reranked)
never returned them and its deletes never removed them, silently.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from m3kit.errors import EncoderChangedError, FingerprintMismatchError
from m3kit.fingerprint import EncoderFingerprint

__all__ = [
    "RECHECK_SECONDS",
    "RECORD_KEY",
    "SPARSE_CUT",
    "TEXT_INSTRUCTION",
    "Recheck",
    "acheck_models",
    "arecord_models",
    "check_models",
    "dense_identity",
    "index_write_message",
    "is_m3kit_identity",
    "other_identity",
    "record_models",
    "refuse_changed",
    "sparse_cut_identity",
    "sparse_identity",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The collection metadata key holding ``{"dense": identity, "sparse": identity}``.
RECORD_KEY = "m3kit_models"
#: The name of the sparse cut in a record (beside ``"dense"`` and ``"sparse"``).
SPARSE_CUT = "sparse_cut"
#: The name of the document prefix in a record (``""``: none; as m3kit's own record names it).
TEXT_INSTRUCTION = "text_instruction"
#: How a record names the vectors of embeddings not m3kit's (:func:`other_identity`).
_OTHER = "other:"
#: The collection metadata key of m3kit's own record (``M3Index``'s: the encoder's fingerprint).
INDEX_KEY = "m3kit"


def dense_identity(encoder: Any) -> str:
    """What names an encoder's dense vectors in a record (its fingerprint identity)."""
    from m3kit.fingerprint import encoder_fingerprint

    return f"m3kit-dense:{encoder_fingerprint(encoder).identity}"


def sparse_identity(encoder: Any) -> str:
    """What names an encoder's sparse vectors in a record (its fingerprint identity)."""
    from m3kit.fingerprint import encoder_fingerprint

    return f"m3kit-sparse:{encoder_fingerprint(encoder).identity}"


def other_identity(embeddings: Any) -> str:
    """What names the vectors of embeddings not m3kit's in a record: their class (which model
    it runs cannot be told, so two such embeddings are not told apart; an m3kit model is
    refused on their vectors, and they on an m3kit model's).

    >>> from fractions import Fraction
    >>> other_identity(Fraction(1, 2))
    'other:fractions.Fraction'
    """
    kind = type(embeddings)
    return f"{_OTHER}{kind.__module__}.{kind.__qualname__}"


def is_m3kit_identity(identity: str) -> bool:
    """Whether a record's identity names an m3kit model's vectors.

    >>> is_m3kit_identity("m3kit-dense:abc"), is_m3kit_identity("other:x.Y")
    (True, False)
    """
    return identity.startswith("m3kit-")


def sparse_cut_identity(top_k: int | None, min_weight: float) -> str:
    """What names a sparse cut in a record: its stamp (``{"min_weight":0.0,"top_k":null}``:
    none).

    Raises:
        ValueError: Not a cut (the messages of :class:`~m3kit.store.sparse_cut.SparseCut`).
    """
    from m3kit.store.sparse_cut import SparseCut

    return SparseCut(top_k, min_weight).stamp()


# The record is read and written through a ``QdrantClient`` (sync stores) or an
# ``AsyncQdrantClient`` (LlamaIndex's store built with ``aclient=`` only), whose methods share
# names and arguments. The logic is written once, as coroutines awaiting each call through
# :func:`_result`: with the async client they are awaited; with the sync client nothing ever
# suspends, so :func:`_run_sync` runs them to the end in one step (no event loop, no thread).
async def _result(value: Any) -> Any:
    """``value``, awaited when it is awaitable (an async client's call)."""
    return await value if inspect.isawaitable(value) else value


def _run_sync(client: Any, flow: Coroutine[Any, Any, _T]) -> _T:
    """The result of ``flow`` driven with ``client``, a sync client (it never suspends).

    Raises:
        TypeError: ``client`` is an async client (``AsyncQdrantClient``: use the ``a``
            functions).
    """
    if inspect.iscoroutinefunction(getattr(client, "collection_exists", None)):
        flow.close()
        raise TypeError(
            f"{type(client).__name__} is an async client: use acheck_models / arecord_models"
        )
    try:
        flow.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    flow.close()
    raise TypeError("a sync Qdrant client's call returned an awaitable: pass it as aclient")


#: Seconds an adapter's ``M3QdrantVectorStore`` trusts its last check of the collection's
#: record: a query after that checks it again (two requests), so an alias moved to another
#: model's collection (a blue/green model switch), or the collection re-encoded by another
#: process, under a long-running store is refused, not searched with the old model's queries.
RECHECK_SECONDS = 5.0


class Recheck:
    """When a store's next query checks the collection's record again
    (:data:`RECHECK_SECONDS` after the last check).

    >>> r = Recheck()
    >>> r.due()
    False
    """

    def __init__(self) -> None:
        self._at = time.monotonic()

    def due(self) -> bool:
        """Whether the last check is older than :data:`RECHECK_SECONDS`."""
        return time.monotonic() - self._at >= RECHECK_SECONDS

    def done(self) -> None:
        """A check just passed."""
        self._at = time.monotonic()


async def _recorded(client: Any, collection: str) -> _Records | None:
    """The collection's records, or ``None`` when the collection does not exist."""
    if not await _result(client.collection_exists(collection)):
        return None
    info = await _result(client.get_collection(collection))
    meta = getattr(info.config, "metadata", None) or {}
    record = meta.get(RECORD_KEY)
    own = {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}
    index_record = meta.get(INDEX_KEY)
    return _Records(own, _indexed_by(collection, index_record), index_record)


@dataclass(frozen=True)
class _Records:
    """A collection's own record (``{}``: none) and the encoder m3kit's index record names
    (``None``: none to check)."""

    own: dict[str, str]
    indexed: EncoderFingerprint | None
    index_record: Any = None  # m3kit's own record, as stored


def _indexed_by(collection: str, record: Any) -> EncoderFingerprint | None:
    """The encoder m3kit's own record names (``None``: none, or one that cannot be checked).

    Raises:
        FingerprintMismatchError: The record names an unfinished reindex to another encoder
            (the collection holds two encoders' vectors: no model fits it until the reindex
            is finished).
    """
    from m3kit.store.collection_record import unfinished_reindex_message

    if not isinstance(record, dict) or record.get("fingerprint") is None:
        return None
    try:
        stored = EncoderFingerprint.from_dict(record["fingerprint"])
        pending = record.get("reindex_to")
        if pending is not None:
            pending = EncoderFingerprint.from_dict(pending)
    except ValueError as e:
        logger.warning("collection %r: unreadable m3kit record (%s): not checked", collection, e)
        return None
    if pending is not None and not pending.same_encoder(stored):
        raise FingerprintMismatchError(unfinished_reindex_message(collection, stored, pending))
    # (a reindex to the same encoder, a late writer's chunks redone, keeps its vectors' space)
    # an older m3kit's record (no architecture): its identity cannot be told from this one's
    return stored if stored.architecture is not None else None


def _indexed_cut(collection: str, record: Any) -> str | None:
    """The stamp of the sparse cut m3kit's own record names (none recorded: no cut).

    Raises:
        ValueError: The record names an unfinished cut change (as ``M3Index.open`` refuses it).
    """
    from m3kit.store.sparse_cut import PENDING_KEY, SparseCut, unfinished_message
    from m3kit.store.sparse_cut import RECORD_KEY as CUT_KEY

    try:
        stored = SparseCut.from_record(record[CUT_KEY]) if CUT_KEY in record else SparseCut()
        pending = SparseCut.from_record(record[PENDING_KEY]) if PENDING_KEY in record else None
    except ValueError as e:
        logger.warning("collection %r: unreadable m3kit record (%s): not checked", collection, e)
        return None
    if pending is not None:
        raise ValueError(unfinished_message(collection, stored, pending))
    return stored.stamp()


def _refuse_other_cut(collection: str, records: _Records, identity: str) -> None:
    from m3kit.store.sparse_cut import SparseCut

    indexed = None if records.indexed is None else _indexed_cut(collection, records.index_record)
    for stored in (records.own.get(SPARSE_CUT), indexed):
        if stored is not None and stored != identity:
            was, now = (SparseCut.from_stamp(c).describe() for c in (stored, identity))
            raise ValueError(
                f"collection {collection!r} holds sparse vectors stored with {was}; these "
                f"sparse embeddings cut with {now}: its chunks and queries would be cut two "
                "ways. Give the sparse embeddings the collection's sparse cut (sparse_top_k / "
                "sparse_min_weight), or write the documents again with this one into a new "
                "collection"
            )


def _refuse_other_prefix(collection: str, records: _Records, identity: str) -> None:
    from m3kit.store.doc_prefix import check_prefix

    check_prefix(collection, records.own, identity)  # (its key is TEXT_INSTRUCTION)
    if isinstance(records.index_record, dict):
        check_prefix(collection, records.index_record, identity)


def _refuse_others(collection: str, records: _Records, identities: dict[str, str]) -> None:
    for name, identity in identities.items():
        if name == SPARSE_CUT:
            _refuse_other_cut(collection, records, identity)
            continue
        if name == TEXT_INSTRUCTION:
            _refuse_other_prefix(collection, records, identity)
            continue
        stored = records.own.get(name)
        if stored is not None and stored != identity and _told_apart(stored, identity):
            raise FingerprintMismatchError(
                f"collection {collection!r} holds {name} vectors of another model ({stored}) "
                f"than these {name} embeddings ({identity}): its documents would be searched "
                "with another model's queries. Use the embeddings of the model that wrote it "
                "(same checkpoint, max_length and query instruction), or write the documents "
                "again with this one into a new collection"
            )
        indexed = records.indexed
        if indexed is None or name not in indexed.heads:
            continue
        if identity != f"m3kit-{name}:{indexed.identity}":
            raise FingerprintMismatchError(
                f"collection {collection!r} holds {name} vectors of another model than these "
                f"{name} embeddings ({identity}): m3kit indexed it with {indexed.describe()} "
                f"(identity {indexed.identity}), so its documents would be searched with "
                "another model's queries. Use the embeddings of that model (same checkpoint, "
                "max_length and query instruction), or re-encode the collection with this one "
                "(M3Index.open(encoder, ..., reindex=True), m3kit index --reindex)"
            )


def _told_apart(stored: str, identity: str) -> bool:
    """Whether two different identities are known to name different models (two programs'
    embeddings, :func:`other_identity`, cannot be told apart)."""
    return is_m3kit_identity(stored) or is_m3kit_identity(identity)


def check_models(client: Any, collection: str, identities: dict[str, str]) -> None:
    """Refuse embeddings of another model than the one the collection records.

    Raises:
        FingerprintMismatchError: Names the vectors (dense or sparse), both identities and
            the ways out.
        ValueError: The collection records another sparse cut or document prefix (names
            both).
    """
    _run_sync(client, _check_models(client, collection, identities))


def refuse_changed(built: dict[str, str], now: dict[str, str]) -> None:
    """Refuse a search by an adapter's ``M3QdrantVectorStore`` whose embeddings are no longer
    those it was built with (and checked against the collection: ``built``): an encoder
    trained in place or given other weights encoded queries against the collection's vectors
    silently.

    >>> refuse_changed({"dense": "m3kit-dense:a"}, {"dense": "m3kit-dense:a"})
    >>> refuse_changed({"dense": "m3kit-dense:a"}, {"dense": "m3kit-dense:b"})
    Traceback (most recent call last):
    ...
    m3kit.errors.EncoderChangedError: the dense embeddings changed since this \
M3QdrantVectorStore was built (their encoder was trained or given other weights in memory, \
or a setting reassigned): its queries are not in the space of the collection's vectors; \
nothing was searched. Build the store again, which checks the embeddings against the \
collection

    Raises:
        EncoderChangedError: Names the embeddings that changed.
    """
    changed = sorted(k for k in built.keys() | now.keys() if built.get(k) != now.get(k))
    if changed:
        raise EncoderChangedError(
            f"the {' and '.join(changed)} embeddings changed since this M3QdrantVectorStore "
            "was built (their encoder was trained or given other weights in memory, or a "
            "setting reassigned): its queries are not in the space of the collection's "
            "vectors; nothing was searched. Build the store again, which checks the "
            "embeddings against the collection"
        )


async def acheck_models(aclient: Any, collection: str, identities: dict[str, str]) -> None:
    """:func:`check_models` through an ``AsyncQdrantClient``."""
    await _check_models(aclient, collection, identities)


async def _check_models(client: Any, collection: str, identities: dict[str, str]) -> None:
    if identities:
        records = await _recorded(client, collection)
        _refuse_others(collection, records or _Records({}, None), identities)


def record_models(
    client: Any, collection: str, identities: dict[str, str], *, created: bool = False
) -> bool:
    """Record the identities the collection does not record yet (before a write).

    Args:
        created: The store's own write just created the collection (it records after that
            write): its points are this store's, so it is recorded without the warning about
            points another program wrote.

    Returns:
        ``False`` when there is something to record but no collection yet (a store that
        creates it at its first write records it after that write); else ``True``.

    Raises:
        FingerprintMismatchError: As :func:`check_models` (another store of another model
            wrote the collection since this one was built).
        ValueError: As :func:`check_models` (another sparse cut or document prefix).
    """
    return _run_sync(client, _record_models(client, collection, identities, created=created))


async def arecord_models(
    aclient: Any, collection: str, identities: dict[str, str], *, created: bool = False
) -> bool:
    """:func:`record_models` through an ``AsyncQdrantClient``."""
    return await _record_models(aclient, collection, identities, created=created)


def index_write_message(collection: str) -> str:
    """Why a framework's own store may not write into a collection ``M3Index`` keeps."""
    return (
        f"collection {collection!r} is an m3kit index (M3Index, `m3kit index` or an adapter's "
        "M3VectorStore wrote it): a point this store writes carries neither m3kit's chunk "
        "payload nor a ColBERT vector, so the index's searches never return it and its "
        "deletes never remove it. Write through M3VectorStore (langchain_m3 or llamaindex_m3) "
        "or M3Index; this store can still search the collection"
    )


async def _record_models(
    client: Any, collection: str, identities: dict[str, str], *, created: bool
) -> bool:
    records = await _recorded(client, collection)
    if records is None:
        return not identities
    if records.index_record is not None:
        raise ValueError(index_write_message(collection))
    if not identities:
        return True
    _refuse_others(collection, records, identities)
    recorded = records.own
    if all(name in recorded for name in identities):
        return True
    # vectors this record is silent on (another program's write, or before m3kit recorded
    # its vectors' model): which model wrote those already stored cannot be told
    unrecorded = sorted(n for n in identities if n in ("dense", "sparse") and n not in recorded)
    if not created and unrecorded:
        points = await _result(client.count(collection, exact=False))
        if points.count:
            logger.warning(
                "collection %r has no record of the model that wrote its %s vectors (written "
                "by another program); recording %s: if another model wrote them, write the "
                "documents again",
                collection,
                " and ".join(unrecorded),
                ", ".join(identities[n] for n in unrecorded),
            )
    from qdrant_client.http.exceptions import UnexpectedResponse

    try:
        await _result(
            client.update_collection(collection, metadata={RECORD_KEY: {**recorded, **identities}})
        )
    except UnexpectedResponse as e:  # a server older than collection metadata (Qdrant 1.16)
        logger.warning(
            "Qdrant kept no record of the model writing collection %r (%s): another model's "
            "embeddings will not be refused on it; upgrade the server to keep one",
            collection,
            e,
        )
    return True
