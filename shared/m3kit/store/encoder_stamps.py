"""Which encoder wrote each stored point, and the points another encoder wrote.

Every point an index writes carries its encoder's identity (payload
:data:`~m3kit.store.schema.ENCODER_ID`, :attr:`EncoderFingerprint.identity
<m3kit.fingerprint.EncoderFingerprint.identity>`); points written before m3kit stamped them,
and those a plain :class:`~m3kit.store.M3Store` writes, have none and count as the recorded
encoder's, as do points stamped with the identity an older m3kit gave it
(:attr:`~m3kit.fingerprint.EncoderFingerprint.legacy_identity`). So a collection that holds
points stamped with another identity than its recorded encoder's (a writer that went on with
the old encoder after another process re-encoded the collection, its record check having
raced the reindex: :mod:`m3kit.store.record_check`) is refused when an index or store opens it
(:func:`check_encoder_stamps`, called by :func:`~m3kit.store.collection_record.check_collection`
and :func:`~m3kit.store.collection_record.check_recorded_stamps`), and by a reindex that finds
such points written after its last pass, until an index opened with the recorded encoder and
``reindex=True`` re-encodes them (only the documents with a point not stamped with that
encoder: :func:`~m3kit.store.reindex.reindex_collection`), or their documents are deleted
(``M3Store.delete_documents_unopened``, :mod:`m3kit.store.unopened`).

While a reindex is unfinished (the record's ``reindex_to``) the collection holds two encoders'
points by design: it is not checked then (the open refuses it as unfinished, or finishes it).

The check is one count request, on the ``encoder_id`` payload index every collection has
(:data:`~m3kit.store.payload_indexes.BUILT_IN_INDEXES`); the points are read only to name
them in a refusal. This module is the encoder's counterpart of :mod:`m3kit.store.cut_stamps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_client import models

from m3kit.errors import FingerprintMismatchError
from m3kit.store.schema import DOC_ID, ENCODER_ID
from m3kit.store.unopened import delete_way_out

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.store import M3Store

__all__ = [
    "check_encoder_stamps",
    "other_encoders_message",
    "stamped_documents",
    "written_by_others",
]

#: Identities named in a refusal (the other encoders'), at most.
_NAMED = 3


def written_by_others(*fingerprints: EncoderFingerprint) -> models.Filter:
    """Chunks stamped with an identity that is none of ``fingerprints``' (either identity of
    each); chunks with no stamp (written before m3kit stamped them) do not match."""
    mine = sorted({i for fp in fingerprints for i in (fp.identity, fp.legacy_identity)})
    return models.Filter(
        must_not=[
            models.IsEmptyCondition(is_empty=models.PayloadField(key=ENCODER_ID)),
            models.FieldCondition(key=ENCODER_ID, match=models.MatchAny(any=mine)),
        ]
    )


def check_encoder_stamps(
    store: M3Store, recorded: EncoderFingerprint, *same: EncoderFingerprint
) -> None:
    """Refuse a collection holding chunks of another encoder than its ``recorded`` one.

    Args:
        store: The opened store.
        recorded: The encoder the collection records.
        same: Fingerprints of the same encoder whose stamps count as ``recorded``'s too (the
            opening index's, which may differ in ``architecture``: a record from an older
            m3kit).

    Raises:
        FingerprintMismatchError: Such chunks are stored; names how many, of how many
            documents, the other identities, the recorded encoder and the ways out.
    """
    others = written_by_others(recorded, *same)
    count = store.count(others)
    if count:
        raise FingerprintMismatchError(other_encoders_message(store, recorded, others, count))


def other_encoders_message(
    store: M3Store, recorded: EncoderFingerprint, others: models.Filter, count: int
) -> str:
    """Why a collection recording ``recorded`` with ``count`` chunks matching ``others``
    (:func:`written_by_others`) is refused (one line: the ``m3kit`` commands show the
    first)."""
    docs, named = stamped_documents(store, others)
    return (
        f"collection {store.collection!r} ({store.backend.value}) records "
        f"{recorded.describe()} (identity {recorded.identity!r}), but holds {count} chunk(s) "
        f"of {len(docs)} document(s) stamped with another encoder (identity {named}): a "
        "writer went on with another encoder after (or while) the collection was re-encoded "
        "(another process, or an index opened before the reindex), so searches would rank "
        "two encoders' vectors. Stop that writer, then re-encode those chunks with the "
        "recorded encoder: M3Index.open(encoder, ..., reindex=True) with that encoder (m3kit "
        "index --reindex; without --model, the recorded model); only the documents with a "
        f"chunk not stamped with it are re-encoded. {delete_way_out(store, docs)}"
    )


def stamped_documents(store: M3Store, others: models.Filter) -> tuple[list[str], str]:
    """The ids of the documents with a chunk matching ``others`` (sorted), and the identities
    those chunks are stamped with, named for a message (the first few, then a count)."""
    docs: set[str] = set()
    identities: set[str] = set()
    for hit in store._backend.scroll(others, [DOC_ID, ENCODER_ID]):
        docs.add(str(hit.payload.get(DOC_ID)))
        identities.add(str(hit.payload.get(ENCODER_ID)))
    named = ", ".join(repr(i) for i in sorted(identities)[:_NAMED])
    if len(identities) > _NAMED:
        named += f" and {len(identities) - _NAMED} more"
    return sorted(docs), named
