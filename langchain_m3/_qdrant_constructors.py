"""The constructors of :class:`~langchain_m3.M3QdrantVectorStore`: ``QdrantVectorStore``'s, plus
``parent_id_key``, a check of late chunks' markers, and a client closed when a write fails.

``QdrantVectorStore.from_texts`` hands a keyword it does not know to ``QdrantClient`` (which
ignores it in local mode), and its ``from_documents`` goes through ``from_texts``, which sees
texts and metadata only; these set :attr:`parent_id_key` on the store before it writes, and
refuse a splitter chunk that lost its marker before anything is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore

from langchain_m3._parents import check_key
from langchain_m3.splitter import refuse_lost_markers
from m3kit.store.cancelling import opened_in_worker

__all__ = ["ParentKeyConstructors"]

_S = TypeVar("_S", bound="ParentKeyConstructors")


class ParentKeyConstructors(QdrantVectorStore):
    """``QdrantVectorStore``'s constructors, taking ``parent_id_key=``."""

    parent_id_key: str | None = None

    @classmethod
    def from_texts(  # type: ignore[override]  # QdrantVectorStore.from_texts + parent_id_key
        cls: type[_S],
        texts: list[str],
        embedding: Any = None,
        metadatas: list[dict[Any, Any]] | None = None,
        ids: Sequence[str | int] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> _S:
        """``QdrantVectorStore.from_texts``; ``parent_id_key=`` sets :attr:`parent_id_key`
        on the store before the texts are written (``QdrantVectorStore`` hands a keyword it
        does not know to ``QdrantClient``, which ignores it in local mode).

        A write that fails (or is cancelled: :meth:`afrom_texts`) closes the client the store
        was built with before raising: no caller holds it (a local ``path=`` stayed locked).

        Raises:
            TypeError: ``parent_id_key`` is not a string.
            ValueError: As :meth:`add_texts`.
        """
        key = kwargs.pop("parent_id_key", None)
        if key is not None:
            check_key(key)  # before the collection is created
        store = super().from_texts([], embedding, None, None, *args, **kwargs)
        assert isinstance(store, cls)
        store.parent_id_key = key
        try:
            store.add_texts(texts, metadatas, ids, kwargs.get("batch_size", 64))
        except BaseException:
            store.client.close()
            raise
        return store

    @classmethod
    def from_existing_collection(  # type: ignore[override]  # + parent_id_key
        cls: type[_S], collection_name: str, *args: Any, **kwargs: Any
    ) -> _S:
        """``QdrantVectorStore.from_existing_collection``; ``parent_id_key=`` sets
        :attr:`parent_id_key` on the store (``QdrantVectorStore`` hands a keyword it does not
        know to ``QdrantClient``, which ignores it in local mode).

        Raises:
            TypeError: ``parent_id_key`` is not a string.
            ValueError: ``parent_id_key`` cannot be addressed in a payload filter.
        """
        key = kwargs.pop("parent_id_key", None)
        if key is not None:
            check_key(key)  # before the client is opened
        store = super().from_existing_collection(collection_name, *args, **kwargs)
        assert isinstance(store, cls)
        store.parent_id_key = key
        return store

    @classmethod
    def from_documents(cls: type[_S], documents: list[Document], *args: Any, **kwargs: Any) -> _S:
        """``QdrantVectorStore.from_documents``, refusing a splitter chunk that lost its marker
        (it goes through ``from_texts``, which sees texts and metadata only).

        Raises:
            ValueError: As :meth:`add_documents`.
        """
        refuse_lost_markers(documents)
        return super().from_documents(documents, *args, **kwargs)

    @classmethod
    async def afrom_documents(
        cls: type[_S], documents: list[Document], *args: Any, **kwargs: Any
    ) -> _S:
        """Async :meth:`from_documents` (through :meth:`afrom_texts`)."""
        refuse_lost_markers(documents)
        return await super().afrom_documents(documents, *args, **kwargs)

    @classmethod
    async def afrom_texts(  # type: ignore[override]  # as QdrantVectorStore.from_texts
        cls: type[_S],
        texts: list[str],
        embedding: Any,
        metadatas: list[dict[Any, Any]] | None = None,
        **kwargs: Any,
    ) -> _S:
        """``from_texts`` in a worker thread, stopped when cancelled as :meth:`aadd_texts` is;
        the client of a store built by then is closed (no caller holds it). LangChain's
        default ran it in a thread that went on writing after the cancelled call had raised."""
        return await opened_in_worker(
            _close_client, cls.from_texts, texts, embedding, metadatas, **kwargs
        )


def _close_client(store: QdrantVectorStore) -> None:
    store.client.close()
