"""The late-chunking node parser mirrors ``M3Embedding``'s encoder settings, and late-chunked
nodes are never mixed with documents encoded after a ``text_instruction``.

A parser loaded from the embedding's checkpoint could not take its ``max_length`` /
``query_instruction``, so it was another encoder and the store refused its nodes saying they
came from "another model". Late-chunked vectors are computed on the bare document: a store whose
embedding prefixes documents (``text_instruction``) took them silently, holding documents in
two spaces.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.schema import BaseNode, TextNode
from qdrant_client import AsyncQdrantClient, QdrantClient

from llamaindex_m3 import (
    M3Embedding,
    M3LateChunkingNodeParser,
    M3QdrantVectorStore,
    M3VectorStore,
)
from m3kit import M3Encoder

DOCS = [
    Document(
        text=" ".join(f"Sentence {i} is about the moons of Jupiter and Saturn." for i in range(8)),
        doc_id="moons",
    )
]
SETTINGS: dict[str, Any] = {"max_length": 64, "query_instruction": "query: "}


def _load(cls: type[Any], path: Path, **fields: Any) -> Any:
    return cls(model_name=str(path), dtype="fp32", device="cpu", **fields)


def test_parser_takes_the_embedding_settings(tiny_m3_path: Path) -> None:
    embed = _load(M3Embedding, tiny_m3_path, **SETTINGS)
    parser = _load(M3LateChunkingNodeParser, tiny_m3_path, chunk_size=16, batch_size=4, **SETTINGS)
    enc = parser.chunker.encoder
    assert (enc.max_length, enc.query_instruction, enc.batch_size) == (64, "query: ", 4)
    assert (parser.max_length, parser.query_instruction, parser.batch_size) == (64, "query: ", 4)
    nodes = parser.get_nodes_from_documents(DOCS)
    with M3VectorStore(embed) as store:
        assert store.add(nodes) == [n.node_id for n in nodes]  # the same encoder: accepted
    embed(nodes)  # as an IngestionPipeline transformation: keeps the carried vectors


def test_from_encoder_reads_the_settings_and_they_survive_a_round_trip(
    tiny_m3_path: Path,
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", batch_size=3, **SETTINGS)
    parser = M3LateChunkingNodeParser.from_encoder(enc, chunk_size=16)
    assert (parser.max_length, parser.query_instruction, parser.batch_size) == (64, "query: ", 3)
    rebuilt = M3LateChunkingNodeParser.from_dict(parser.to_dict())
    assert rebuilt.chunker.encoder.max_length == 64
    assert rebuilt.chunker.encoder.query_instruction == "query: "
    assert rebuilt.chunker.encoder.batch_size == 3


@pytest.mark.parametrize(
    ("override", "window"),
    [({"max_length": 16}, 16), ({"query_instruction": "query: "}, 34)],
)
def test_from_dict_takes_an_overridden_setting(
    tiny_m3_path: Path, override: dict[str, Any], window: int
) -> None:
    """``from_dict(data, max_length=...)`` builds the parser with the new setting: what
    ``kwargs`` override is not checked against the serialised parser (it was refused as "the
    checkpoint ... is another one", the setting making another encoder identity)."""
    parser = _load(M3LateChunkingNodeParser, tiny_m3_path, chunk_size=16)
    rebuilt = M3LateChunkingNodeParser.from_dict(parser.to_dict(), **override)
    ((name, value),) = override.items()
    assert getattr(rebuilt.chunker.encoder, name) == value
    assert rebuilt.chunker.window == window  # max_length bounds the window
    embed = _load(M3Embedding, tiny_m3_path, **override)
    embed(rebuilt.get_nodes_from_documents(DOCS))  # the embedding of that setting takes them


def test_refusal_names_the_setting_that_differs(tiny_m3_path: Path) -> None:
    embed = _load(M3Embedding, tiny_m3_path, **SETTINGS)
    parser = _load(M3LateChunkingNodeParser, tiny_m3_path, chunk_size=16)
    default_length = parser.chunker.encoder.max_length
    nodes = parser.get_nodes_from_documents(DOCS)
    with M3VectorStore(embed) as store, pytest.raises(ValueError) as caught:
        store.add(nodes)
    message = str(caught.value)
    assert f"max_length {default_length} (the store's model: 64)" in message
    assert "query_instruction None (the store's model: 'query: ')" in message
    assert "M3LateChunkingNodeParser(max_length=..., query_instruction=...)" in message
    assert "another model" not in message


def test_refusal_of_another_model_with_other_settings_says_another_model(
    tiny_m3_path: Path, other_tiny_encoder: M3Encoder
) -> None:
    """Nodes of another model whose settings also differ: loading the parser with the store's
    settings would not make them fit, so the refusal says "another model" (it named the
    settings alone and advised loading the parser with them)."""
    embed = _load(M3Embedding, tiny_m3_path, **SETTINGS)
    nodes = _late_nodes(other_tiny_encoder)  # other weights, default max_length
    with M3VectorStore(embed) as store, pytest.raises(ValueError) as caught:
        store.add(nodes)
    message = str(caught.value)
    assert "late-chunked by another model than this store's" in message
    assert "M3LateChunkingNodeParser(max_length=..., query_instruction=...)" not in message
    with pytest.raises(ValueError, match="late-chunked by another model than this embedding"):
        embed(nodes)


def test_nodes_of_an_older_m3kit_without_settings_still_work(tiny_m3_path: Path) -> None:
    """Nodes parsed before ``encoder_settings`` was recorded (rebuilt from JSON, e.g. an
    ``IngestionPipeline`` cache): the store of their encoder takes them, one of other settings
    refuses them as another model's."""
    parser = _load(M3LateChunkingNodeParser, tiny_m3_path, chunk_size=16)
    nodes = [TextNode.from_json(n.to_json()) for n in parser.get_nodes_from_documents(DOCS)]
    for node in nodes:
        del node.metadata["m3_late_chunk"]["encoder_settings"]
    embed = _load(M3Embedding, tiny_m3_path)
    embed(nodes)  # as a pipeline step: keeps their carried vectors
    store = M3QdrantVectorStore("old", client=QdrantClient(":memory:"), sparse_model=embed)
    assert store.add(nodes) == [n.node_id for n in nodes]  # ColBERT did not survive JSON
    other = _load(M3Embedding, tiny_m3_path, **SETTINGS)
    with pytest.raises(ValueError, match="late-chunked by another model than this embedding"):
        other(nodes)


def _late_nodes(encoder: M3Encoder) -> list[BaseNode]:
    return M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=16).get_nodes_from_documents(
        DOCS
    )


