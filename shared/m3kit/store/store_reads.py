"""The read half of :class:`~m3kit.store.M3Store`: stored chunks and documents by id or filter.

Split from :mod:`m3kit.store.store` (as :mod:`m3kit.store.store_search` is): :class:`StoreReads`
is a base class of ``M3Store`` holding :meth:`~m3kit.store.M3Store.points`, ``get``, ``find``,
``count``, ``document_metadata``, ``stored_versions`` and ``complete_documents``;
``M3Store.__init__`` sets the backend they read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qdrant_client import models

from m3kit.store.filters import (
    FilterLike,
    and_filters,
    chunk_ids_filter,
    distinct_doc_ids,
    doc_id_text,
    documents_filter,
    points_filter,
    to_filter,
)
from m3kit.store.hits import HIT_KEYS, to_hit
from m3kit.store.payload_indexes import check_filter_ranges
from m3kit.store.plan import RawHit, StorageBackend
from m3kit.store.records import Hit
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_ID,
    CHUNK_INDEX,
    CHUNKING,
    DOC_HASH,
    DOC_ID,
    ENCODED_TEXT,
    EXTRA,
    METADATA,
)

if TYPE_CHECKING:
    from m3kit.outputs import Head

__all__ = ["StoreReads", "StoredVersion"]

_DOC_BATCH = 256  # documents per lookup filter
# payload keys read back by points() and find(): a hit's, the text its vectors were encoded
# on where the writer recorded one, and its chunking (writers check both before skipping a
# chunk: LlamaIndex's encoded text, LangChain's late-chunking splitter signature)
_READ_KEYS = (*HIT_KEYS, ENCODED_TEXT, CHUNKING)


def _canonical_uuid(value: str) -> str | None:
    """``value`` as the engines spell a point id, or ``None`` when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


#: Seconds a filter's range check trusts the payload indexes last read (writes read afresh).
INDEX_TYPES_TTL = 5.0


def _now() -> float:
    return time.monotonic()


