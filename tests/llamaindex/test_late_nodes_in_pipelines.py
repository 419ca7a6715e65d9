"""Late-chunked nodes in LlamaIndex's own machinery: relationships, ``IngestionPipeline``.

The parser's nodes carry their vectors; the links LlamaIndex makes between them, an embed model
after the parser in a pipeline and the pipeline's cache must neither copy nor replace them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode

from llamaindex_m3 import M3Embedding
from llamaindex_m3.node_parser import (
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    M3LateChunkingNodeParser,
    node_vectors,
)
from m3kit import M3Encoder

TEXT = " ".join(
    f"Sentence number {i} talks about topic {i % 3} and nothing else." for i in range(8)
)
INTERNAL = {LATE_METADATA_KEY, SPARSE_METADATA_KEY}


def _document() -> Document:
    return Document(text=TEXT, doc_id="d1", metadata={"topic": "numbers"})


def test_relationships_do_not_copy_the_neighbours_vectors(tiny_encoder: M3Encoder) -> None:
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    nodes = parser.get_nodes_from_documents([_document()])
    assert len(nodes) >= 3
    middle = nodes[1]
    for kind in (NodeRelationship.SOURCE, NodeRelationship.PREVIOUS, NodeRelationship.NEXT):
        info = middle.relationships[kind]
        assert not INTERNAL & set(info.metadata), kind  # type: ignore[union-attr]
    # the user's metadata is still linked, the neighbours keep their own vectors
    assert middle.relationships[NodeRelationship.PREVIOUS].metadata == {"topic": "numbers"}  # type: ignore[union-attr]
    assert set(nodes[0].metadata) >= INTERNAL and set(nodes[2].metadata) >= INTERNAL
    assert middle.to_json().count(f'"{SPARSE_METADATA_KEY}": {{') == 1


def _sentences(size: int) -> SentenceSplitter:
    return SentenceSplitter(chunk_size=size, chunk_overlap=0)


def test_pipeline_cache_tells_splitters_apart(tiny_encoder: M3Encoder) -> None:
    """``IngestionCache`` keys on ``to_dict()``: a parser's splitter must show there."""
    small = M3LateChunkingNodeParser.from_encoder(tiny_encoder, splitter=_sentences(40))
    large = M3LateChunkingNodeParser.from_encoder(tiny_encoder, splitter=_sentences(200))
    assert small.to_dict() != large.to_dict()
    cache = IngestionCache()
    first = IngestionPipeline(transformations=[small], cache=cache).run(documents=[_document()])
    second = IngestionPipeline(transformations=[large], cache=cache).run(documents=[_document()])
    fresh = large.get_nodes_from_documents([_document()])
    assert len(first) != len(fresh)
    assert [n.get_content() for n in second] == [n.get_content() for n in fresh]


def test_parser_round_trips_and_names_a_lost_splitter(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder
) -> None:
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    again = M3LateChunkingNodeParser.from_json(parser.to_json())
    assert again.to_dict() == parser.to_dict()
    assert M3LateChunkingNodeParser.from_dict(parser.to_dict(), chunk_size=12).chunk_size == 12

    custom = M3LateChunkingNodeParser.from_encoder(tiny_encoder, splitter=_sentences(40))
    with pytest.raises(ValueError, match="a splitter is not serialised, pass it again"):
        M3LateChunkingNodeParser.from_dict(custom.to_dict())
    rebuilt = M3LateChunkingNodeParser.from_dict(custom.to_dict(), splitter=_sentences(40))
    assert rebuilt.to_dict() == custom.to_dict()

    other = M3LateChunkingNodeParser.from_encoder(other_tiny_encoder).to_dict()
    with pytest.raises(ValueError, match="embedded with encoder .* is another one"):
        M3LateChunkingNodeParser.from_dict({**parser.to_dict(), "model_name": other["model_name"]})
    with_own_ids = parser.model_copy(update={"id_func": _own_ids})
    with pytest.raises(ValueError, match="names its id_func '_own_ids'"):
        M3LateChunkingNodeParser.from_dict(with_own_ids.to_dict())
    assert M3LateChunkingNodeParser.from_dict(with_own_ids.to_dict(), id_func=_own_ids)


def _own_ids(i: int, doc: Any) -> str:
    return f"{doc.doc_id}-{i}"


