"""The async methods shared by :class:`~llamaindex_m3.M3Embedding` and
:class:`~llamaindex_m3.M3SparseEmbedding`: the sync ones in a worker thread.

LlamaIndex's ``aget_text_embedding_batch`` runs every ``embed_batch_size`` batch at once,
each in its own thread: as many forward passes of up to ``max_batch_tokens`` at the same time
as there are batches. Here a batch call is the sync one in one worker thread, one forward pass
at a time, unless ``num_workers`` above 1 asks for LlamaIndex's concurrent batches (at most
that many at once).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from m3kit.encoder_inputs import check_text, check_texts

__all__ = ["ThreadedAsyncEmbedding"]


class ThreadedAsyncEmbedding:
    """Mixin, before LlamaIndex's (dense or sparse) embedding base: async = sync in a thread.

    Attributes:
        num_workers: The base's field; above 1, batches run concurrently as LlamaIndex's.
    """

    if TYPE_CHECKING:
        num_workers: int | None

        def _get_query_embedding(self, query: str) -> Any: ...

        def _get_text_embedding(self, text: str) -> Any: ...

        def _get_text_embeddings(self, texts: list[str]) -> list[Any]: ...

    async def _aget_query_embedding(self, query: str) -> Any:
        check_text(query, method="aget_query_embedding")
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Any:
        check_text(text, method="aget_text_embedding")
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Any]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Any]:
        """LlamaIndex's ``get_text_embedding_batch``, refusing what is no list of texts.

        Raises:
            TypeError: ``texts`` is a single string (LlamaIndex's loop would embed each of its
                characters) or holds a non-string (named by its position).
        """
        texts = check_texts(texts, method="get_text_embedding_batch")
        return super().get_text_embedding_batch(  # type: ignore[misc,no-any-return]
            texts, show_progress, **kwargs
        )

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Any]:
        """``get_text_embedding_batch`` in a worker thread: one forward pass at a time.

        ``num_workers`` above 1 asks for concurrent batches: LlamaIndex's, at most that many
        at once (keyword arguments go to the base's, which for the sparse base takes none).

        Raises:
            TypeError: As :meth:`get_text_embedding_batch`.
        """
        texts = check_texts(texts, method="aget_text_embedding_batch")
        if self.num_workers is not None and self.num_workers > 1:
            concurrent = super().aget_text_embedding_batch  # type: ignore[misc]
            return await concurrent(texts, show_progress, **kwargs)  # type: ignore[no-any-return]
        return await asyncio.to_thread(
            self.get_text_embedding_batch, texts, show_progress, **kwargs
        )
