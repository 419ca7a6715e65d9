"""Deleting documents from a collection that cannot be opened (a way out, not a way in).

A collection can be left in a state no open settles: a document that a reindex cannot rebuild
(a custom chunker) on each side of a sparse cut change, one written after the change with the
new cut and one written late by a writer still on the old cut, makes a plain open refuse it
(chunks of another cut, :mod:`m3kit.store.cut_stamps`) and ``reindex=True`` with either cut
refuse it (a document it cannot rebuild, :func:`m3kit.store.reindex.check_plans`).
:meth:`StoreUnopened.delete_documents_unopened` (``M3Store.delete_documents_unopened``) opens
the existing collection with the vectors it holds, without settling its sparse cut or
checking its encoder, deletes the named documents through :meth:`M3Store.delete_documents
<m3kit.store.M3Store.delete_documents>` and closes it; the refusals name the call with the
documents' ids (:func:`delete_call`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from m3kit.store.connection import ConnectionSettings, with_timeout
from m3kit.store.filters import distinct_doc_ids, documents_filter
from m3kit.store.opening import open_existing_backend
from m3kit.store.records import Backend
from m3kit.store.schema import DOC_ID, check_collection_name

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = ["StoreUnopened", "delete_call", "delete_way_out"]

_DOC_BATCH = 256  # documents per lookup filter
#: Ids written into a suggested call, at most (the rest are counted).
_CALL_IDS = 20


class StoreUnopened:
    """The class method of :class:`~m3kit.store.M3Store` that works without opening it (its
    base)."""

    @classmethod
    def delete_documents_unopened(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        collection: str,
        doc_ids: Iterable[str | int],
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        timeout: int | None = None,
        connection: ConnectionSettings | None = None,
    ) -> int:
        """Delete every chunk of these documents from a collection that cannot be opened.

        The way out of a collection that :meth:`open` and ``M3Index.open`` (with or without
        ``reindex=True``) refuse, e.g. for documents a reindex cannot rebuild written with
        two sparse cuts; the refusals name this call with the documents' ids. The existing
        collection is opened with the vectors it holds (none is created), its sparse cut and
        encoder are not checked, the documents are deleted as :meth:`delete_documents`
        deletes them (the collection's record is left as it is), and it is closed. Then take
        the refusal's next step (open it again, or reindex); add the documents again after,
        if they are wanted.

        Args:
            location: The folder the collection is stored in (as :meth:`open` takes it).
            collection: Collection name.
            doc_ids: The documents to delete (a str, or an int as its digits); every one must
                be stored.
            url: Qdrant server URL (implies ``Backend.CLIENT``).
            api_key: Server API key; default: the ``QDRANT_API_KEY`` environment variable.
            backend: ``Backend.EDGE`` or ``Backend.CLIENT``, as for :meth:`open`.
            timeout: Server request timeout in seconds (as :meth:`open` takes it).
            connection: Qdrant server only: request timeout and request size limit, as
                :meth:`open` takes them.

        Returns:
            The number of chunks deleted.

        Raises:
            CollectionNotFoundError: There is no such collection.
            ValueError: ``doc_ids`` is empty, or names documents the collection does not
                hold (named; nothing is deleted then).
            TypeError: ``doc_ids`` is a single string, or holds an id that is neither a str
                nor an int.
            SchemaMismatchError: The collection's vectors are not an m3kit layout.
            StoreConnectionError: The server cannot be reached or refuses the request.
        """
        ids = distinct_doc_ids(doc_ids, "doc_ids")
        if not ids:
            raise ValueError("doc_ids is empty: name the documents to delete")
        check_collection_name(collection)
        documents_filter(ids)  # an id no document can have is refused before opening
        impl, kind, schema = open_existing_backend(
            location,
            collection=collection,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=with_timeout(connection, timeout),
        )
        # (cls is M3Store or a subclass: this class is only its base)
        store: M3Store = cls(impl, schema, kind=kind)  # type: ignore[call-arg,assignment]
        try:
            found = _chunks_by_document(store, ids)
            missing = [d for d in ids if d not in found]
            if missing:
                raise ValueError(
                    f"doc_ids not found in collection {collection!r}: {missing[:_CALL_IDS]}"
                    + (f" and {len(missing) - _CALL_IDS} more" if len(missing) > _CALL_IDS else "")
                    + "; nothing was deleted"
                )
            store.delete_documents(ids)
        finally:
            store.close()
        return sum(found.values())


def _chunks_by_document(store: M3Store, doc_ids: Sequence[str]) -> dict[str, int]:
    """``{doc_id: how many chunks it has}`` of the stored documents among ``doc_ids``."""
    found: dict[str, int] = {}
    for i in range(0, len(doc_ids), _DOC_BATCH):
        for hit in store._backend.scroll(documents_filter(doc_ids[i : i + _DOC_BATCH]), [DOC_ID]):
            doc_id = str(hit.payload.get(DOC_ID))
            found[doc_id] = found.get(doc_id, 0) + 1
    return found


def delete_call(store: M3Store, doc_ids: Sequence[str]) -> str:
    """The call that deletes ``doc_ids`` (the first few, the rest counted) from ``store``'s
    collection, for a refusal's message: :meth:`~StoreUnopened.delete_documents_unopened`
    with the folder or URL and the engine the store was opened with, so that it works as
    pasted (a server's API key is read from ``QDRANT_API_KEY`` unless given); a temporary
    collection, which no other call can open, is named as its store's
    :meth:`~m3kit.store.M3Store.delete_documents`.
    """
    shown = list(doc_ids[:_CALL_IDS])
    more = len(doc_ids) - len(shown)
    where = store._backend.reopen
    if where is None:
        call = f"store.delete_documents({shown!r}) (the M3Store holding this temporary collection)"
    else:
        call = (
            f"M3Store.delete_documents_unopened({where}, collection={store.collection!r}, "
            f"doc_ids={shown!r})"
        )
    return call + (f" (and {more} more ids)" if more else "")


def delete_way_out(store: M3Store, doc_ids: Sequence[str]) -> str:
    """The last way out a refusal names, after ``reindex=True`` (which a document reindex
    cannot rebuild makes refuse too): deleting ``doc_ids`` without opening the collection
    (:func:`delete_call`), then opening it again."""
    return (
        "Or, where that is refused (documents reindex cannot rebuild), delete those documents "
        f"without opening the collection: {delete_call(store, doc_ids)}, then open it again "
        "(add them again after, if wanted)"
    )