class StoreReads:
    """The read methods of :class:`~m3kit.store.M3Store` (its base; ``M3Store`` sets these)."""

    _backend: StorageBackend

    _index_types_read: tuple[float, dict[str, str]] | None = None  # (when, what) reads trust

    if TYPE_CHECKING:  # defined by StoreWrites

        @property
        def heads(self) -> frozenset[Head]: ...

    def _payload_index_types(self) -> dict[str, str]:
        """The collection's payload indexes, ``{payload path: type}`` (``{}``: none, or
        qdrant-client's local mode), read from the collection now: another store (another
        process, a later ``m3kit index --index-field``) may have added one since this store
        opened. Writes call it when their metadata holds a number (the values an index hides)."""
        found = self._backend.payload_indexes() or {}
        self._index_types_read = (_now(), found)
        return found

    def _recent_payload_index_types(self) -> dict[str, str]:
        """:meth:`_payload_index_types` as read within the last :data:`INDEX_TYPES_TTL`
        seconds, else read again: filters with a range on a metadata key check it, and a
        numeric equality is such a range, so a server is asked at most once in that time
        rather than once a search."""
        read = self._index_types_read
        if read is not None and _now() - read[0] < INDEX_TYPES_TTL:
            return read[1]
        return self._payload_index_types()

    def _filter(self, filter: FilterLike | None) -> models.Filter | None:
        """A caller's ``filter`` as a ``models.Filter``, refused where a payload index would
        serve one of its ranges as another kind (:func:`check_filter_ranges`)."""
        selector = to_filter(filter)
        check_filter_ranges(selector, self._recent_payload_index_types)
        return selector

    def points(
        self, ids: Sequence[str] | None = None, *, filter: FilterLike | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{point id: full payload}`` of the chunks with these ids and/or matching the filter.

        Ids come first in the order given (unknown ids are left out), then filter order.

        Raises:
            ValueError: Neither is given, or an id is not a point id (a UUID).
        """
        selector = points_filter(ids, self._filter(filter))
        found = {h.id: h.payload for h in self._backend.scroll(selector, _READ_KEYS)}
        if ids is None:
            return found
        # the engines answer with the canonical spelling (lower case, hyphens): a UUID given
        # otherwise (upper case, no hyphens) is the same point
        wanted = dict.fromkeys(str(uuid.UUID(str(i))) for i in ids)
        return {i: found[i] for i in wanted if i in found}

    def get(
        self, ids: Sequence[str] | None = None, *, filter: FilterLike | None = None
    ) -> list[Hit]:
        """The stored chunks of :meth:`points` as hits (score ``0.0``)."""
        return [to_hit(RawHit(i, 0.0, p)) for i, p in self.points(ids, filter=filter).items()]

    def find(self, ids: Sequence[str], *, filter: FilterLike | None = None) -> list[Hit]:
        """Stored chunks by point id or by the writer's own id (``ChunkRecord.chunk_id``).

        In the order of ``ids`` (an id that matches nothing is left out; one that names
        chunks of several documents gives each), each chunk once, score ``0.0``.

        Raises:
            TypeError: ``ids`` is a single string.
        """
        selector = and_filters(chunk_ids_filter(ids), self._filter(filter))
        by_key: dict[str, list[RawHit]] = defaultdict(list)
        for h in self._backend.scroll(selector, _READ_KEYS):
            by_key[h.id].append(h)
            if h.payload.get(CHUNK_ID) not in (None, h.id):
                by_key[str(h.payload[CHUNK_ID])].append(h)
        out: dict[str, Hit] = {}
        for wanted in ids:
            hits = by_key.get(wanted, [])
            canonical = _canonical_uuid(wanted)
            if canonical not in (None, wanted):  # a point id spelled otherwise
                hits = [*hits, *by_key.get(canonical, [])]
            for h in hits:
                out.setdefault(h.id, to_hit(RawHit(h.id, 0.0, h.payload)))
        return list(out.values())

    def count(self, filter: FilterLike | None = None) -> int:
        """Number of stored chunks (matching the filter)."""
        return self._backend.count(self._filter(filter))

    def document_metadata(
        self, doc_ids: Sequence[str | int] | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{doc_id: metadata}`` of every stored document (one scroll over the collection).

        Args:
            doc_ids: Only these documents (those not stored are left out), looked up by id
                instead of scrolling the whole collection; a str, or an int as its digits
                (as ``add_texts`` stores it).

        Raises:
            TypeError: ``doc_ids`` is a single string, or holds an id that is neither a str
                nor an int.
        """
        if doc_ids is None:
            return self._metadata_of(None)
        ids = distinct_doc_ids(doc_ids, "doc_ids")
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _DOC_BATCH):
            out.update(self._metadata_of(documents_filter(ids[i : i + _DOC_BATCH])))
        return out

    def _metadata_of(self, selector: models.Filter | None) -> dict[str, dict[str, Any]]:
        """``{doc_id: metadata}`` of the documents with a chunk matching ``selector``."""
        out: dict[str, dict[str, Any]] = {}
        for hit in self._backend.scroll(selector, [DOC_ID, METADATA]):
            doc_id = hit.payload.get(DOC_ID)
            if doc_id is not None and str(doc_id) not in out:
                meta = hit.payload.get(METADATA)
                out[str(doc_id)] = dict(meta) if isinstance(meta, Mapping) else {}
        return out

    def stored_versions(
        self, doc_ids: Sequence[str | int], *, metadata: bool = True, extra: bool = True
    ) -> dict[str, StoredVersion]:
        """The version of each document stored whole at one version: every chunk index
        ``0..chunk_count-1`` present, one ``doc_hash`` and one ``chunk_count``, no other chunk
        (a write that stopped half-way through a document is left out). One scroll serves both
        :meth:`complete_documents` and the metadata-only updates of
        :mod:`m3kit.store.metadata_updates`.

        Args:
            doc_ids: Documents to look up; an id is a str, or an int as its digits (as
                ``add_texts`` stores it).
            metadata: Read each chunk's metadata too (``False``: every
                :attr:`StoredVersion.metadata` is ``None``, and the lookup reads no
                metadata, which a version check alone does not need).
            extra: With ``metadata``, read each chunk's ``extra`` too (``False``: every
                :attr:`StoredVersion.extra` is ``None``; a LlamaIndex node's relationships
                are not read for a write whose documents all bring their own).

        Raises:
            TypeError: An id is neither a str nor an int.
        """
        ids = list(dict.fromkeys(doc_id_text(d, "doc_ids") for d in doc_ids))
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        keys = [DOC_ID, CHUNK_INDEX, DOC_HASH, CHUNK_COUNT]
        keys += ([METADATA] if metadata else []) + ([EXTRA] if metadata and extra else [])
        # only chunks holding every vector of the collection: another program may have
        # removed one (qdrant-client delete_vectors, an update in place), and a document with
        # such a chunk is then not stored whole, so adding it again rewrites it
        whole = [
            models.HasVectorCondition(has_vector=h.value)
            for h in sorted(self.heads, key=lambda h: h.value)
        ]
        for i in range(0, len(ids), _DOC_BATCH):
            batch = documents_filter(ids[i : i + _DOC_BATCH])
            for hit in self._backend.scroll(models.Filter(must=[batch, *whole]), keys):
                found[str(hit.payload.get(DOC_ID))].append(hit.payload)
        out: dict[str, StoredVersion] = {}
        for doc_id, payloads in found.items():
            hashes = {p.get(DOC_HASH) for p in payloads}
            counts = {p.get(CHUNK_COUNT) for p in payloads}
            if len(hashes) != 1 or len(counts) != 1:
                continue
            (count,) = counts
            indices = sorted(int(p.get(CHUNK_INDEX) or 0) for p in payloads)
            (doc_hash,) = hashes
            if indices != list(range(int(count or 0))) or not isinstance(doc_hash, str):
                continue
            metas = {json.dumps(p.get(METADATA), sort_keys=True) for p in payloads}
            one = payloads[0].get(METADATA) if len(metas) == 1 else None
            extras = {json.dumps(p.get(EXTRA), sort_keys=True) for p in payloads}
            kept = payloads[0].get(EXTRA) if len(extras) == 1 else None
            out[doc_id] = StoredVersion(
                doc_hash,
                one if isinstance(one, dict) else None,
                kept if isinstance(kept, dict) else None,
            )
        return out

    def complete_documents(self, versions: Mapping[str, str]) -> set[str]:
        """Which documents are fully stored at the given version.

        A document counts only when every chunk index ``0..chunk_count-1`` is present with
        ``doc_hash`` equal to the given hash and no other chunk of it exists, so a write
        that stopped half-way through a document is not mistaken for a complete one.

        Args:
            versions: ``{doc_id: doc_hash}``; an id is a str, or an int as its digits (as
                ``add_texts`` stores it).

        Raises:
            TypeError: An id is neither a str nor an int.
        """
        versions = {doc_id_text(d, "versions"): h for d, h in versions.items()}
        stored = self.stored_versions(list(versions), metadata=False)
        return {d for d, v in stored.items() if v.doc_hash == versions[d]}


@dataclass(frozen=True)
class StoredVersion:
    """A document stored whole at one version (:meth:`StoreReads.stored_versions`).

    Attributes:
        doc_hash: Its version.
        metadata: Its metadata, when every chunk holds the same JSON object; else ``None``.
        extra: What its writer kept with every chunk alike (:attr:`ChunkRecord.extra`),
            read with the metadata; else ``None``.
    """

    doc_hash: str
    metadata: dict[str, Any] | None
    extra: dict[str, Any] | None = None
