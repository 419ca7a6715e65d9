"""The documents :func:`~m3kit.distributed.ray_pipeline.index_with_ray` checked and queued
for Ray's actors (split from :mod:`m3kit.distributed.ray_pipeline`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.store import M3Index

__all__ = ["DocumentQueue"]


class DocumentQueue:
    """What :func:`~m3kit.distributed.ray_pipeline.index_with_ray` checked, and the documents
    to encode, held by Ray.

    Every document is checked before the first is encoded (so a refused one leaves the
    collection untouched), but this process keeps only each document's id and version: the
    documents to encode go to Ray's object store (which spills to disk) in blocks of
    ``block`` documents, one actor call each.
    """

    def __init__(self, ray: Any, block: int) -> None:
        self.ray = ray
        self.block = block
        self.order: list[str] = []  # every document's id, input order
        self.versions: dict[str, str] = {}  # doc_id -> doc_hash of every distinct document
        self.blocks: list[Any] = []  # object refs of Arrow tables of documents to encode
        self.todo = 0
        self.queued: list[str] = []  # ids of the documents to encode, queue order
        self._rows: list[dict[str, str]] = []
        self.moves: dict[str, Any] = {}  # documents whose metadata alone changed

    def add(
        self,
        index: M3Index,
        chunker: Any,
        first: int,
        rows: tuple[list[str], list[dict[str, Any]], list[str]],
        truncation: Any,
    ) -> None:
        """Check a group of documents (``(texts, metadatas, doc_ids)`` of the input's documents
        from position ``first``) and queue it.

        Raises:
            ValueError: What :meth:`M3Index.add_texts` refuses (an id given twice with
                different content, here also across groups; metadata that is not plain
                JSON, or a value a payload index of the collection would hide...), naming
                positions in the whole input.
            TruncationError: A whole document longer than the model takes, with
                ``truncation="error"``, before any document is encoded.
        """
        from m3kit.fingerprint import chunking_signature
        from m3kit.store.index_inputs import versioned_documents
        from m3kit.store.index_writes import refuse_hidden_metadata, refuse_truncated
        from m3kit.store.metadata_updates import metadata_only, unstored

        texts, metas, ids = rows
        order, docs = versioned_documents(texts, metas, ids, chunker, first=first)
        self.order.extend(order)
        new = []
        for d in docs:
            seen = self.versions.get(d.doc_id)
            if seen is None:  # not in an earlier group
                self.versions[d.doc_id] = d.doc_hash
                new.append(d)
            elif seen != d.doc_hash:
                raise ValueError(f"doc_id {d.doc_id!r} is given twice with different content")
        stored = index.store.stored_versions([d.doc_id for d in new]) if new else {}
        # a document whose metadata alone changed keeps its vectors: updated in place once
        # every group passed its checks and the encoded documents are written
        waiting = unstored(new, stored)
        # (an edit of a document another writer stored with extras, a LlamaIndex document's
        # hidden keys and templates, keeps them: unstored() gives it the stored ones)
        moves, todo = metadata_only(index, waiting, chunking_signature(chunker), stored)
        if chunker is None:
            refuse_truncated(index.encoder, todo, [(0, len(todo))], truncation)
        refuse_hidden_metadata(index.store, todo)
        self.moves.update(moves)
        for d in todo:
            self._rows.append(
                {
                    "doc_id": d.doc_id,
                    "text": d.text,
                    "metadata": json.dumps(dict(d.metadata)),
                    "doc_hash": d.doc_hash,
                    "chunking": json.dumps(dict(d.chunking)),
                    "extra": json.dumps(None if d.extra is None else dict(d.extra)),
                }
            )
            self.todo += 1
            self.queued.append(d.doc_id)
            if len(self._rows) == self.block:
                self._put()

    def unwritten(self, written: set[str], shown: int = 5) -> str:
        """The queued documents not in ``written``, for an error: their count and the first
        ``shown`` ids.

        >>> q = DocumentQueue(None, 1)
        >>> q.queued = ["a", "b", "c"]
        >>> q.unwritten({"b"})
        "2 document(s) were not written: ['a', 'c']"
        """
        left = [i for i in self.queued if i not in written]
        more = f" and {len(left) - shown} more" if len(left) > shown else ""
        return f"{len(left)} document(s) were not written: {left[:shown]}{more}"

    def dataset(self) -> Any:
        """The queued documents as a Ray Dataset (one block per actor call)."""
        if self._rows:
            self._put()
        return self.ray.data.from_arrow_refs(self.blocks)

    def _put(self) -> None:
        import pyarrow as pa

        if not self.ray.is_initialized():
            self.ray.init()
        self.blocks.append(self.ray.put(pa.Table.from_pylist(self._rows)))
        self._rows = []
