"""The write half of :class:`~m3kit.store.M3Index`: incremental adds and deletes.

Split from :mod:`m3kit.store.index`: :class:`IndexWrites` is a base class of ``M3Index``
holding :meth:`~m3kit.store.M3Index.pending`, :meth:`~m3kit.store.M3Index.write_records`,
:meth:`~m3kit.store.M3Index.add_texts`, :meth:`~m3kit.store.M3Index.aadd_texts` and
:meth:`~m3kit.store.M3Index.delete`; ``M3Index`` sets the attributes they read and keeps
``_records`` (the encoding step, :func:`~m3kit.store.documents.build_records`) and
``check_encoder``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tqdm.auto import tqdm

from m3kit.fingerprint import chunking_signature
from m3kit.store.cancelling import holding, in_worker, stop_if_cancelled
from m3kit.store.documents import _Chunker, _Doc, check_chunker_encoder
from m3kit.store.holder import check_held
from m3kit.store.index_inputs import versioned_documents
from m3kit.store.metadata_updates import metadata_only, unstored, update_in_place
from m3kit.store.records import ChunkRecord

if TYPE_CHECKING:
    import threading

    from m3kit.encoder import M3Encoder, Truncation
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.index import M3Index
    from m3kit.store.store import M3Store
    from m3kit.store.store_reads import StoredVersion

__all__ = [
    "WRITE_GROUP_CHARS",
    "IndexWrites",
    "refuse_hidden_metadata",
    "refuse_truncated",
    "write_group_bounds",
]


#: Characters of text that close a group of :meth:`IndexWrites.add_texts` before it has
#: ``write_group`` documents: a group's vectors are held until written, ColBERT's one per
#: token (4 KiB a token at BGE-M3's 1,024 dimensions), so 64 long documents held gigabytes;
#: about 32k tokens, 128 MiB of ColBERT vectors at most, beside a document longer alone.
WRITE_GROUP_CHARS = 131_072


def write_group_bounds(lengths: Sequence[int], most: int, chars: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive groups of at most ``most`` items, each closed before
    the item that would take it past ``chars`` (a longer item alone: one item at least).

    >>> write_group_bounds([10, 10, 50, 5], most=3, chars=25)
    [(0, 2), (2, 3), (3, 4)]
    >>> write_group_bounds([1] * 5, most=2, chars=100)
    [(0, 2), (2, 4), (4, 5)]
    """
    out: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, length in enumerate(lengths):
        if i > start and (i - start >= most or size + length > chars):
            out.append((start, i))
            start, size = i, 0
        size += length
    if start < len(lengths):
        out.append((start, len(lengths)))
    return out


