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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import EncoderFingerprint

__all__ = ["RECORD_KEY", "check_models", "dense_identity", "record_models", "sparse_identity"]

logger = logging.getLogger(__name__)

#: The collection metadata key holding ``{"dense": identity, "sparse": identity}``.
RECORD_KEY = "m3kit_models"
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


def _recorded(client: Any, collection: str) -> _Records | None:
    """The collection's records, or ``None`` when the collection does not exist."""
    if not client.collection_exists(collection):
        return None
    meta = getattr(client.get_collection(collection).config, "metadata", None) or {}
    record = meta.get(RECORD_KEY)
    own = {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}
    return _Records(own, _indexed_by(collection, meta.get(INDEX_KEY)))


@dataclass(frozen=True)
class _Records:
    """A collection's own record (``{}``: none) and the encoder m3kit's index record names
    (``None``: none to check)."""

    own: dict[str, str]
    indexed: EncoderFingerprint | None


def _indexed_by(collection: str, record: Any) -> EncoderFingerprint | None:
    """The encoder m3kit's own record names (``None``: none, or one that cannot be checked).

    Raises:
        FingerprintMismatchError: The record names an unfinished reindex (the collection holds
            two encoders' vectors: no model fits it until the reindex is finished).
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
    if pending is not None:
        raise FingerprintMismatchError(unfinished_reindex_message(collection, stored, pending))
    # an older m3kit's record (no architecture): its identity cannot be told from this one's
    return stored if stored.architecture is not None else None


def _refuse_others(collection: str, records: _Records, identities: dict[str, str]) -> None:
    for name, identity in identities.items():
        stored = records.own.get(name)
        if stored is not None and stored != identity:
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


def check_models(client: Any, collection: str, identities: dict[str, str]) -> None:
    """Refuse embeddings of another model than the one the collection records.

    Raises:
        FingerprintMismatchError: Names the vectors (dense or sparse), both identities and
            the ways out.
    """
    if identities:
        _refuse_others(collection, _recorded(client, collection) or _Records({}, None), identities)


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
    """
    if not identities:
        return True
    records = _recorded(client, collection)
    if records is None:
        return False
    _refuse_others(collection, records, identities)
    recorded = records.own
    if records.indexed is not None or all(name in recorded for name in identities):
        return True  # (m3kit's own record names the model: that is the collection's record)
    if not created and not recorded and client.count(collection, exact=False).count:
        logger.warning(
            "collection %r has no record of the model that wrote its vectors (written by "
            "another program); recording %s: if another model wrote it, write it again",
            collection,
            ", ".join(sorted(identities.values())),
        )
    from qdrant_client.http.exceptions import UnexpectedResponse

    try:
        client.update_collection(collection, metadata={RECORD_KEY: {**recorded, **identities}})
    except UnexpectedResponse as e:  # a server older than collection metadata (Qdrant 1.16)
        logger.warning(
            "Qdrant kept no record of the model writing collection %r (%s): another model's "
            "embeddings will not be refused on it; upgrade the server to keep one",
            collection,
            e,
        )
    return True
