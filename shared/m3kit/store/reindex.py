"""``reindex``: re-encode a collection's stored documents in place with another encoder.

Split from :mod:`m3kit.store.collection_record` (the record it keeps up to date). Each
document is rebuilt from its stored chunks and re-encoded exactly as it was chunked, in
groups; the record says where a reindex is going (``reindex_to``) until it is done.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qdrant_client import models
from tqdm.auto import tqdm

from m3kit.store.collection_record import _read, _write
from m3kit.store.documents import TEXT_LENGTH
from m3kit.store.encoder_stamps import check_encoder_stamps
from m3kit.store.filters import documents_filter
from m3kit.store.foreign_points import DELETE_FOREIGN, without_document
from m3kit.store.records import NODES_KIND, ChunkRecord
from m3kit.store.reindex_fit import Chunkers, check_fit, chunking_key, rounds, stored_chunker
from m3kit.store.reindex_nodes import (
    LATE_NODE,
    encode_nodes,
    has_nodes,
    is_late_node,
    nodes_problem,
)
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_ID,
    CHUNK_INDEX,
    CHUNKING,
    DOC_HASH,
    DOC_ID,
    ENCODED_TEXT,
    ENCODER_ID,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    START,
)
from m3kit.store.unopened import delete_call

if TYPE_CHECKING:
    from m3kit.store.index import M3Index, _Doc
    from m3kit.store.store import M3Store

__all__ = [
    "REBUILD_ADVICE",
    "UNRECORDED",
    "DocPlan",
    "check_plans",
    "chunk_version",
    "doc_plans",
    "reencode",
    "reindex_collection",
    "stored_versions",
]

logger = logging.getLogger("m3kit.store.collection_record")  # one logger for the record's work

_DOC_KEYS = (DOC_ID, CHUNK_INDEX, CHUNK_COUNT, PAGE_CONTENT, START, END, METADATA, DOC_HASH)


def reindex_collection(index: M3Index, *, show_progress: bool | None = None) -> int:
    """Re-encode every document not yet written by ``index``'s encoder, then record it.

    Each document is rebuilt from its stored chunks: a whole document from its text, a
    late-chunked one by late chunking the joined chunk texts again over the stored spans with
    the stored window, overlap and pooling (a naively chunked one likewise, each chunk encoded
    alone), and framework nodes (``{"kind": "nodes"}``) each encoded alone again from the
    text its writer encoded. Documents whose chunking cannot be redone (a custom chunker,
    chunks that do not tile the text, or several chunks with no recorded chunking:
    :data:`UNRECORDED`) or whose chunks do not fit the
    encoder's window (:func:`~m3kit.store.reindex_fit.check_fit`) are refused before anything
    is written.

    Returns:
        The number of documents re-encoded.

    Raises:
        FingerprintMismatchError: Chunks of another encoder were written after the last pass
            (a writer that kept the old encoder): refused as an open refuses them, once the
            rest is done and recorded; a reindex again re-encodes just their documents.
    """
    store, target = index.store, index.fingerprint
    stored, pending = _read(store)
    done = [target.identity]
    if pending is not None and pending.architecture is None and pending.same_encoder(target):
        # a reindex an m3kit before config.json settings started: its points carry the
        # identity it gave this encoder, and are done
        done.append(target.legacy_identity)
    # the collection records this encoder: what is left to redo is a late writer's chunks of
    # another encoder (which every open refuses) or unstamped ones
    same = pending is None and stored is not None and stored.same_encoder(target)
    if same:  # this encoder's own chunks from before config.json settings were in its identity
        done.append(target.legacy_identity)
    stale = models.Filter(
        must_not=[models.FieldCondition(key=ENCODER_ID, match=models.MatchAny(any=done))]
    )
    # the same encoder's reindex or recut (also resumed) leaves their vectors as they are
    if not (
        stored is not None
        and stored.same_encoder(target)
        and (pending is None or pending.same_encoder(target))
    ):
        refuse_foreign_points(store)
    chunkers: Chunkers = {}
    total = 0
    for attempt in range(_PASSES):
        # Documents with at least one point not written by the target encoder (all of each
        # document's chunks are re-encoded together, so a document is never half done). A
        # later pass finds those another writer wrote meanwhile with its own encoder.
        todo = sorted({str(h.payload.get(DOC_ID)) for h in store._backend.scroll(stale, [DOC_ID])})
        if not todo and attempt > 0:
            break
        plans = doc_plans(store, todo)
        todo = [d for d in todo if d in plans]  # one deleted since the scan: nothing to do
        check_plans(plans, store, LATE_WRITER_ADVICE if same else REBUILD_ADVICE)
        # an interrupted reindex (to this encoder or another) has written already: its
        # record stays pending whatever this check decides
        started = attempt > 0 or pending is not None
        check_fit(index, [plans[d] for d in todo], chunkers, started=started)
        if attempt == 0:
            if pending is not None and not pending.same_encoder(target):
                # said only once the checks passed: a refused reindex replaces nothing
                logger.warning(
                    "collection %r: an interrupted reindex to %s is replaced by one to %s",
                    store.collection,
                    pending.describe(),
                    target.describe(),
                )
            _write(store, stored or target, target)
        logger.info(
            "reindexing %d document(s) of %r with %s%s",
            len(todo),
            store.collection,
            target.describe(),
            "" if attempt == 0 else " (written by another encoder during the reindex)",
        )
        if not todo:
            break
        total += reencode(index, todo, plans, chunkers, show_progress)
    else:
        left = store.count(stale)
        if left:
            raise RuntimeError(
                f"collection {store.collection!r}: {left} chunk(s) were written by another "
                f"encoder during each of {_PASSES} reindex passes; stop the writers that use "
                "the old model and reindex again (the reindex stays pending until then)"
            )
    _write(store, target)
    # a writer of another encoder since the last pass (another process): refused as at open
    check_encoder_stamps(store, target)
    return total


#: Passes of :func:`reindex_collection` over documents not yet in the target encoder's
#: vectors (the first does the work; later ones catch concurrent writers' documents).
_PASSES = 3


def reencode(
    index: M3Index,
    todo: list[str],
    plans: Mapping[str, DocPlan],
    chunkers: Chunkers,
    show_progress: bool | None,
) -> int:
    """Re-encode and write ``todo`` in groups; a document changed or deleted since it was
    planned (by another writer) is skipped, not put back as planned. Returns how many were
    written."""
    store = index.store
    written = 0
    show = len(todo) > index.write_group if show_progress is None else show_progress
    with tqdm(total=len(todo), desc="reindex", unit="doc", disable=not show) as bar:
        for start in range(0, len(todo), index.write_group):
            group = [plans[d] for d in todo[start : start + index.write_group]]
            records = _with_writer_fields(_encode(index, group, chunkers), group)
            with index._write_lock:
                now = stored_versions(store, [p.doc_id for p in group])
                changed = {p.doc_id for p in group if now.get(p.doc_id) != p.versions()}
                if changed:
                    logger.info(
                        "reindex: %d document(s) changed or deleted by another writer since "
                        "planned; left as that writer wrote them",
                        len(changed),
                    )
                store.upsert(
                    [r for r in records if r.doc_id not in changed],
                    show_progress=False,
                    replace=True,
                )
            written += len(group) - len(changed)
            bar.update(len(group))
    return written


def stored_versions(
    store: M3Store, doc_ids: Sequence[str] | None
) -> dict[str, list[tuple[int, Any]]]:
    """:meth:`DocPlan.versions` of the stored documents ``doc_ids`` (``None``: every one), as
    they are now (absent: none)."""
    found: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    keys = [DOC_ID, CHUNK_INDEX, DOC_HASH]
    selector = None if doc_ids is None else documents_filter(list(doc_ids))
    for h in store._backend.scroll(selector, keys):
        found[str(h.payload.get(DOC_ID))].append(chunk_version(h.payload))
    return {d: sorted(v) for d, v in found.items()}


def chunk_version(payload: Mapping[str, Any]) -> tuple[int, Any]:
    """A stored chunk's ``(chunk_index, doc_hash)``: what tells a document's versions apart."""
    return int(payload.get(CHUNK_INDEX) or 0), payload.get(DOC_HASH)


class DocPlan:
    """One stored document: its chunks' payloads in order and how it was chunked."""

    def __init__(self, doc_id: str, chunks: list[dict[str, Any]]) -> None:
        self.doc_id = doc_id
        self.chunks = sorted(chunks, key=lambda p: int(p.get(CHUNK_INDEX) or 0))
        first = self.chunks[0]
        chunking = first.get(CHUNKING)
        self.late_node = chunking is None and len(self.chunks) == 1 and is_late_node(first)
        lone = len(self.chunks) == 1 and int(first.get(CHUNK_COUNT) or 1) == 1
        if chunking is None and lone and not self.late_node:
            chunking = {"kind": "whole"}  # written before chunkings were recorded
        self.chunking: dict[str, Any] | None = dict(chunking) if chunking else None
        self.text = "".join(str(p.get(PAGE_CONTENT, "")) for p in self.chunks)
        self.metadata = dict(first.get(METADATA) or {})
        self.doc_hash = first.get(DOC_HASH)
        # what its writer encoded, when not its stored text (read by _encode_whole; nodes
        # documents read each chunk's own)
        encoded = first.get(ENCODED_TEXT)
        self.encoded_text = None if encoded is None else str(encoded)

    def problem(self) -> str | None:
        kind = (self.chunking or {}).get("kind")
        if kind == "whole":
            return None if len(self.chunks) == 1 else "several chunks marked whole"
        if has_nodes(self):  # each chunk encoded alone: no tiling needed
            return nodes_problem(self)
        if kind is None:
            return LATE_NODE if self.late_node else UNRECORDED
        if any(p.get(ENCODED_TEXT) is not None for p in self.chunks):
            return (
                "chunks encoded from other texts than stored (redone for a whole document or "
                "nodes encoded alone only)"
            )
        if kind in ("late", "naive"):
            missing = self.missing_chunks()
            if missing:
                return missing
            pos = 0
            for p in self.chunks:
                if p.get(START) != pos or p.get(END) != pos + len(str(p.get(PAGE_CONTENT, ""))):
                    return "its chunks do not tile its text (a splitter left gaps)"
                pos = int(p[END])
            length = (self.chunking or {}).get(TEXT_LENGTH)
            if length is not None and length != pos:
                return (
                    f"text after its last chunk (characters {pos}-{length}) is in no chunk "
                    "(a splitter left it out), so its stored chunks do not hold its text"
                )
            return None
        signature = (self.chunking or {}).get("signature", kind)
        why = (self.chunking or {}).get("why")  # a writer's own reason, if it recorded one
        return f"chunked by {signature!r}, which reindex cannot redo" + (f" ({why})" if why else "")

    def missing_chunks(self) -> str | None:
        """Why a chunked document lacks chunks, if it does: a chunk deleted alone (or a write
        cut short) leaves its document incomplete (``add_texts`` writes it whole again), and
        its other chunks do not hold its text, even where they still tile a shorter one."""
        count = max(int(p.get(CHUNK_COUNT) or 1) for p in self.chunks)
        have = {int(p.get(CHUNK_INDEX) or 0) for p in self.chunks}
        gone = [i for i in range(count) if i not in have]
        if not gone:
            return None
        listed = ", ".join(str(i) for i in gone[:5]) + (" ..." if len(gone) > 5 else "")
        return (
            f"chunk{'s' if len(gone) > 1 else ''} {listed} of its {count} chunks "
            f"{'are' if len(gone) > 1 else 'is'} missing (deleted alone, or a write cut short), "
            "so its stored chunks do not hold its text"
        )

    def versions(self) -> list[tuple[int, Any]]:
        """``(chunk index, version)`` of each chunk as planned: another writer's change
        (chunks added, removed or rewritten) changes it; a document left with chunks of
        mixed versions (a write cut short) keeps its own mix."""
        return sorted(chunk_version(c) for c in self.chunks)

    def spans(self) -> list[tuple[int, int]]:
        return [(int(p[START]), int(p[END])) for p in self.chunks]

    def as_doc(self) -> _Doc:
        """The document as ``add_texts`` sees it (same id, version hash and chunking)."""
        from m3kit.store.index import _Doc

        return _Doc(self.doc_id, self.text, self.metadata, str(self.doc_hash), self.chunking or {})


