"""LlamaIndex's callback and instrumentation events around the model work m3kit does itself.

LlamaIndex reports embedding and reranking as events (``CBEventType.EMBEDDING`` /
``RERANKING`` to a ``CallbackManager``'s handlers, ``EmbeddingStartEvent`` / ``ReRankStartEvent``
... to the instrumentation dispatcher): ``TokenCountingHandler``, ``LlamaDebugHandler`` and
tracing integrations see a query engine's steps through them. Its own classes fire them inside
``BaseEmbedding`` and each postprocessor; :class:`~llamaindex_m3.M3Retriever`, the late-chunking
node parser and :class:`~llamaindex_m3.M3Reranker` run the model through m3kit's core instead,
so they fire the same events here, with the same payloads, except that an embedding event's
``EMBEDDINGS`` are empty: these calls store or search with the vectors of three heads and never
hold them as one list of floats per text (a handler that counts or shows the texts, as
``TokenCountingHandler`` does, sees them all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import NodeWithScore

__all__ = ["embedding_event", "embedding_reports", "encoder_payload", "rerank_event"]

dispatcher = get_dispatcher(__name__)


def encoder_payload(model_name: str | None) -> dict[str, Any]:
    """What an embedding event names as its model (``SERIALIZED``, ``model_dict``).

    >>> encoder_payload("BAAI/bge-m3")
    {'class_name': 'M3Encoder', 'model_name': 'BAAI/bge-m3'}
    """
    return {"class_name": "M3Encoder", "model_name": model_name}


@contextmanager
def embedding_event(
    callback_manager: CallbackManager, model: dict[str, Any]
) -> Iterator[Callable[[Sequence[str]], None]]:
    """An embedding event around a block that encodes texts; the block reports them (each
    call adds texts).

    As ``BaseEmbedding.get_text_embedding_batch``: ``EmbeddingStartEvent`` and the
    ``EMBEDDING`` callback start (payload ``SERIALIZED``: ``model``), then at the end the
    ``CHUNKS`` (the texts reported) and ``EMBEDDINGS`` (empty, see above) and
    ``EmbeddingEndEvent``. A block that raises ends the callback event with the exception, as
    LlamaIndex's own do, and fires no end event.

    >>> from llama_index.core.callbacks import TokenCountingHandler
    >>> counter = TokenCountingHandler(tokenizer=str.split)
    >>> with embedding_event(CallbackManager([counter]), {"model_name": "m"}) as report:
    ...     report(["two words", "three more words"])
    >>> counter.total_embedding_token_count
    5
    """
    dispatcher.event(EmbeddingStartEvent(model_dict=model))
    chunks: list[str] = []
    embeddings: list[list[float]] = []
    with callback_manager.event(
        CBEventType.EMBEDDING, payload={EventPayload.SERIALIZED: model}
    ) as event:
        yield chunks.extend
        event.on_end(payload={EventPayload.CHUNKS: chunks, EventPayload.EMBEDDINGS: embeddings})
    dispatcher.event(EmbeddingEndEvent(chunks=chunks, embeddings=embeddings))


@contextmanager
def embedding_reports(
    callback_manager: CallbackManager, model: dict[str, Any]
) -> Iterator[Callable[[Sequence[str]], None]]:
    """One :func:`embedding_event` per group a write encodes, as
    ``BaseEmbedding.get_text_embedding_batch`` fires one per batch: each report (just before
    a group's texts are encoded) ends the event of the group before and starts its own; the
    block's end ends the last, a block that raises ends it with the exception. A block that
    reports nothing (every document stored unchanged) fires none; a group encoded before a
    failure keeps its counted texts.

    >>> from llama_index.core.callbacks import TokenCountingHandler
    >>> counter = TokenCountingHandler(tokenizer=str.split)
    >>> with embedding_reports(CallbackManager([counter]), {"model_name": "m"}) as report:
    ...     pass
    >>> with embedding_reports(CallbackManager([counter]), {"model_name": "m"}) as report:
    ...     report(["two words"])
    ...     report(["three more words"])
    >>> counter.total_embedding_token_count, len(counter.embedding_token_counts)
    (5, 2)
    """
    open_event: list[ExitStack] = []

    def report(texts: Sequence[str]) -> None:
        if open_event:
            open_event.pop().close()
        event = ExitStack()
        event.enter_context(embedding_event(callback_manager, model))(texts)
        open_event.append(event)

    try:
        yield report
    except BaseException as e:
        if open_event:
            open_event.pop().__exit__(type(e), e, e.__traceback__)
        raise
    if open_event:
        open_event.pop().close()


@contextmanager
def rerank_event(
    callback_manager: CallbackManager,
    nodes: list[NodeWithScore],
    query: str,
    top_n: int,
    model_name: str,
) -> Iterator[Callable[[list[NodeWithScore]], None]]:
    """A reranking event around a block that reranks ``nodes``; the block reports the result.

    As LlamaIndex's rerankers: ``ReRankStartEvent`` and the ``RERANKING`` callback start
    (``NODES``, ``MODEL_NAME``, ``QUERY_STR``, ``TOP_K``), then the reranked ``NODES`` and
    ``ReRankEndEvent``.
    """
    dispatcher.event(ReRankStartEvent(query=query, nodes=nodes, top_n=top_n, model_name=model_name))
    result: list[NodeWithScore] = []
    with callback_manager.event(
        CBEventType.RERANKING,
        payload={
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: top_n,
        },
    ) as event:
        yield result.extend
        event.on_end(payload={EventPayload.NODES: result})
    dispatcher.event(ReRankEndEvent(nodes=result))