class IndexWrites:
    """The write methods of :class:`~m3kit.store.M3Index` (its base; ``M3Index`` sets these).

    Attributes:
        store: Where the chunks are written.
        write_group: Documents encoded and written per step of :meth:`add_texts` (fewer when
            they hold more than :data:`WRITE_GROUP_CHARS` characters).
    """

    store: M3Store
    fingerprint: EncoderFingerprint
    write_group: int
    _write_lock: threading.RLock

    if TYPE_CHECKING:  # defined by M3Index
        encoder: M3Encoder

        def check_encoder(self) -> None: ...

        def _records(
            self,
            docs: Sequence[_Doc],
            chunker: _Chunker | None,
            show_progress: bool | None,
            truncation: Truncation | str = "warn",
        ) -> tuple[list[ChunkRecord], list[str]]: ...

    def pending(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        doc_ids: Sequence[str | int] | None = None,
        *,
        chunker: _Chunker | None = None,
    ) -> tuple[list[str], list[_Doc]]:
        """Ids of the documents (input order) and those not yet stored at their version.

        What :meth:`add_texts` writes (those whose metadata alone changed are updated in
        place, the others encoded: :mod:`m3kit.store.metadata_updates`); the Ray pipeline
        (:mod:`m3kit.distributed`) encodes them elsewhere and writes them with
        :meth:`write_records`.
        """
        order, todo, _ = self._unstored(texts, metadatas, doc_ids, chunker)
        return order, todo

    def _unstored(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        doc_ids: Sequence[str | int] | None,
        chunker: _Chunker | None,
        extras: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> tuple[list[str], list[_Doc], dict[str, StoredVersion]]:
        """:meth:`pending`, with the stored versions its one lookup found (what
        :func:`~m3kit.store.metadata_updates.metadata_only` compares with)."""
        order, docs = versioned_documents(texts, metadatas, doc_ids, chunker, extras=extras)
        if not docs:
            return order, [], {}
        # the stored extra serves only documents that bring none (metadata_updates)
        keep = any(d.extra is None for d in docs)
        stored = self.store.stored_versions([d.doc_id for d in docs], extra=keep)
        return order, unstored(docs, stored), stored

    def write_records(self, records: Sequence[ChunkRecord], empty: Sequence[str] = ()) -> None:
        """Write encoded chunks (replacing older versions of their documents).

        Raises:
            FingerprintMismatchError: Another encoder's index took the store over, or this
                index's encoder changed (:meth:`~m3kit.store.M3Index.check_encoder`).
        """
        with holding(self._write_lock):  # an aadd_texts cancelled while it waited: not done
            self.check_encoder()  # under the lock: no other index takes the store meanwhile
            if records:
                self.store.upsert(records, show_progress=False, replace=True)
            if empty:
                self.store.delete_documents(empty)

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        doc_ids: Sequence[str | int] | None = None,
        *,
        chunker: _Chunker | None = None,
        late_chunker: _Chunker | None = None,
        truncation: Truncation | str = "warn",
        show_progress: bool | None = None,
        extras: Sequence[Mapping[str, Any] | None] | None = None,
        on_encode: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        """Index documents; unchanged ones are skipped, changed ones replaced.

        Args:
            texts: One text per document.
            metadatas: One metadata mapping per text (JSON-serialisable).
            doc_ids: One id per text, a str or an int (stored as its digits: ``7`` is the id
                ``"7"``; other types are refused): a stored document with the same id is
                replaced. Default:
                :func:`content_doc_id` of the text and metadata (a changed text or metadata
                is then a new document; the old one stays until deleted).
            chunker: How to cut each document into chunks (nothing is dropped):
                :class:`m3kit.chunking.NaiveChunker` (each chunk encoded alone),
                :class:`m3kit.late_chunking.LateChunker` (chunks pooled from the whole
                document), or anything with ``chunk(texts) -> list[list[Chunk]]`` and a
                ``signature``. Default: one chunk per text, cut at the encoder's
                ``max_length`` (see ``truncation``).
            late_chunker: The former name of ``chunker`` (still accepted).
            truncation: Without a chunker, a text longer than the model's window is
                ``"warn"``: cut, with a warning naming the document and how many tokens were
                dropped; ``"error"``: :class:`~m3kit.errors.TruncationError`.
            show_progress: tqdm bars for encoding and writing.
            extras: One JSON mapping (or ``None``) per text that its writer keeps with each
                of its chunks (:attr:`ChunkRecord.extra`, returned as :attr:`Hit.extra`:
                an adapter's settings of the object it stored, e.g. a LlamaIndex document's
                hidden metadata keys), part of the document's version: a change re-encodes it.
            on_encode: Called with the texts of each group of documents just before it is
                encoded (never for documents skipped or updated in place): an adapter's
                events, e.g. LlamaIndex's embedding event that ``TokenCountingHandler`` counts.

        Returns:
            The document id of each text, in input order (what :meth:`delete` takes and
            :attr:`Hit.doc_id` holds).
        """
        if chunker is not None and late_chunker is not None:
            raise TypeError("give chunker= or late_chunker= (its former name), not both")
        chunker = chunker if chunker is not None else late_chunker
        self.check_encoder()  # before encoding anything
        order, todo, stored = self._unstored(texts, metadatas, doc_ids, chunker, extras)
        # a document whose metadata alone changed keeps its vectors: updated in place, after
        # the documents encoded (one of those refused: neither is written)
        index = cast("M3Index", self)
        moves, todo = metadata_only(index, todo, chunking_signature(chunker), stored)
        if not todo:
            update_in_place(index, moves)
            return order
        if chunker is not None:  # (before on_encode: nothing reported is refused unencoded)
            check_chunker_encoder(self.encoder, chunker)
        # Encode and write in groups of documents, so an interrupted run keeps what it wrote
        # (the next run skips those documents) and memory stays bounded on large jobs.
        bounds = write_group_bounds(
            [len(d.text) for d in todo], self.write_group, WRITE_GROUP_CHARS
        )
        if len(bounds) > 1:  # before any is written (one group is checked before its write)
            if chunker is None:
                refuse_truncated(self.encoder, todo, bounds, truncation)
            refuse_hidden_metadata(self.store, todo)
        show = len(todo) > self.write_group if show_progress is None else show_progress
        with tqdm(total=len(todo), desc="index", unit="doc", disable=not show) as bar:
            for start, stop in bounds:
                group = todo[start:stop]
                stop_if_cancelled()  # an aadd_texts cancelled: nothing more is encoded
                if on_encode is not None:
                    on_encode([d.text for d in group])
                records, empty = self._records(group, chunker, False, truncation)
                self.write_records(records, empty)  # ... nor written (checked under the lock)
                bar.update(len(group))
        update_in_place(index, moves)
        return order

    async def aadd_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        doc_ids: Sequence[str | int] | None = None,
        *,
        chunker: _Chunker | None = None,
        late_chunker: _Chunker | None = None,
        truncation: Truncation | str = "warn",
        show_progress: bool | None = None,
        extras: Sequence[Mapping[str, Any] | None] | None = None,
        on_encode: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        """:meth:`add_texts` in a worker thread.

        Cancelled (``task.cancel()``, an ``asyncio.wait_for`` timeout), it stops before the
        next group of documents it would write and raises only once stopped, so nothing more
        is written after: the groups written before stay, and the same call again writes the
        rest (:mod:`m3kit.store.cancelling`).
        """
        return await in_worker(
            self.add_texts,
            texts,
            metadatas,
            doc_ids,
            chunker=chunker,
            late_chunker=late_chunker,
            truncation=truncation,
            show_progress=show_progress,
            extras=extras,
            on_encode=on_encode,
        )

    def delete(self, doc_ids: Sequence[str | int]) -> None:
        """Delete every chunk of these documents (ids as :meth:`add_texts` takes them).

        Raises:
            TypeError: ``doc_ids`` is one string (give ``[doc_id]``), or holds an id that is
                neither a str nor an int.
            FingerprintMismatchError: Another encoder's index took the store over (see
                :meth:`~m3kit.store.M3Index.check_encoder`): open a new index on it.
        """
        with holding(self._write_lock):  # a cancelled async delete that waited: not done
            check_held(self.store, self.fingerprint)  # no vectors: the encoder may have changed
            self.store.delete_documents(doc_ids)


def refuse_truncated(
    encoder: M3Encoder,
    todo: Sequence[_Doc],
    bounds: Sequence[tuple[int, int]],
    truncation: Truncation | str,
) -> None:
    """Raise :class:`~m3kit.errors.TruncationError` for a document longer than the model takes
    (``truncation="error"``, no chunker) before any is written: the length was checked as each
    group (``bounds``) was encoded, after the earlier groups were stored."""
    from m3kit.chunking import document_token_ids  # late: imports the encoder (torch)
    from m3kit.encoder import Truncation

    if Truncation(truncation) is not Truncation.ERROR:
        return
    for start, stop in bounds:  # (token ids of one group at once)
        group = todo[start:stop]
        names = [d.doc_id for d in group]
        document_token_ids(encoder, [d.text for d in group], names, truncation="error")


def refuse_hidden_metadata(store: M3Store, todo: Sequence[_Doc]) -> None:
    """Refuse, before any of ``todo`` is encoded, a metadata value a payload index of the
    collection would hide (:meth:`M3Store.refuse_hidden_values`): each write checked only its
    own group, after the earlier groups were stored."""
    store.refuse_hidden_values((f"metadata of document {d.doc_id!r}", d.metadata) for d in todo)
