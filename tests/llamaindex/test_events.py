"""LlamaIndex's callback and instrumentation events fire where m3kit runs the model itself.

``M3Retriever.retrieve`` (its query encoding), ``M3LateChunkingNodeParser`` (documents encoded
whole) and ``M3Reranker`` fired none: a ``TokenCountingHandler`` counted 0 embedding tokens and
a query engine's trace showed no reranking step, where LlamaIndex's own classes report them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.callbacks import (
    CallbackManager,
    CBEventType,
    EventPayload,
    LlamaDebugHandler,
    TokenCountingHandler,
)
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import Field

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Reranker, M3Retriever
from m3kit import M3Encoder
from m3kit.late_chunking import LateChunker
from m3kit.testing import SAMPLE_TEXTS


class _Seen(BaseEventHandler):
    """Records the instrumentation events dispatched (by class name, with the event)."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Seen"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def handlers() -> Iterator[tuple[TokenCountingHandler, LlamaDebugHandler, list[Any]]]:
    seen = _Seen()
    root = get_dispatcher()
    root.add_event_handler(seen)
    try:
        yield (
            TokenCountingHandler(tokenizer=str.split),
            LlamaDebugHandler(print_trace_on_end=False),
            seen.events,
        )
    finally:
        root.event_handlers.remove(seen)


def _kinds(events: list[Any]) -> list[str]:
    return [e.class_name() for e in events]


def test_retrieve_reports_its_query_encoding(tiny_encoder: M3Encoder, handlers: Any) -> None:
    counter, debug, seen = handlers
    manager = CallbackManager([counter, debug])
    with M3Retriever.open(M3Embedding.from_encoder(tiny_encoder)) as r:
        r.add_documents([Document(text=t) for t in SAMPLE_TEXTS[:3]])
        r.callback_manager = manager
        seen.clear()
        r.retrieve("where is the capital")
    assert counter.total_embedding_token_count == 4  # "where is the capital"
    (start, end) = debug.get_event_pairs(CBEventType.EMBEDDING)[0]
    assert start.payload[EventPayload.SERIALIZED]["class_name"] == "M3Encoder"
    assert end.payload[EventPayload.CHUNKS] == ["where is the capital"]
    kinds = _kinds(seen)
    assert kinds.index("EmbeddingStartEvent") < kinds.index("EmbeddingEndEvent")
    assert {"RetrievalStartEvent", "RetrievalEndEvent"} <= set(kinds)


def test_late_chunking_parser_reports_the_documents_it_encodes(
    tiny_encoder: M3Encoder, handlers: Any
) -> None:
    counter, debug, seen = handlers
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=8)
    parser.callback_manager = CallbackManager([counter, debug])
    docs = [Document(text=SAMPLE_TEXTS[0]), Document(text=SAMPLE_TEXTS[1])]
    IngestionPipeline(transformations=[parser], disable_cache=True).run(documents=docs)
    (_, end) = debug.get_event_pairs(CBEventType.EMBEDDING)[0]
    assert end.payload[EventPayload.CHUNKS] == [SAMPLE_TEXTS[0], SAMPLE_TEXTS[1]]
    words = len(SAMPLE_TEXTS[0].split()) + len(SAMPLE_TEXTS[1].split())
    assert counter.total_embedding_token_count == words
    assert {"EmbeddingStartEvent", "EmbeddingEndEvent"} <= set(_kinds(seen))


def test_reranker_reports_a_reranking_step(tiny_encoder: M3Encoder, handlers: Any) -> None:
    _, debug, seen = handlers
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=2)
    reranker.callback_manager = CallbackManager([debug])
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in SAMPLE_TEXTS[:4]]
    out = reranker.postprocess_nodes(nodes, QueryBundle(SAMPLE_TEXTS[2]))
    (start, end) = debug.get_event_pairs(CBEventType.RERANKING)[0]
    assert start.payload[EventPayload.NODES] == nodes
    assert start.payload[EventPayload.QUERY_STR] == SAMPLE_TEXTS[2]
    assert start.payload[EventPayload.TOP_K] == 2
    assert end.payload[EventPayload.NODES] == out
    started = next(e for e in seen if e.class_name() == "ReRankStartEvent")
    ended = next(e for e in seen if e.class_name() == "ReRankEndEvent")
    assert (started.top_n, started.query, ended.nodes) == (2, SAMPLE_TEXTS[2], out)


