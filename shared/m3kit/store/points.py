"""Chunk records to Qdrant points: validation against the collection, payload, versions."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from m3kit.encoder_inputs import unpaired_surrogate
from m3kit.jsonl import unique_keys
from m3kit.outputs import Head
from m3kit.store.metadata_values import iso_values
from m3kit.store.plan import PointData
from m3kit.store.records import ChunkRecord
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_ID,
    CHUNK_INDEX,
    CHUNKING,
    COLBERT,
    DENSE,
    DOC_HASH,
    DOC_ID,
    ENCODED_TEXT,
    ENCODER_ID,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    SPARSE,
    SPARSE_CUT,
    START,
    CollectionSchema,
    point_id,
)
from m3kit.store.sparse_cut import SparseCut

__all__ = [
    "WriteBatches",
    "check_fits_request",
    "check_text",
    "document_versions",
    "fitting_batch_size",
    "non_finite_head",
    "plain_json",
    "point_json_bytes",
    "records_hash",
    "request_bytes",
    "to_point",
    "vector_values",
]


def records_hash(records: Sequence[ChunkRecord]) -> str:
    """Hash of a document's records (texts, offsets, metadata as stored) in chunk order.

    The metadata is read as :func:`plain_json` stores it (keys strings), so a mapping with
    int and str keys hashes (``sort_keys`` cannot order them) and bad metadata is refused,
    naming the chunk, before anything is written.
    """
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.chunk_index):
        where = f"the metadata of record {r.doc_id!r}#{r.chunk_index}"
        blob = [r.chunk_index, r.text, r.start, r.end, plain_json(r.metadata, where)]
        h.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return h.hexdigest()


def document_versions(records: Sequence[ChunkRecord]) -> dict[str, tuple[str, int]]:
    """``doc_id -> (doc_hash, chunk_count)`` of one write; refuses duplicates and disagreement.

    A record's own ``doc_hash`` / ``chunk_count`` win; unset ones are computed over the
    document's records in this write (:func:`records_hash`, their number).
    """
    keys = Counter((r.doc_id, r.chunk_index) for r in records)
    dup = [k for k, c in keys.items() if c > 1]
    if dup:
        raise ValueError(f"duplicate (doc_id, chunk_index) in one upsert: {dup[:5]}")
    by_doc: dict[str, list[ChunkRecord]] = defaultdict(list)
    for r in records:
        by_doc[r.doc_id].append(r)
    version: dict[str, tuple[str, int]] = {}
    for doc_id, rs in by_doc.items():
        hashes = {r.doc_hash for r in rs}
        counts = {r.chunk_count for r in rs}
        if len(hashes) > 1 or len(counts) > 1:
            raise ValueError(f"records of document {doc_id!r} disagree on doc_hash/chunk_count")
        version[doc_id] = (hashes.pop() or records_hash(rs), counts.pop() or len(rs))
    return version


def plain_json(mapping: Mapping[str, Any], what: str = "metadata") -> dict[str, Any]:
    """``mapping`` as plain JSON (tuples become lists, keys strings, dates, times and UUIDs
    their strings: :func:`~m3kit.store.metadata_values.iso_values`), as it is stored.

    Checked before anything is written: Python's ``json`` writes NaN and infinities, and
    escapes unpaired surrogates, but Qdrant refuses both (the embedded engine in the middle of
    a write, after earlier batches are stored), so they are errors here, on every backend.

    >>> plain_json({"a": (1, 2), 3: None})
    {'a': [1, 2], '3': None}
    >>> plain_json({"price": float("nan")}, "metadata of row 4")
    Traceback (most recent call last):
    ValueError: metadata of row 4['price'] (nan) is not JSON (Out of range float values are not...

    Integers must fit in 64 bits (``-2**63`` to ``2**64 - 1``): the embedded engine and a
    server's JSON API store a larger one as an inexact float.

    >>> plain_json({1: "a", "1": "b"}, "metadata of row 6")
    Traceback (most recent call last):
    ValueError: metadata of row 6 has the key '1' twice in one object (two keys of the ...

    >>> plain_json({"id": [2**70]}, "metadata of row 5")
    Traceback (most recent call last):
    ValueError: metadata of row 5['id'][0] is the integer 1180591620717411303424, beyond ...

    Raises:
        ValueError: A value is not JSON (NaN and infinities included), an integer does not
            fit in 64 bits, a string is not UTF-8 (an unpaired surrogate), or two keys of a
            mapping are one JSON key (``1`` and ``"1"``); ``what`` names the metadata, and
            the path of a key or value JSON refuses (``metadata of text 0['row']['price']
            (nan)``) the value.
    """
    values = iso_values(mapping, what)  # dates, times and UUIDs as qdrant-client writes them
    try:
        blob = _utf8_json(values)
    except (TypeError, ValueError) as exc:
        hint = ": store None or a string instead" if "Out of range float" in str(exc) else ""
        # a codec's error gives a position in the JSON of the whole metadata: _refused says
        # where the character is in its own string
        reason = "" if isinstance(exc, UnicodeEncodeError) else f" ({exc})"
        raise ValueError(f"{_refused(values, what)} is not JSON{reason}{hint}") from None
    plain: dict[str, Any] = json.loads(blob, object_pairs_hook=unique_keys(what))
    _check_integers(plain, what)
    return plain


def _utf8_json(value: Any) -> str:
    """``value`` as JSON Qdrant takes: no NaN or infinity, UTF-8 strings (no lone surrogate)."""
    blob = json.dumps(value, allow_nan=False, ensure_ascii=False)
    blob.encode("utf-8")
    return blob


def _refused(value: Any, where: str) -> str:
    """The path (from ``where``) of the first key or value of ``value`` that :func:`_utf8_json`
    refuses, and that value: a row of 30 columns names the cell to fix.

    >>> _refused({"a": 1, "b": [2, float("nan")]}, "metadata of text 0")
    "metadata of text 0['b'][1] (nan)"
    >>> _refused({"ok": {(1, 2): "a tuple key"}}, "metadata")
    "metadata['ok'], its key (1, 2),"
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            try:
                _utf8_json({key: None})
            except (TypeError, ValueError):
                return f"{where}, its key {key!r},"
            try:
                _utf8_json(item)
            except (TypeError, ValueError):
                return _refused(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            try:
                _utf8_json(item)
            except (TypeError, ValueError):
                return _refused(item, f"{where}[{i}]")
    elif isinstance(value, str) and (at := unpaired_surrogate(value)) is not None:
        # the position in the value, not in the JSON of the whole metadata
        return f"{where} (an unpaired surrogate {value[at]!r} at character {at} of the string)"
    else:
        shown = repr(value)
        return f"{where} ({shown if len(shown) <= 80 else shown[:77] + '...'})"
    return where


def _check_integers(value: Any, where: str) -> None:
    """Refuse an integer Qdrant cannot hold exactly (outside ``-2**63 .. 2**64 - 1``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_integers(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_integers(item, f"{where}[{i}]")
    elif isinstance(value, int) and not -(2**63) <= value <= 2**64 - 1:
        raise ValueError(
            f"{where} is the integer {value}, beyond the 64-bit integers Qdrant stores (it "
            "would come back as an inexact float); store it as a string instead"
        )


def check_text(text: str, what: str) -> None:
    """Refuse a text that is not a UTF-8 string (an unpaired surrogate), which Qdrant refuses.

    >>> check_text("naïve café", "text 0")
    >>> check_text("bad " + chr(0xD800), "text 1")
    Traceback (most recent call last):
    ValueError: text 1 is not valid UTF-8 text (an unpaired surrogate at character 4)
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} is {type(text).__name__}, not str")
    at = unpaired_surrogate(text)
    if at is not None:
        raise ValueError(
            f"{what} is not valid UTF-8 text (an unpaired surrogate at character {at})"
        )


def non_finite_head(dense: Any, sparse_values: Any, colbert: Any) -> str | None:
    """The first of ``"dense"``, ``"sparse"``, ``"ColBERT"`` whose values hold a NaN or an
    infinity; ``None`` when all are finite (or absent).

    An encoder gives them from a checkpoint with NaN / inf weights or an fp16 overflow. Both
    engines store and search such vectors silently (never found; no hit, or NaN scores), so
    writes (:func:`to_point`) and queries (:func:`m3kit.store.query.check_finite_query`) refuse
    them. Measured for a 512-token BGE-M3-sized chunk (dense 1024, ColBERT 512 x 1024):
    0.09-0.2 ms, 0.4% of writing it to the embedded engine (45 ms), less than encoding it.

    >>> non_finite_head([0.5, 1.0], [float("inf")], None)
    'sparse'
    """
    for name, values in (("dense", dense), ("sparse", sparse_values), ("ColBERT", colbert)):
        if values is not None and not np.isfinite(values).all():
            return name
    return None


def _check_finite(where: str, text: str, *vectors: Any) -> None:
    """Refuse NaN / inf vectors (dense, sparse weights, ColBERT), naming the record's text
    (:func:`non_finite_head`)."""
    name = non_finite_head(*vectors)
    if name is not None:
        excerpt = text if len(text) <= 60 else f"{text[:59]}…"
        raise ValueError(
            f"{where} ({excerpt!r}) has NaN or infinite {name} values: the encoder gave "
            "non-finite output (a checkpoint with NaN / inf weights, or an fp16 overflow: "
            "load the encoder with dtype='fp32' or 'bf16'). Nothing of this write was stored"
        )


def to_point(
    schema: CollectionSchema,
    heads: frozenset[Head],
    writer_id: str | None,
    r: ChunkRecord,
    doc_hash: str,
    chunk_count: int,
    sparse_cut: SparseCut | None = None,
) -> PointData:
    """The point of record ``r``, checked against the collection's heads and sizes; its sparse
    vector cut with ``sparse_cut`` (the index's, see :mod:`m3kit.store.sparse_cut`) and stamped
    with it (:mod:`m3kit.store.cut_stamps`)."""
    v = r.vectors
    missing = heads - v.heads
    if missing:
        raise ValueError(
            f"record {r.doc_id!r}#{r.chunk_index} lacks the "
            f"{sorted(h.value for h in missing)} vectors this collection stores"
        )
    dense = v.dense[0]
    if dense.shape != (schema.dense_dim,):
        raise ValueError(
            f"record {r.doc_id!r}#{r.chunk_index}: dense size {dense.shape[-1]} != "
            f"collection's {schema.dense_dim}"
        )
    colbert = None
    if schema.colbert_dim is not None:
        colbert = v.colbert[0]
        if colbert.ndim != 2 or colbert.shape[1] != schema.colbert_dim:
            raise ValueError(
                f"record {r.doc_id!r}#{r.chunk_index}: colbert shape {colbert.shape} does "
                f"not match the collection's [tokens, {schema.colbert_dim}]"
            )
        if colbert.shape[0] == 0:
            raise ValueError(f"record {r.doc_id!r}#{r.chunk_index} has no ColBERT vectors")
    where = f"record {r.doc_id!r}#{r.chunk_index}"
    check_text(r.doc_id, f"the doc_id of {where}")
    if r.chunk_id is not None:
        check_text(str(r.chunk_id), f"the chunk_id of {where}")
    check_text(r.text, f"the text of {where}")
    sparse = v.sparse[0] if schema.sparse else None
    if sparse is not None and sparse_cut is not None:
        sparse = sparse_cut.apply(sparse)
    _check_finite(where, r.text, dense, sparse.values if sparse is not None else None, colbert)
    payload = {
        PAGE_CONTENT: r.text,
        METADATA: plain_json(r.metadata, f"the metadata of {where}"),
        DOC_ID: r.doc_id,
        CHUNK_INDEX: int(r.chunk_index),
        START: r.start,
        END: r.end,
        DOC_HASH: doc_hash,
        CHUNK_COUNT: int(chunk_count),
    }
    if writer_id is not None:
        payload[ENCODER_ID] = writer_id
    if sparse is not None:  # what it was cut with (no cut: every weight kept)
        payload[SPARSE_CUT] = (sparse_cut or SparseCut()).stamp()
    if r.chunking is not None:
        payload[CHUNKING] = plain_json(r.chunking, f"the chunking of {where}")
    if r.chunk_id is not None:
        payload[CHUNK_ID] = str(r.chunk_id)
    if r.extra is not None:
        payload[EXTRA] = plain_json(r.extra, f"the extra of {where}")
    if r.encoded_text is not None and r.encoded_text != r.text:
        check_text(r.encoded_text, f"the encoded text of {where}")
        payload[ENCODED_TEXT] = r.encoded_text
    return PointData(
        id=point_id(r.doc_id, r.chunk_index),
        dense=dense,
        payload=payload,
        sparse=sparse,
        colbert=colbert,
    )


#: Upper estimate of the JSON bytes of one vector value in a write request (a float32 sent
#: as a double: up to ~20 characters, and a separator).
_JSON_VALUE_BYTES = 24


def request_bytes(point: PointData) -> int:
    """An upper estimate of the bytes ``point`` takes in a JSON write request."""
    values = point.dense.size
    if point.colbert is not None:
        values += point.colbert.size
    if point.sparse is not None:
        values += 2 * len(point.sparse.indices)
    return values * _JSON_VALUE_BYTES + len(json.dumps(point.payload))


def vector_values(point: PointData) -> int:
    """How many vector values a point holds (a sparse vector's weights counted)."""
    sparse = len(point.sparse.indices) if point.sparse is not None else 0
    colbert = point.colbert.size if point.colbert is not None else 0
    return int(point.dense.size + sparse + colbert)


def fitting_batch_size(
    points: Sequence[PointData], size: int, limit: int | None, values: int | None = None
) -> int:
    """``size``, lowered so that ``size`` of the largest of ``points`` fit in ``limit`` bytes
    and in ``values`` vector values.

    A BGE-M3 chunk of 256 tokens is ~5.6 MB of JSON (its ColBERT vectors): a request to a
    Qdrant server (32 MiB at most by default) then carries 5 of them, not the 64 asked.

    Args:
        points: The points to write.
        size: Points per request asked for.
        limit: Most bytes of one request (``None``: no limit).
        values: Most vector values of one request (``None``: no limit).

    Returns:
        Points per request, at least 1 (a point larger than ``limit`` is refused first:
        :func:`check_fits_request`; one over ``values`` goes alone).
    """
    if not points:
        return size
    if limit is not None:
        size = max(1, min(size, limit // max(request_bytes(p) for p in points)))
    if values is not None:
        size = max(1, min(size, values // max(vector_values(p) for p in points)))
    return size


#: Bytes of a write request around its points (``{"points":[...]}``).
_ENVELOPE_BYTES = len('{"points":[]}')
_MIB = 1024 * 1024


def point_json_bytes(point: PointData) -> int:
    """The bytes ``point`` takes in a write request, as qdrant-client writes it (pydantic's
    JSON: its floats are not always as long as Python's ``json`` writes them)."""
    from pydantic_core import to_json

    vector: dict[str, Any] = {DENSE: point.dense.tolist()}
    if point.sparse is not None:
        vector[SPARSE] = {
            "indices": point.sparse.indices.tolist(),
            "values": point.sparse.values.tolist(),
        }
    if point.colbert is not None:
        vector[COLBERT] = point.colbert.tolist()
    body = {"id": point.id, "vector": vector, "payload": point.payload}
    return len(to_json(body))


def check_fits_request(points: Sequence[PointData], limit: int | None) -> None:
    """Refuse, before anything is written, points larger than one write request may be.

    Such a point would be sent alone and refused by the server (HTTP 413) after the write's
    earlier requests were stored: other documents written, its own perhaps in part. A point
    whose :func:`request_bytes` upper estimate passes ``limit`` is measured
    (:func:`point_json_bytes`), so one that fits is never refused.

    Args:
        points: The points of one write.
        limit: Most bytes of one request (``None``: no limit).

    Raises:
        ValueError: A point passes ``limit``; the message names its document and chunk, its
            size and the limit, and what to do.
    """
    if limit is None:
        return
    too_big = []
    for p in points:
        if request_bytes(p) + _ENVELOPE_BYTES > limit:
            size = point_json_bytes(p) + _ENVELOPE_BYTES
            if size > limit:
                too_big.append((p, size))
    if not too_big:
        return
    point, size = too_big[0]
    more = f" (and {len(too_big) - 1} more chunk(s))" if len(too_big) > 1 else ""
    raise ValueError(
        f"chunk {point.payload[CHUNK_INDEX]} of document {point.payload[DOC_ID]!r} is "
        f"{size / _MIB:.1f} MiB as a write request, more than the server's request limit of "
        f"{limit / _MIB:g} MiB (max_request_mb={limit // _MIB}){more}: nothing of this write "
        "was sent. Split such documents into shorter chunks (a chunk's ColBERT vectors grow "
        "with its tokens), or raise the server's service.max_request_size_mb and give it as "
        "connection=ConnectionSettings(max_request_mb=...) (m3kit: --qdrant-max-request-mb)"
    )


@dataclass(frozen=True)
class WriteBatches:
    """One upsert's points cut into write requests, each document's points in one request
    when they fit in one.

    A request that fails then leaves each document of at most ``size`` chunks wholly old or
    wholly new, never half of each (point ids are per (document, chunk), so new chunks
    overwrite old ones in place); only a document larger than a request can span several,
    and :meth:`started_documents` names those whose old chunks must then go.

    >>> b = WriteBatches.of(list("aabbbccccc"), list(range(10)), size=4)
    >>> b.batches
    ((0, 1), (2, 3, 4), (5, 6, 7, 8), (9,))
    >>> b.started_documents(range(3))
    ['a', 'b', 'c']
    >>> b.started_documents({1, 3})  # parallel requests: the first failed, later ones landed
    ['b', 'c']

    Attributes:
        batches: The requests, in writing order.
        spans: ``doc_id -> (first, last)``: the requests holding its first and last points.
    """

    batches: tuple[tuple[Any, ...], ...]
    spans: Mapping[str, tuple[int, int]]

    @classmethod
    def of(cls, doc_ids: Sequence[str], points: Sequence[Any], size: int) -> WriteBatches:
        """Requests of at most ``size`` points (``doc_ids[i]`` owns ``points[i]``)."""
        if size < 1:
            raise ValueError("batch_size must be >= 1")
        by_doc: dict[str, list[Any]] = {}
        for doc_id, point in zip(doc_ids, points, strict=True):
            by_doc.setdefault(doc_id, []).append(point)
        batches: list[tuple[Any, ...]] = []
        current: list[Any] = []
        spans: dict[str, tuple[int, int]] = {}
        for doc_id, doc_points in by_doc.items():
            if current and len(current) + len(doc_points) > size:
                batches.append(tuple(current))
                current = []
            first = len(batches)
            for point in doc_points:
                current.append(point)
                if len(current) == size:
                    batches.append(tuple(current))
                    current = []
            # the request holding the last point: the one just closed when it ended on it
            spans[doc_id] = (first, len(batches) if current else len(batches) - 1)
        if current:
            batches.append(tuple(current))
        return cls(tuple(batches), spans)

    def started_documents(self, written: Iterable[int]) -> list[str]:
        """Documents with a point in a written request: wholly written, or (larger than a
        request) partly written, their old chunks then stale beside new ones.

        Args:
            written: Indices of the requests that succeeded (with parallel requests, any
                subset: one that fails does not stop those already in flight).
        """
        done = frozenset(written)
        return [
            doc_id
            for doc_id, (first, last) in self.spans.items()
            if any(i in done for i in range(first, last + 1))
        ]