def test_store_with_a_text_instruction_refuses_late_chunked_nodes(
    tiny_encoder: M3Encoder,
) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    with M3VectorStore(embed) as store:
        with pytest.raises(ValueError, match=r"text_instruction 'passage: '.*without it"):
            store.add(_late_nodes(tiny_encoder))
        assert store.client.count() == 0  # nothing was stored
    with pytest.raises(ValueError, match=r"text_instruction 'passage: '"):
        embed(_late_nodes(tiny_encoder))  # IngestionPipeline([parser, embed])


def test_qdrant_store_with_a_text_instruction_refuses_late_chunked_nodes(
    tiny_encoder: M3Encoder,
) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    store = M3QdrantVectorStore("late", client=QdrantClient(":memory:"), sparse_model=embed)
    nodes = _late_nodes(tiny_encoder)
    embed_plain = M3Embedding.from_encoder(tiny_encoder)
    embed_plain(nodes)  # carried dense vectors in node.embedding
    with pytest.raises(ValueError, match=r"text_instruction 'passage: '"):
        store.add(nodes)


def test_qdrant_store_refuses_late_chunked_nodes_before_creating_its_collection(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder
) -> None:
    """A refused first write leaves no collection behind: ``QdrantVectorStore`` created it
    (sized by the first node) before the nodes were checked, so a collection made for
    another model's nodes then refused the right ones."""
    embed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    refused = {
        "text_instruction 'passage: '": (embed, _late_nodes(tiny_encoder)),
        "another model": (M3Embedding.from_encoder(tiny_encoder), _late_nodes(other_tiny_encoder)),
    }
    for match, (model, nodes) in refused.items():
        client, aclient = QdrantClient(":memory:"), AsyncQdrantClient(":memory:")
        store = M3QdrantVectorStore("late", client=client, aclient=aclient, sparse_model=model)
        with pytest.raises(ValueError, match=match):
            store.add(nodes)
        assert not client.collection_exists("late")
        with pytest.raises(ValueError, match=match):
            asyncio.run(store.async_add(nodes))
        assert not asyncio.run(aclient.collection_exists("late"))


def test_embed_batch_size_description_is_what_from_encoder_does(
    tiny_m3_path: Path,
) -> None:
    """With ``from_encoder`` a forward pass holds at most the encoder's own ``batch_size``:
    ``embed_batch_size`` only splits the texts into encoder calls (the description said it set
    the forward-pass batch too)."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", batch_size=4)
    embed = M3Embedding.from_encoder(enc, embed_batch_size=8)
    spied: list[int] = []
    real = enc._forward

    def spy(batch_ids: Any, *args: Any, **kwargs: Any) -> Any:
        spied.append(len(batch_ids))
        return real(batch_ids, *args, **kwargs)

    enc._forward = spy  # type: ignore[method-assign]
    embed.get_text_embedding_batch([f"text {i}" for i in range(8)])
    assert spied == [4, 4]  # the encoder's batch size, not embed_batch_size
    description = M3Embedding.model_fields["embed_batch_size"].description or ""
    # it said "Texts per encoder call (and per forward pass)."; it now says what happens here
    assert "from_encoder() keeps the encoder's own batch_size" in description