def test_retriever_writes_report_what_they_encode(tiny_encoder: M3Encoder, handlers: Any) -> None:
    """``M3Retriever.add_documents`` / ``add_nodes`` encode through the core and fired no
    event: an ingestion's ``TokenCountingHandler`` counted 0 embedding tokens. They report the
    texts they encode; a re-add of unchanged documents encodes nothing and fires none."""
    counter, debug, seen = handlers
    with M3Retriever.open(M3Embedding.from_encoder(tiny_encoder)) as r:
        r.callback_manager = CallbackManager([counter, debug])
        docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS[:2])]
        r.add_documents(docs)
        (start, end) = debug.get_event_pairs(CBEventType.EMBEDDING)[0]
        assert start.payload[EventPayload.SERIALIZED]["class_name"] == "M3Encoder"
        assert end.payload[EventPayload.CHUNKS] == list(SAMPLE_TEXTS[:2])
        words = sum(len(t.split()) for t in SAMPLE_TEXTS[:2])
        assert counter.total_embedding_token_count == words
        assert _kinds(seen).count("EmbeddingStartEvent") == 1

        debug.flush_event_logs()
        seen.clear()
        r.add_documents(docs)  # stored unchanged: nothing encoded, no event
        assert debug.get_event_pairs(CBEventType.EMBEDDING) == []
        assert "EmbeddingStartEvent" not in _kinds(seen)

        nodes = [TextNode(text=SAMPLE_TEXTS[2], id_="n0"), TextNode(text=SAMPLE_TEXTS[3], id_="n1")]
        r.add_nodes(nodes)
        (_, end) = debug.get_event_pairs(CBEventType.EMBEDDING)[0]
        assert end.payload[EventPayload.CHUNKS] == list(SAMPLE_TEXTS[2:4])
        debug.flush_event_logs()
        r.add_nodes(nodes)
        assert debug.get_event_pairs(CBEventType.EMBEDDING) == []
    assert counter.total_embedding_token_count == sum(len(t.split()) for t in SAMPLE_TEXTS[:4])


def test_each_group_written_is_its_own_event(
    tiny_encoder: M3Encoder,
    other_tiny_encoder: M3Encoder,
    handlers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review's cases: one event spanned the whole write, so a failure in its second group
    counted none of the first group's tokens (stored, so a re-run skips them); a write refused
    before encoding fired a start; and the events had no span. As LlamaIndex's
    ``get_text_embedding_batch`` (one event per batch, in its span), each group encoded is
    one event pair, in the write's span."""
    counter, debug, seen = handlers
    with M3Retriever.open(M3Embedding.from_encoder(tiny_encoder)) as r:
        r.callback_manager = CallbackManager([counter, debug])
        r.index.write_group = 1
        docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS[:2])]
        r.add_documents(docs)
        pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
        assert [end.payload[EventPayload.CHUNKS] for _, end in pairs] == [
            [SAMPLE_TEXTS[0]],
            [SAMPLE_TEXTS[1]],
        ]
        events = [e for e in seen if e.class_name().startswith("Embedding")]
        assert [e.class_name() for e in events] == ["EmbeddingStartEvent", "EmbeddingEndEvent"] * 2
        assert all(e.span_id and e.span_id.startswith("M3Retriever.add_documents") for e in events)

        # the second group's encode fails: the first group's tokens stay counted
        debug.flush_event_logs()
        counter.reset_counts()
        encode = r.index.encoder.encode_tokenized
        calls: list[int] = []

        def fails_second(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("out of memory")
            return encode(*args, **kwargs)

        monkeypatch.setattr(r.index.encoder, "encode_tokenized", fails_second)
        more = [Document(text=t, id_=f"m{i}") for i, t in enumerate(SAMPLE_TEXTS[2:4])]
        with pytest.raises(RuntimeError, match="out of memory"):
            r.add_documents(more)
        assert counter.total_embedding_token_count == len(SAMPLE_TEXTS[2].split())
        monkeypatch.undo()

        # refused before anything is encoded: no event
        debug.flush_event_logs()
        seen.clear()
        with pytest.raises(ValueError, match="another model"):
            r.add_documents(
                [Document(text="new text", id_="x")],
                late_chunking=LateChunker(other_tiny_encoder),
            )
        assert debug.get_event_pairs(CBEventType.EMBEDDING) == []
        assert "EmbeddingStartEvent" not in _kinds(seen)