def doc_plans(store: M3Store, doc_ids: Sequence[str]) -> dict[str, DocPlan]:
    """The stored chunks of ``doc_ids``, as one :class:`DocPlan` per document found."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keys = (*_DOC_KEYS, CHUNKING, CHUNK_ID, EXTRA, ENCODED_TEXT)
    for i in range(0, len(doc_ids), 256):
        for hit in store._backend.scroll(documents_filter(doc_ids[i : i + 256]), keys):
            found[str(hit.payload.get(DOC_ID))].append(hit.payload)
    return {d: DocPlan(d, found[d]) for d in doc_ids if found.get(d)}


def _with_writer_fields(records: list[ChunkRecord], group: Sequence[DocPlan]) -> list[ChunkRecord]:
    """The records with what their writers kept (``chunk_id``, ``extra``), as stored."""
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for p in group:
        for c in p.chunks:
            fields = {"chunk_id": c.get(CHUNK_ID), "extra": c.get(EXTRA)}
            fields = {k: v for k, v in fields.items() if v is not None}
            if fields:
                kept[p.doc_id, int(c.get(CHUNK_INDEX) or 0)] = fields
    return [
        dataclasses.replace(r, **kept[r.doc_id, r.chunk_index])
        if (r.doc_id, r.chunk_index) in kept
        else r
        for r in records
    ]


#: Why a document of several chunks without a recorded chunking is refused: how its chunks
#: were made is not known, and the writers that leave none make chunks a reindex cannot redo.
UNRECORDED = (
    "several chunks with no recorded chunking, so how their vectors were made is unknown: "
    "late-chunked nodes (LlamaIndex M3LateChunkingNodeParser, whose vectors were pooled from "
    "their document's text, which is not stored whole), nodes a LlamaIndex writer stored "
    "before m3kit recorded node chunking, chunks M3Index stored before it recorded chunking, "
    "or records written by M3Store.upsert without a chunking"
)

#: What to do about documents a reindex cannot rebuild (an encoder change).
REBUILD_ADVICE = (
    "Open the collection with the encoder that wrote it, delete them (M3Index.delete), "
    "reindex, then add them again; or index into a new collection"
)


#: The same, for a reindex with the encoder the collection records: the documents are a late
#: writer's (stamped by another encoder, which every open refuses) or unstamped ones.
LATE_WRITER_ADVICE = (
    "Those stamped with another encoder than the recorded one (a writer that kept its old "
    "encoder after a reindex) cannot be deleted through an open, which refuses them: delete "
    "them as below. Others: open the collection with this encoder without reindex=True, "
    "delete them (M3Index.delete), then add them again"
)


def refuse_foreign_points(store: M3Store) -> None:
    """Refuse a reindex of a collection holding points without m3kit's ``doc_id`` /
    ``doc_hash`` (:mod:`m3kit.store.foreign_points`): it cannot rebuild them, so they would
    keep the old encoder's vectors, searched with the new encoder's queries, under a record
    naming the new.

    Raises:
        ValueError: Such points are stored (nothing written).
    """
    if n := store.count(without_document()):
        raise ValueError(
            f"reindex cannot re-encode {n} point(s) of collection {store.collection!r} without "
            "m3kit's doc_id / doc_hash (written or rewritten in place by another program: "
            "qdrant-client, "
            "stock langchain-qdrant or LlamaIndex): they would keep the old encoder's vectors "
            "beside the new encoder's. Nothing was written. Delete them (a plain M3Store "
            f"opens the collection: {DELETE_FOREIGN}), run this open again, then add their "
            "documents through m3kit"
        )


def check_plans(plans: Mapping[str, DocPlan], store: M3Store, advice: str = REBUILD_ADVICE) -> None:
    """Refuse documents a reindex cannot rebuild (nothing written yet), ending with ``advice``
    and the call that deletes them from ``store``'s collection without opening it (which works where
    the opens ``advice`` names are refused too, :mod:`m3kit.store.unopened`).

    Raises:
        ValueError: One or more documents whose chunking cannot be redone, listed.
    """
    bad = [(d, p.problem()) for d, p in plans.items() if p.problem() is not None]
    if bad:
        listed = "; ".join(f"{d!r}: {why}" for d, why in bad[:5])
        raise ValueError(
            f"reindex cannot rebuild {len(bad)} stored document(s) ({listed}); nothing was "
            f"written. {advice}. Or delete them without opening the collection (where every "
            f"open is refused): {delete_call(store, [d for d, _ in bad])}, then run this "
            "open again (they are not re-encoded: add them again after, if wanted)"
        )


def _encode(
    index: M3Index,
    group: Sequence[DocPlan],
    chunkers: Chunkers,
) -> list[ChunkRecord]:
    """New records of a group of documents, made the way ``add_texts`` makes them."""
    by_config: dict[tuple[Any, ...], list[DocPlan]] = defaultdict(list)
    for p in group:
        by_config[chunking_key(p)].append(p)
    records: list[ChunkRecord] = []
    for key, plans in by_config.items():
        if key == ("whole",):
            records.extend(_encode_whole(index, plans))
            continue
        if key == (NODES_KIND,):
            records.extend(encode_nodes(index, plans))
            continue
        chunker, lookup = stored_chunker(index, key, chunkers)
        for batch in rounds(plans):
            lookup.spans = {p.text: p.spans() for p in batch}
            records.extend(index._records([p.as_doc() for p in batch], chunker, False)[0])
    return records


def _encode_whole(index: M3Index, plans: Sequence[DocPlan]) -> list[ChunkRecord]:
    """Records of whole documents, each encoded from what its writer encoded.

    A document whose writer encoded other text than it stored (``encoded_text``) is encoded
    from that text and stored with its own text, as its writer stores it. Each keeps its
    stored character positions (none for a chunk written without them, a LlamaIndex node
    without ``start_char_idx``: that writer's reads and identity checks see them).
    """
    docs = [
        p.as_doc()
        if p.encoded_text is None
        else dataclasses.replace(p.as_doc(), text=p.encoded_text)
        for p in plans
    ]
    records = index._records(docs, None, False)[0]
    by_id = {p.doc_id: p for p in plans}
    return [
        dataclasses.replace(
            r,
            text=p.text,
            start=p.chunks[0].get(START),
            end=p.chunks[0].get(END),
            encoded_text=p.encoded_text,
        )
        for r in records
        for p in (by_id[r.doc_id],)
    ]
