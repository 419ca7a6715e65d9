"""How LangChain ``Document``\\ s become :class:`~m3kit.store.M3Index` writes.

One LangChain document is one M3Index document: its id is the LangChain id (the one given,
else the index's content id). :class:`~m3kit.store.M3Index` owns ids, versions and writes;
this module only sorts the documents into ``add_texts`` calls:

- plain documents are encoded by the index (whole, or cut by the chunker given: naive or late
  chunks, see :func:`m3kit.chunking.as_chunker`);
- chunk documents from :class:`~langchain_m3.M3LateChunkingSplitter` are written with the
  vectors they carry, each as a one-chunk document (their version includes the splitter's
  signature and a hash of their source text, so a re-split source re-writes them). A marked
  document whose vectors are gone, made by another model, or whose text was edited after
  splitting raises ``ValueError``: it is never silently encoded alone. Such a chunk read back
  from the store (marker dropped) and added again unchanged is kept as stored; with other
  metadata it raises ``ValueError`` (written plain it would be encoded alone).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document

from langchain_m3._documents import RETRIEVER_KEYS, without_retriever_keys
from langchain_m3._write_failures import Call, Failed, report_failure, stored_at_version
from langchain_m3.splitter import (
    CHUNK_INDEX_KEY,
    END_INDEX_KEY,
    LATE_CHUNK_KEY,
    START_INDEX_KEY,
    carried_chunk,
    is_late_chunk,
    lost_marker,
    lost_marker_message,
    lost_vectors_message,
)
from m3kit.chunking import Chunker
from m3kit.encoder import M3Encoder
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Chunk, Head
from m3kit.store import M3Index
from m3kit.store.documents import content_doc_id
from m3kit.store.filters import doc_id_text
from m3kit.store.index_inputs import versioned_documents
from m3kit.store.metadata_values import iso_values
from m3kit.store.points import check_text, plain_json
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNKING,
    END,
    METADATA,
    PAGE_CONTENT,
    START,
    point_id,
)

__all__ = ["checked_chunk", "same_model", "write_documents"]

#: How the version of a splitter chunk's write names its chunking (stored in its ``chunking``).
_CARRIED = "langchain_m3.late_chunk("
_LOOKUP_BATCH = 256  # point ids per lookup


@dataclass(frozen=True)
class _Entry:
    position: int
    doc_id: str | None
    text: str
    metadata: dict[str, Any]
    signature: str | None  # None: a plain document; else the carried chunk's version
    chunk: Chunk | None
    legacy_id: str | None = None  # the content id such a chunk had before it named its source


class _CarriedChunker:
    """Hands the index the vectors chunk documents carry (one chunk per document)."""

    def __init__(self, signature: str, chunks: dict[str, Chunk]) -> None:
        self.signature = signature
        self._chunks = chunks

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        out = []
        for text in texts:
            c = self._chunks[text]
            out.append([Chunk(text, 0, len(text), 0, c.token_start, c.token_end, c.vectors)])
        return out


def write_documents(
    index: M3Index,
    documents: Sequence[Document],
    *,
    ids: Sequence[str | None] | None,
    chunker: Chunker | None,
    show_progress: bool | None,
    generate_missing_ids: bool,
    batch_size: int | None = None,
    retriever_results: bool = False,
    on_failure: Callable[[Failed], None] | None = None,
) -> list[str]:
    """Write LangChain documents to ``index``; returns their document ids in input order.

    Args:
        index: The index written to.
        documents: The documents (``metadata`` JSON-serialisable).
        ids: One id per document (``None`` entries: no id); default: each document's ``id``.
        chunker: Cut plain documents with it (``None``: one vector per document, a long one
            cut at the model's window with a warning naming it); chunk documents are never
            split.
        show_progress: tqdm bars.
        generate_missing_ids: When only some documents have an id, give the others the
            index's content id (``False``: raise).
        batch_size: Most documents per ``add_texts`` call (each call encodes and writes its
            documents before the next starts); ``None``: one call per kind of document.
        retriever_results: Documents are written without the keys ``M3Retriever`` adds to
            what it returns, where they are its (:func:`without_retriever_keys`), so a
            returned document added back is the stored one.
        on_failure: Called when a write fails (or is cancelled) once it has begun, before
            the error is raised, with what it stored (:class:`Failed`); an error it raises
            is logged, not raised over the write's own.

    Raises:
        ValueError: Lengths differ, an id is given twice with different content, ids are
            mixed and ``generate_missing_ids`` is false, or a chunk document cannot be stored
            with its own vectors.
        TypeError: An item is not a ``Document``.
    """
    if isinstance(documents, Document):  # (a pydantic model iterates as its field pairs)
        raise TypeError("documents is a list of Documents; wrap a single one as [document]")
    docs = list(documents)
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{i}] is {type(doc).__name__}, not a Document")
    given = _ids(docs, ids, generate_missing_ids)
    _refuse_read_back_chunks(index, docs, given)
    entries = [_entry(index, i, doc, given[i], retriever_results) for i, doc in enumerate(docs)]
    if retriever_results:
        _restore_own_keys(index, docs, entries)
    _check_duplicates(entries)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    kept = _read_back_late_chunks(index, entries)
    out = [""] * len(entries)
    for e in entries:
        if e.position in kept:
            out[e.position] = str(e.doc_id)
    groups = _groups([e for e in entries if e.position not in kept])
    if batch_size is not None:
        groups = [g[i : i + batch_size] for g in groups for i in range(0, len(g), batch_size)]
    calls = [(group, _group_chunker(group, chunker)) for group in groups]
    named = [_named(group, group_chunker) for group, group_chunker in calls]
    kept_ids = [doc_id or None for doc_id in out]
    before = stored_at_version(index, kept_ids, named) if on_failure is not None else []
    try:
        for group, group_chunker in calls:
            doc_ids = [e.doc_id for e in group if e.doc_id is not None] if group[0].doc_id else None
            written = index.add_texts(
                [e.text for e in group],
                [e.metadata for e in group],
                doc_ids,
                chunker=group_chunker,
                show_progress=show_progress,
            )
            for e, doc_id in zip(group, written, strict=True):
                out[e.position] = doc_id
            if group[0].signature is not None:
                _delete_legacy_copies(index, group, group_chunker)
    except BaseException:
        if on_failure is not None:
            report_failure(index, kept_ids, named, before, on_failure)
        raise
    return out


def _named(group: list[_Entry], chunker: Any) -> Call:
    """The documents with ids of one ``add_texts`` call."""
    named = [e for e in group if e.doc_id is not None]
    return Call(
        [e.position for e in named],
        [e.text for e in named],
        [e.metadata for e in named],
        [str(e.doc_id) for e in named],
        chunker,
    )


def _group_chunker(group: list[_Entry], chunker: Chunker | None) -> Any:
    """The chunker of one ``add_texts`` call: the vectors carried by its chunk documents."""
    first = group[0]
    if first.signature is None:
        return chunker
    return _CarriedChunker(first.signature, {e.text: e.chunk for e in group if e.chunk is not None})


def _delete_legacy_copies(index: M3Index, group: list[_Entry], chunker: Any) -> None:
    """Delete the copies of these carried chunks stored under their earlier content id.

    Before a chunk's content id named its source, the same chunk was stored under the id of
    its text and metadata alone; re-adding it now would leave that copy beside the new one.
    A copy is deleted only when it is exactly this chunk: stored whole at the version this
    chunk has (which covers its text, metadata and source), so another source's chunk that
    shared the old id is kept.
    """
    versions: dict[str, set[str]] = defaultdict(set)
    for e in group:
        if e.legacy_id is not None:
            _, (doc,) = versioned_documents([e.text], [e.metadata], [e.legacy_id], chunker)
            versions[e.legacy_id].add(doc.doc_hash)
    stale: set[str] = set()
    for depth in range(max((len(v) for v in versions.values()), default=0)):
        wanted = {i: sorted(v)[depth] for i, v in versions.items() if len(v) > depth}
        stale |= index.store.complete_documents(wanted)
    if stale:
        index.delete(sorted(stale))


def _ids(
    docs: list[Document], ids: Sequence[str | None] | None, generate_missing: bool
) -> list[str | None]:
    if ids is not None:
        if isinstance(ids, str):
            raise TypeError("ids is a list of ids, not a single string")
        if len(ids) != len(docs):
            raise ValueError(f"{len(docs)} documents but {len(ids)} ids")
        chosen = [None if i is None else doc_id_text(i, f"ids[{n}]") for n, i in enumerate(ids)]
    else:
        # Document.id "" is "no id", as langchain-core's add_documents and InMemoryVectorStore
        # read it (an explicit ids=[""] is still refused below)
        chosen = [
            None if d.id is None or d.id == "" else doc_id_text(d.id, f"documents[{n}].id")
            for n, d in enumerate(docs)
        ]
    if any(i == "" for i in chosen):
        raise ValueError("ids must be non-empty strings")
    if not generate_missing and any(chosen) and not all(chosen):
        raise ValueError(
            "some documents have an id and some do not; give every document an id "
            "(or pass ids=...) so none is stored under an unexpected id"
        )
    return chosen


def _refuse_read_back_chunks(index: M3Index, docs: list[Document], ids: list[str | None]) -> None:
    """Refuse a ``Document`` read back from the store as one chunk of a document stored as
    several (its id is the document's, its metadata the ``chunk_index`` it was shown with):
    written under that id it would replace every chunk of the document with itself."""
    wanted: dict[str, tuple[int, str, int]] = {}
    for i, (doc, doc_id) in enumerate(zip(docs, ids, strict=True)):
        at = doc.metadata.get(CHUNK_INDEX_KEY)
        if doc_id is not None and isinstance(at, int) and not isinstance(at, bool) and at >= 0:
            wanted[point_id(doc_id, at)] = (i, doc_id, at)
    if not wanted:
        return
    for pid, payload in index.store.points(list(wanted)).items():
        count = payload.get(CHUNK_COUNT)
        i, doc_id, at = wanted[pid]
        if isinstance(count, int) and count > 1 and _shows_chunk(docs[i], doc_id, payload):
            raise ValueError(
                f"documents[{i}] is chunk {at} of the stored document {doc_id!r} ({count} "
                f"chunks), as the store returns it; written under id {doc_id!r} it would "
                "replace the whole document with this one chunk. To change the document, add "
                "its whole text under its id; to store the chunk as a document of its own, "
                f"give it another id (and drop {CHUNK_INDEX_KEY!r} from its metadata)."
            )


def _restore_own_keys(index: M3Index, docs: list[Document], entries: list[_Entry]) -> None:
    """Give the returned documents written back the user's own ``score`` / ``doc_id`` /
    ``chunk_index`` metadata their stored document has, and a document that is not stored
    all of its keys.

    ``M3Retriever`` shows these keys over the user's keys of the same name, and a returned
    document added back is written without them (:func:`without_retriever_keys`); the stored
    document's own values (which the returned ``Document`` never showed) are put back, so the
    round trip keeps them rather than deleting them. Such a document is stored whole (one
    returned as a chunk of several is refused before), so its chunk 0 holds them. A document
    whose id is not stored was not returned from this store: its keys are the user's (as
    ``llamaindex_m3`` drops the keys its reader shows only from a node whose chunk is stored).
    """
    stripped: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        dropped = len(e.metadata) < len(docs[e.position].metadata)
        if e.doc_id is not None and e.chunk is None and dropped:
            stripped[point_id(e.doc_id, 0)].append(e)
    pids = list(stripped)
    for start in range(0, len(pids), _LOOKUP_BATCH):
        batch = pids[start : start + _LOOKUP_BATCH]
        found = index.store.points(batch)
        for pid in batch:
            payload = found.get(pid)
            own = payload.get(METADATA) if payload is not None else None
            for e in stripped[pid]:
                if payload is None:  # not stored: written as the user gave it
                    e.metadata.update(iso_values(docs[e.position].metadata))
                elif isinstance(own, dict):
                    e.metadata.update({k: own[k] for k in RETRIEVER_KEYS if k in own})


def _shows_chunk(doc: Document, doc_id: str, payload: dict[str, Any]) -> bool:
    """Whether ``doc`` (whose ``chunk_index`` names the stored chunk ``payload``) is that chunk
    as a store returned it: its text, the ``start_index`` / ``end_index`` ``M3VectorStore``
    shows, or the ``doc_id`` / ``score`` ``M3Retriever`` shows. A document with a
    ``chunk_index`` of its own and none of these is a whole document, written as any is."""
    meta = doc.metadata
    return (
        doc.page_content == payload.get(PAGE_CONTENT)
        or (meta.get(START_INDEX_KEY), meta.get(END_INDEX_KEY))
        == (payload.get(START), payload.get(END))
        or without_retriever_keys(meta, doc_id) != meta
    )


def _read_back_late_chunks(index: M3Index, entries: list[_Entry]) -> set[int]:
    """Positions of plain documents that are stored splitter chunks as the store returns them,
    unchanged: kept as stored.

    A chunk from ``M3LateChunkingSplitter`` is stored with vectors pooled from its whole
    source document and without its marker, so ``get_by_ids`` and searches return it as a
    plain ``Document``. Written as one, it would be encoded on its own text (its version is
    not the carried one), replacing those vectors with context-free ones. The same text and
    metadata are kept as stored; the same text with other metadata is refused (a new text
    under its id is an edit, encoded as any document is).

    Raises:
        ValueError: A stored splitter chunk's text with other metadata.
    """
    wanted: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        if e.signature is None and e.doc_id is not None:
            wanted[point_id(e.doc_id, 0)].append(e)
    pids = list(wanted)
    stored: dict[str, dict[str, Any]] = {}
    for start in range(0, len(pids), _LOOKUP_BATCH):
        stored.update(index.store.points(pids[start : start + _LOOKUP_BATCH]))
    kept: set[int] = set()
    for pid, payload in stored.items():
        chunking = payload.get(CHUNKING)
        signature = chunking.get("signature") if isinstance(chunking, dict) else None
        if payload.get(CHUNK_COUNT) != 1 or not str(signature).startswith(_CARRIED):
            continue
        for e in wanted[pid]:
            if payload.get(PAGE_CONTENT) != e.text:
                continue
            given = plain_json(e.metadata, f"documents[{e.position}]")
            if _same_json(payload.get(METADATA), given):
                kept.add(e.position)
                continue
            raise ValueError(
                f"documents[{e.position}] is the stored chunk {e.doc_id!r} of "
                "M3LateChunkingSplitter (its vectors pooled from its whole source document), "
                "as the store returns it, with other metadata; written as a plain document it "
                "would be encoded on its own text, replacing those vectors with context-free "
                "ones. Split its source document again and add those chunks (with the "
                f"metadata you want), or delete {e.doc_id!r} first to store it as a plain text."
            )
    return kept


def _same_json(stored: Any, wanted: Any) -> bool:
    """Whether two metadata are the same JSON, types included (``==`` takes ``True``, ``1``
    and ``1.0`` for one value, so a change of type alone would pass for no change).

    >>> _same_json({"a": 1}, {"a": True}), _same_json({"a": 1, "b": 2}, {"b": 2, "a": 1})
    (False, True)
    """
    return json.dumps(stored, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def _entry(
    index: M3Index, position: int, doc: Document, doc_id: str | None, retriever_results: bool
) -> _Entry:
    # dates, times and UUIDs (TimeWeightedVectorStoreRetriever's stamps) stored as the
    # strings langchain-qdrant stores for them
    metadata = iso_values(doc.metadata, f"metadata of documents[{position}]")
    # checked for every document before the first write: the documents go to add_texts in
    # several calls (by kind and ids), each of which checked only its own, numbered within it,
    # after earlier calls had stored theirs (texts and ids alike)
    plain_json(metadata, f"metadata of documents[{position}]")
    check_text(doc.page_content, f"the text of documents[{position}]")
    if doc_id is not None:
        check_text(doc_id, f"the id of documents[{position}] ({doc_id!r})")
    if lost_marker(doc):
        raise ValueError(lost_marker_message(f"documents[{position}]"))
    if not is_late_chunk(doc):
        if retriever_results:
            metadata = without_retriever_keys(metadata, doc_id)
        return _Entry(position, doc_id, doc.page_content, metadata, None, None)
    chunk = checked_chunk(doc, f"documents[{position}]", index.store.heads, index.encoder)
    marker = metadata.pop(LATE_CHUNK_KEY)
    legacy = None
    if doc_id is None:
        # A chunk is its source's: its vectors carry that source's context. Without an id it
        # gets a content id of its text, metadata, source and place, so a chunk of equal text
        # and metadata from another source (or repeated in this one) is another document
        # rather than one that overwrites it (and that a delete of either source removes).
        source = marker.get("source") if isinstance(marker, dict) else marker
        place = {"source": source, "start": chunk.start}
        doc_id = content_doc_id(doc.page_content, {**metadata, LATE_CHUNK_KEY: place})
        legacy = content_doc_id(doc.page_content, metadata)
    signature = (
        f"{_CARRIED}{marker.get('chunker')}, source={marker.get('source')})"
        if isinstance(marker, dict)
        else f"{_CARRIED}{marker!r})"
    )
    return _Entry(position, doc_id, doc.page_content, metadata, signature, chunk, legacy)


def checked_chunk(
    doc: Document, where: str, heads: Iterable[Head], encoder: M3Encoder | None
) -> Chunk:
    """The late-chunked vectors ``doc`` carries, checked for a store of ``heads`` whose
    documents ``encoder`` encodes (``None``: not an M3 model).

    Raises:
        ValueError: The vectors are lost (a copy outliving the splitter's ``Document``, a
            JSON round trip), the text was edited since, a head the store keeps is missing,
            or another model made them.
    """
    carried = carried_chunk(doc)
    if carried is None:
        raise ValueError(lost_vectors_message(doc, where))
    chunk = carried.chunk
    if chunk.text != doc.page_content:
        raise ValueError(
            f"{where} came from M3LateChunkingSplitter but its page_content was changed after "
            "splitting, so its vectors are not those of its text; split the edited source "
            f"again (or delete metadata[{LATE_CHUNK_KEY!r}] to encode it alone)"
        )
    missing = frozenset(heads) - chunk.vectors.heads
    if missing:
        raise ValueError(
            f"{where} carries late-chunked vectors without "
            f"{sorted(h.value for h in missing)}, which this store keeps; split with a "
            "model that has those heads"
        )
    if encoder is None or not same_model(carried.encoder, encoder):
        theirs = "a model that is not M3" if encoder is None else _model_name(encoder)
        raise ValueError(
            f"{where} was late-chunked by another model ({_model_name(carried.encoder)}) than "
            f"the one this store encodes with ({theirs}); split with the store's model"
        )
    return chunk


def _check_duplicates(entries: list[_Entry]) -> None:
    """An id given twice must name the same content (the index checks within one call)."""
    seen: dict[str, _Entry] = {}
    for e in entries:
        if e.doc_id is None:
            continue
        first = seen.setdefault(e.doc_id, e)
        if (first.text, first.metadata, first.signature) != (e.text, e.metadata, e.signature):
            raise ValueError(f"id {e.doc_id!r} is given twice with different content")


def _groups(entries: list[_Entry]) -> list[list[_Entry]]:
    """``add_texts`` calls: by kind (plain / carried signature) and whether ids are given.

    Carried chunks are matched to their text inside a call, so one call never holds the same
    text with two different chunks (e.g. a sentence repeated in two documents).
    """
    groups: dict[tuple[str | None, bool, int], list[_Entry]] = {}
    texts: dict[tuple[str | None, bool, int], dict[str, Chunk | None]] = {}
    for e in entries:
        round_ = 0
        while True:
            key = (e.signature, e.doc_id is not None, round_)
            known = texts.setdefault(key, {})
            if e.chunk is None or known.get(e.text, e.chunk) is e.chunk:
                break
            round_ += 1
        known[e.text] = e.chunk
        groups.setdefault(key, []).append(e)
    return list(groups.values())


def same_model(a: M3Encoder, b: M3Encoder) -> bool:
    """Whether passages of ``a`` and ``b`` are one vector space: the same weights, tokenizer,
    pooling, heads, sizes and architecture (their fingerprints), whatever folder, precision,
    ``max_length`` or query instruction each was loaded with. The splitter keys the vectors it
    carries by the model's fingerprint, so a chunk may come back with either.

    Two encoders loaded from one folder are not enough: a fine-tune saved over it in between,
    or weights changed in memory, made chunks of another model that were stored as this one's.
    """
    if a is b:
        return True
    passage_space = {"max_length", "query_instruction"}  # late chunks are passages, windowed
    differences = encoder_fingerprint(a).differences(encoder_fingerprint(b))
    return all(field in passage_space for field, _, _ in differences)


def _model_name(encoder: M3Encoder) -> str:
    return str(encoder.info.path) if encoder.info is not None else "an in-memory model"
