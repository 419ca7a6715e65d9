"""Delete a whole collection: what langchain-qdrant's ``force_recreate=True`` does before it
creates one again.

:meth:`M3Store.clear <m3kit.store.M3Store.clear>` deletes the points and keeps the collection
(its vectors' sizes, its m3kit record); a collection for another model (another dense size)
needs it gone.
"""

from __future__ import annotations

import logging
import os

from m3kit.errors import CollectionNotFoundError
from m3kit.store.connection import ConnectionSettings
from m3kit.store.group_journal import journals
from m3kit.store.opening import open_existing_backend
from m3kit.store.records import Backend
from m3kit.store.replace_journal import journal_path

__all__ = ["drop_collection"]

logger = logging.getLogger(__name__)


def drop_collection(
    location: str | os.PathLike[str] | None = None,
    *,
    collection: str,
    url: str | None = None,
    api_key: str | None = None,
    backend: Backend | str | None = None,
    connection: ConnectionSettings | None = None,
) -> bool:
    """Delete a collection: its points, vectors' schema, m3kit record and the journals beside
    it (a folder's interrupted writes, which would otherwise be finished in the new one).

    Args:
        location: The folder (``None`` / ``":memory:"``: nothing persists, so nothing to drop).
        collection: Its name.
        url: A Qdrant server instead of ``location``.
        api_key: The server's API key (default ``$QDRANT_API_KEY``).
        backend: ``"edge"`` or ``"client"`` (as :meth:`M3Store.open <m3kit.store.M3Store.open>`).
        connection: Server request settings.

    Returns:
        Whether there was such a collection.

    Raises:
        StoreConnectionError: Another store or process has it open (a folder), or the server
            refused.
        SchemaMismatchError: Its vectors are not an m3kit layout (delete it with
            qdrant-client). A collection whose vectors are one (a langchain-qdrant
            ``dense`` / ``sparse`` one included) is dropped, as langchain-qdrant's
            ``force_recreate`` drops whatever the name holds.

    Example:
        >>> import tempfile
        >>> drop_collection(tempfile.mkdtemp(), collection="none")
        False
    """
    if url is None and (location is None or os.fspath(location) == ":memory:"):
        return False
    try:
        impl, _, _ = open_existing_backend(
            location,
            collection=collection,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
        )
    except CollectionNotFoundError:
        return False
    sidecars = [p for p in (journal_path(impl), *journals(impl)) if p is not None]
    where = impl.where
    impl.drop()
    for path in sidecars:
        path.unlink(missing_ok=True)
    logger.info("dropped collection %r at %s", collection, where)
    return True