def _late_and_plain(encoder: M3Encoder) -> tuple[list[BaseNode], list[BaseNode]]:
    late = M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=24).get_nodes_from_documents(
        [_document()]
    )
    plain = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents(
        [Document(text="Oxygen has the atomic number 8. Iron is Fe.", doc_id="plain")]
    )
    return late, plain


def _assert_kept_and_embedded(
    nodes: Sequence[BaseNode], late: list[BaseNode], plain: list[BaseNode], encoder: M3Encoder
) -> None:
    by_id = {n.node_id: n for n in nodes}
    for node in late:
        kept = by_id[node.node_id]
        np.testing.assert_array_equal(kept.embedding, node_vectors(node).dense[0])
        assert kept.metadata[SPARSE_METADATA_KEY] == node.metadata[SPARSE_METADATA_KEY]
    alone = encoder.encode([n.get_content(metadata_mode=MetadataMode.EMBED) for n in plain])
    for node, vector in zip(plain, alone.dense, strict=True):
        np.testing.assert_allclose(by_id[node.node_id].embedding, vector, atol=1e-6)


def test_embed_model_after_the_parser_keeps_late_embeddings(tiny_encoder: M3Encoder) -> None:
    """``[parser, embed]``, the usual pipeline: late chunks keep their vectors."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    late, plain = _late_and_plain(tiny_encoder)
    alone = tiny_encoder.encode([n.get_content(metadata_mode=MetadataMode.EMBED) for n in late])
    assert not np.allclose(node_vectors(late[0]).dense[0], alone.dense[0], atol=1e-3)

    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    piped = IngestionPipeline(transformations=[parser, embed]).run(documents=[_document()])
    assert len(piped) == len(late)
    for node, want in zip(piped, late, strict=True):  # new node ids: same chunks, in order
        np.testing.assert_array_equal(node.embedding, node_vectors(want).dense[0])
        assert node.metadata[SPARSE_METADATA_KEY] == want.metadata[SPARSE_METADATA_KEY]

    rebuilt = [TextNode.from_json(n.to_json()) for n in late]  # a docstore / cache round trip
    _assert_kept_and_embedded(embed([*plain[:1], *rebuilt, *plain[1:]]), late, plain, tiny_encoder)
    later = asyncio.run(embed.acall([*rebuilt, *plain]))
    _assert_kept_and_embedded(later, late, plain, tiny_encoder)


def test_embed_model_refuses_other_models_and_lost_late_embeddings(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder
) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder)
    foreign, _ = _late_and_plain(other_tiny_encoder)
    with pytest.raises(ValueError, match=f"node {foreign[1].node_id} was late-chunked by another"):
        embed(foreign[1:2])
    with pytest.raises(ValueError, match="another model than this embedding model's"):
        asyncio.run(embed.acall(foreign[1:2]))
    lost = TextNode.from_json(_late_and_plain(tiny_encoder)[0][0].to_json())
    lost.embedding = None
    with pytest.raises(ValueError, match=f"node {lost.node_id} came from .* lost its late"):
        embed([lost])


async def test_async_parsing_runs_the_model_off_the_event_loop(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aget_nodes_from_documents`` / ``acall`` (``IngestionPipeline.arun``) ran the model on
    the event loop (LlamaIndex's ``_aparse_nodes`` calls ``_parse_nodes``), stalling every
    other task for the whole encoding: the chunker now runs in a worker thread."""
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    want = parser.get_nodes_from_documents([_document()])
    loop_free = threading.Event()
    seen: list[bool] = []
    chunk = parser.chunker.chunk

    def chunk_once_the_loop_ran(*args: Any, **kwargs: Any) -> Any:
        seen.append(loop_free.wait(timeout=3))  # set by a task on the loop, if the loop runs
        return chunk(*args, **kwargs)

    async def mark_the_loop_free() -> None:
        loop_free.set()

    monkeypatch.setattr(parser.chunker, "chunk", chunk_once_the_loop_ran)
    for run in (parser.aget_nodes_from_documents, parser.acall):
        loop_free.clear()
        marker = asyncio.create_task(mark_the_loop_free())
        got = await run([_document()])
        await marker
        assert [n.get_content() for n in got] == [n.get_content() for n in want]
        for node, expected in zip(got, want, strict=True):
            np.testing.assert_array_equal(node.embedding, expected.embedding)
    assert seen == [True, True]
