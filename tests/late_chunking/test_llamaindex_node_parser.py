"""M3LateChunkingNodeParser: nodes carry late-chunked vectors; no second embedding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
from llama_index.core.schema import MetadataMode, NodeRelationship, TextNode
from pydantic import PrivateAttr

from llamaindex_m3.node_parser import (
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    M3LateChunkingNodeParser,
    M3TextNode,
    chunk_records,
    node_parser_spans,
    node_vectors,
)
from m3kit.late_chunking import LateChunker
from m3kit.outputs import Head

BERLIN = (
    "Berlin is the capital and largest city of Germany. It has about 3.8 million inhabitants. "
    "The city lies on the banks of the Spree river.\n\n"
    "The Amazon rainforest covers much of the Amazon basin of South America. "
    "It is the largest tropical rainforest in the world."
)


class QueryOnlyEmbedding(BaseEmbedding):
    """Embeds queries with an m3kit encoder; refuses to embed any document text."""

    _encoder: Any = PrivateAttr()

    def __init__(self, encoder: Any) -> None:
        super().__init__(model_name="query-only")
        self._encoder = encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode_queries([query]).dense[0].tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        raise AssertionError(f"the embed model was asked to embed a node: {text[:40]!r}")

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the embed model was asked to embed nodes")


@pytest.fixture(scope="module")
def minilm_parser(minilm_encoder):  # type: ignore[no-untyped-def]
    return M3LateChunkingNodeParser.from_encoder(minilm_encoder, chunk_size=24)


@pytest.fixture(scope="module")
def tiny_parser(tiny_encoder):  # type: ignore[no-untyped-def]
    return M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)


def test_nodes_carry_vectors_spans_and_relationships(tiny_parser, tiny_encoder):  # type: ignore[no-untyped-def]
    doc = Document(text=BERLIN, metadata={"source": "wiki"}, id_="doc-1")
    nodes = tiny_parser.get_nodes_from_documents([doc])
    expected = LateChunker(tiny_encoder, chunk_size=12).chunk([BERLIN])[0]
    assert len(nodes) == len(expected) > 2
    for i, (node, chunk) in enumerate(zip(nodes, expected, strict=True)):
        assert isinstance(node, M3TextNode)
        assert node.text == chunk.text == BERLIN[node.start_char_idx : node.end_char_idx]
        assert (node.start_char_idx, node.end_char_idx) == (chunk.start, chunk.end)
        np.testing.assert_allclose(node.embedding, chunk.dense, atol=1e-6)
        vectors = node_vectors(node)
        assert vectors.colbert[0].shape == chunk.colbert.shape
        assert vectors.sparse[0] == chunk.sparse
        sparse = node.metadata[SPARSE_METADATA_KEY]
        assert sparse == {
            "indices": chunk.sparse.indices.tolist(),
            "values": chunk.sparse.values.tolist(),
        }
        assert node.metadata["source"] == "wiki"
        assert SPARSE_METADATA_KEY in node.excluded_embed_metadata_keys
        assert SPARSE_METADATA_KEY in node.excluded_llm_metadata_keys
        assert SPARSE_METADATA_KEY not in node.get_content(metadata_mode=MetadataMode.LLM)
        assert SPARSE_METADATA_KEY not in node.get_content(metadata_mode=MetadataMode.EMBED)
        assert node.ref_doc_id == "doc-1"
        if i:
            assert node.relationships[NodeRelationship.PREVIOUS].node_id == nodes[i - 1].node_id
    assert SPARSE_METADATA_KEY not in doc.excluded_embed_metadata_keys  # document untouched
    records = chunk_records(nodes)
    assert [r.chunk_index for r in records] == list(range(len(nodes)))
    assert {r.doc_id for r in records} == {"doc-1"}
    assert all(SPARSE_METADATA_KEY not in r.metadata for r in records)


def test_vector_store_index_does_not_reembed(minilm_parser, minilm_encoder):  # type: ignore[no-untyped-def]
    docs = [Document(text=BERLIN, id_="a"), Document(text="Oxygen is a chemical element.")]
    nodes = minilm_parser.get_nodes_from_documents(docs)
    assert all(n.metadata.get(SPARSE_METADATA_KEY) is None for n in nodes)  # dense-only model
    embed = QueryOnlyEmbedding(minilm_encoder)
    index = VectorStoreIndex(
        nodes, embed_model=embed, storage_context=StorageContext.from_defaults()
    )
    hits = index.as_retriever(similarity_top_k=1).retrieve("What is the capital of Germany?")
    assert "Berlin" in hits[0].node.get_content()
    hits = index.as_retriever(similarity_top_k=1).retrieve("tropical forest in South America")
    assert "Amazon" in hits[0].node.get_content()


def test_parser_is_a_transformation(tiny_parser):  # type: ignore[no-untyped-def]
    nodes = tiny_parser([Document(text=BERLIN)])
    assert nodes and all(isinstance(n, M3TextNode) for n in nodes)
    plain = TextNode(text="x")
    with pytest.raises(ValueError, match="did not come from M3LateChunkingNodeParser"):
        node_vectors(plain)
    assert tiny_parser.chunker.chunk_size == 12
    dumped = nodes[0].model_dump()
    assert "_m3_chunk" not in dumped and dumped["embedding"] == nodes[0].embedding


def test_rebuilt_nodes_keep_dense_and_sparse(tiny_parser):  # type: ignore[no-untyped-def]
    """A node through JSON (docstore, pipeline cache) keeps its late dense + sparse, not ColBERT."""
    nodes = tiny_parser([Document(text=BERLIN, metadata={"lang": "en"})])
    rebuilt = [TextNode.from_json(n.to_json()) for n in nodes]
    for i, (live, back) in enumerate(zip(nodes, rebuilt, strict=True)):
        late = back.metadata[LATE_METADATA_KEY]
        assert late["chunker"] == tiny_parser.chunker.signature and late["index"] == i
        out = node_vectors(back)
        assert out.heads == frozenset({Head.DENSE, Head.SPARSE})
        assert out.token_counts == live.m3_vectors.token_counts
        np.testing.assert_array_equal(out.dense, live.m3_vectors.dense)
        np.testing.assert_array_equal(out.sparse[0].indices, live.m3_vectors.sparse[0].indices)
        np.testing.assert_array_equal(out.sparse[0].values, live.m3_vectors.sparse[0].values)
        for mode in (MetadataMode.EMBED, MetadataMode.LLM):  # never in prompts or embeddings
            content = back.get_content(metadata_mode=mode)
            assert LATE_METADATA_KEY not in content and SPARSE_METADATA_KEY not in content
    records = chunk_records(rebuilt)
    assert [r.chunk_index for r in records] == list(range(len(nodes)))
    assert all(r.metadata == {"lang": "en"} for r in records)
    assert all(Head.COLBERT not in r.vectors.heads for r in records)


def test_a_node_whose_text_was_edited_is_refused(tiny_parser, tiny_encoder):  # type: ignore[no-untyped-def]
    """A node's vectors are its chunk's: a node whose text was changed after parsing (a
    pipeline step rewriting it) was stored with the old text's vectors under the new text.
    It is refused, live or rebuilt from JSON, as LangChain's splitter chunks are."""
    from llamaindex_m3.vector_store import M3VectorStore

    nodes = tiny_parser.get_nodes_from_documents([Document(text=BERLIN, id_="doc-e")])
    rebuilt = [TextNode.from_json(n.to_json()) for n in nodes]
    assert len(chunk_records(nodes)) == len(chunk_records(rebuilt)) == len(nodes)  # unedited
    for batch in (nodes, rebuilt):
        batch[1].set_content("Bananas are yellow and grow in bunches.")
        with pytest.raises(ValueError, match="text was changed after parsing"):
            node_vectors(batch[1])
        with pytest.raises(ValueError, match="text was changed after parsing"):
            chunk_records(batch)
    store = M3VectorStore(tiny_encoder, collection_name="edited")
    with store, pytest.raises(ValueError, match="text was changed after parsing"):
        store.add(nodes)


def test_an_edited_node_is_embedded_again_by_a_store_that_is_not_m3kits(
    tiny_parser: M3LateChunkingNodeParser, tiny_encoder: Any
) -> None:
    """``VectorStoreIndex`` embeds only the nodes without an ``embedding``: a node edited
    after parsing kept its old text's late vector, and LlamaIndex's ``SimpleVectorStore``
    stored it under the new text. Editing the text drops that embedding (the index embeds
    the new text); setting the chunk's own text back restores it."""
    from llamaindex_m3 import M3Embedding

    nodes = tiny_parser.get_nodes_from_documents([Document(text=BERLIN, id_="doc-s")])
    late = list(nodes[2].embedding)
    nodes[1].set_content("Bananas are yellow and grow in bunches.")
    chunk_text = nodes[2].text
    nodes[2].text = "Grapes grow on vines."
    nodes[2].text = chunk_text  # the chunk's own text again: its vector again
    nodes[3].text = nodes[3].text  # unchanged: keeps its vector
    assert nodes[1].embedding is None and nodes[2].embedding == late
    embed = M3Embedding.from_encoder(tiny_encoder)
    index = VectorStoreIndex(nodes, embed_model=embed)
    store = index.storage_context.vector_store
    edited = embed.get_text_embedding(nodes[1].get_content(metadata_mode=MetadataMode.EMBED))
    np.testing.assert_allclose(store.get(nodes[1].node_id), edited, atol=1e-5)
    for node in (nodes[0], nodes[2], nodes[3]):
        np.testing.assert_allclose(store.get(node.node_id), node_vectors(node).dense[0], atol=1e-5)


def test_an_edited_node_drops_its_offsets_in_its_document(
    tiny_parser: M3LateChunkingNodeParser, tiny_encoder: Any
) -> None:
    """A node edited after parsing kept ``start_char_idx`` / ``end_char_idx`` of its chunk, so
    a store that is not m3kit's (``SimpleVectorStore``) returned it pointing at the old text of
    its document. The edit clears them (the new text has no span there); the chunk's own text
    brings them back."""
    from llamaindex_m3 import M3Embedding

    nodes = tiny_parser.get_nodes_from_documents([Document(text=BERLIN, id_="doc-o")])
    span = (nodes[2].start_char_idx, nodes[2].end_char_idx)
    nodes[1].set_content("Bananas are yellow and grow in bunches.")
    chunk_text = nodes[2].text
    nodes[2].text = "Grapes grow on vines."
    nodes[2].text = chunk_text
    assert (nodes[1].start_char_idx, nodes[1].end_char_idx) == (None, None)
    assert (nodes[2].start_char_idx, nodes[2].end_char_idx) == span
    index = VectorStoreIndex(nodes, embed_model=M3Embedding.from_encoder(tiny_encoder))
    hits = index.as_retriever(similarity_top_k=len(nodes)).retrieve("Bananas")
    for hit in hits:
        start, end = hit.node.start_char_idx, hit.node.end_char_idx
        if hit.node.node_id == nodes[1].node_id:
            assert (start, end) == (None, None)
        else:
            assert BERLIN[start:end] == hit.node.get_content(metadata_mode=MetadataMode.NONE)


def test_custom_llamaindex_splitters(tiny_encoder):  # type: ignore[no-untyped-def]
    text = "# Title\n\nSome text here.\n\n## Part two\n\nMore text. And more."
    spans = node_parser_spans(MarkdownNodeParser())(text)
    assert len(spans) == 2 and all(text[s:e] for s, e in spans)
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, splitter=MarkdownNodeParser())
    nodes = parser.get_nodes_from_documents([Document(text=text)])
    assert [n.text for n in nodes] == [text[s:e] for s, e in spans]
    by_sentence = M3LateChunkingNodeParser.from_encoder(
        tiny_encoder, splitter=SentenceSplitter(chunk_size=20, chunk_overlap=0)
    )
    nodes = by_sentence.get_nodes_from_documents([Document(text=BERLIN)])
    assert len(nodes) > 1
    for n in nodes:
        assert n.text == BERLIN[n.start_char_idx : n.end_char_idx]


def test_node_parser_spans_not_inside_the_previous_node() -> None:
    """A section repeated inside the previous one (a code block) is placed after it.

    LlamaIndex's own ``start_char_idx`` for the second node is 13, inside the code block, which
    left the real second section in no chunk.
    """
    text = "# Setup\n\n```\n# Run\nmake run\n```\n\n# Run\nmake run"
    assert node_parser_spans(MarkdownNodeParser())(text) == [(0, 31), (33, 47)]


def test_parser_loads_checkpoint_from_fields(tiny_m3_path):  # type: ignore[no-untyped-def]
    parser = M3LateChunkingNodeParser(model_name=str(tiny_m3_path), dtype="fp32", chunk_size=12)
    assert parser.chunker.encoder.dense_dim == 32
    assert parser.chunker.signature.startswith("LateChunker(splitter=sentences, chunk_size=12,")
    assert parser.to_dict()["chunk_size"] == 12
    nodes = parser.get_nodes_from_documents([Document(text=BERLIN)])
    assert len(nodes) > 2 and all(len(n.embedding or []) == 32 for n in nodes)


def test_default_chunk_size_fits_a_256_token_model(minilm_encoder, minilm_path, h):  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2 (256 tokens a pass, every head from the chunk alone): the default
    chunks hold at most its 254 text tokens."""
    text = h.long_text  # its first sentence is cut at exactly chunk_size tokens
    spans = LateChunker(minilm_encoder).spans([text])[0]
    assert len(spans) > 2
    parser = M3LateChunkingNodeParser.from_encoder(minilm_encoder)
    assert parser.chunk_size == parser.chunker.chunk_size == 254
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="long")])
    assert [(n.start_char_idx, n.end_char_idx) for n in nodes] == spans
    assert "".join(n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes) == text
    loaded = M3LateChunkingNodeParser(model_name=str(minilm_path), dtype="fp32")
    assert loaded.chunk_size is None  # as given; the chunker has the model's default
    assert loaded.chunker.signature == parser.chunker.signature
    again = loaded.get_nodes_from_documents([Document(text=text, id_="long")])
    assert [(n.start_char_idx, n.end_char_idx) for n in again] == spans
    assert M3LateChunkingNodeParser.from_encoder(minilm_encoder, chunk_size=64).chunk_size == 64
    with pytest.raises(ValueError, match="chunk_size"):
        M3LateChunkingNodeParser(model_name=str(minilm_path), chunk_size=0)


def test_chunk_records_recipe_leaves_no_stale_chunk(tiny_encoder):  # type: ignore[no-untyped-def]
    """The docstring's recipe: an edited document with fewer chunks replaces the old chunks."""
    from qdrant_client import models

    from m3kit.store import M3Index

    store = M3Index.open(tiny_encoder).store
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=6)
    v1 = "Alpha sentence one. Beta sentence two. Gamma sentence three. Delta four."
    v2 = "Alpha sentence one. Beta sentence TWO CHANGED."
    first = parser.get_nodes_from_documents([Document(text=v1, id_="d1")])
    half = len(first) // 2  # one document's nodes in two calls: nothing of it is deleted
    store.upsert(chunk_records(first[:half]), replace=True)
    store.upsert(chunk_records(first[half:]), replace=True)
    assert store.count() == len(first)
    second = parser.get_nodes_from_documents([Document(text=v2, id_="d1")])
    assert 0 < len(second) < len(first)
    store.upsert(chunk_records(second), replace=True)
    hits = sorted(store.get(filter=models.Filter()), key=lambda h: h.chunk_index)
    assert [h.text for h in hits] == [n.text for n in second]
    assert {h.chunk_count for h in hits} == {len(second)}
    rebuilt = [TextNode.from_json(n.to_json()) for n in second]  # e.g. from a docstore
    versions = {(r.doc_hash, r.chunk_count) for r in chunk_records(rebuilt)}
    assert versions == {(r.doc_hash, r.chunk_count) for r in chunk_records(second)}
    assert versions.isdisjoint({(r.doc_hash, r.chunk_count) for r in chunk_records(first)})


def test_chunk_records_refuse_chunks_of_a_part_of_a_document(tiny_encoder):  # type: ignore[no-untyped-def]
    """Nodes late-chunked from the nodes of another parser (a two-stage pipeline) name the
    document as their source but number their chunks per part: every part's chunks took the
    same places, so upserting the parts' records one call each (replace=True) kept only the
    last part's chunks. chunk_records now refuses them, naming the node they were cut from."""
    from m3kit.store import M3Index

    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)
    doc = Document(text=" ".join([BERLIN] * 3), id_="doc-p")
    parts = SentenceSplitter(chunk_size=48, chunk_overlap=0).get_nodes_from_documents([doc])
    assert len(parts) > 2
    nodes = parser.get_nodes_from_documents(parts)
    assert {n.ref_doc_id for n in nodes} == {"doc-p"}
    rebuilt = [TextNode.from_json(n.to_json()) for n in nodes]
    for batch in (nodes, rebuilt):
        with pytest.raises(ValueError, match="not from the document itself"):
            chunk_records(batch)
    # the document itself, or a part stored as its own document, is fine
    assert len(chunk_records(parser.get_nodes_from_documents([doc]))) > 2
    part = TextNode(text=parts[0].text, id_="part-0")
    store = M3Index.open(tiny_encoder).store
    records = chunk_records(parser.get_nodes_from_documents([part]))
    store.upsert(records, replace=True)
    assert store.count() == len(records) and {r.doc_id for r in records} == {"part-0"}


def test_chunk_records_refuse_nodes_without_document_version(tiny_parser):  # type: ignore[no-untyped-def]
    node = tiny_parser([Document(text=BERLIN)])[0]
    del node.metadata[LATE_METADATA_KEY]["count"]
    with pytest.raises(ValueError, match="no document version.*parse its document again"):
        chunk_records([node])


def test_node_parser_spans_refuses_nested_nodes() -> None:
    """HierarchicalNodeParser returns parents, then leaves: a hierarchy, not one sequence."""
    from llama_index.core.node_parser import HierarchicalNodeParser

    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    nested = HierarchicalNodeParser.from_defaults(chunk_sizes=[256, 64])
    with pytest.raises(ValueError, match="nested nodes .*chunk_sizes=\\[128\\]"):
        node_parser_spans(nested)(text)
    one_level = HierarchicalNodeParser.from_defaults(chunk_sizes=[64])
    spans = node_parser_spans(one_level)(text)
    assert len(spans) > 1 and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert [s for s, _ in spans] == sorted({s for s, _ in spans})


def test_node_parser_spans_orders_nodes_by_start() -> None:
    """A flat parser returning its nodes out of document order: placed in document order."""

    class Reversed(SentenceSplitter):
        def get_nodes_from_documents(self, documents, show_progress=False, **kwargs):  # type: ignore[no-untyped-def]
            return list(reversed(super().get_nodes_from_documents(documents, show_progress)))

    splitter = SentenceSplitter(chunk_size=20, chunk_overlap=0)
    expected = node_parser_spans(splitter)(BERLIN)
    assert len(expected) > 1
    assert node_parser_spans(Reversed(chunk_size=20, chunk_overlap=0))(BERLIN) == expected


def test_a_node_parser_chunker_signature_names_the_piece_placement(tiny_encoder: Any) -> None:
    # node texts are placed in the document (spans_of_pieces): a new placement makes the
    # documents chunked under the old one new versions
    from m3kit.piece_spans import PIECE_PLACEMENT

    chunker = LateChunker(tiny_encoder, splitter=node_parser_spans(MarkdownNodeParser()))
    assert chunker.signature.count(PIECE_PLACEMENT) == 1


def test_from_encoder_takes_the_node_parser_fields(tiny_encoder: Any) -> None:
    """``id_func``, ``include_prev_next_rel``, ``include_metadata`` and ``callback_manager``
    (every LlamaIndex ``NodeParser``'s fields) can be given when sharing a loaded model."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    debug = LlamaDebugHandler()
    parser = M3LateChunkingNodeParser.from_encoder(
        tiny_encoder,
        chunk_size=12,
        id_func=lambda i, doc: f"{doc.node_id}#{i}",
        include_prev_next_rel=False,
        include_metadata=False,
        callback_manager=CallbackManager([debug]),
    )
    nodes = parser.get_nodes_from_documents([Document(text=BERLIN, id_="d", metadata={"k": 1})])
    assert [n.node_id for n in nodes] == [f"d#{i}" for i in range(len(nodes))]
    assert all(set(n.relationships) == {NodeRelationship.SOURCE} for n in nodes)
    assert all("k" not in n.metadata for n in nodes)
    assert len(debug.get_event_pairs(CBEventType.NODE_PARSING)) == 1
    with pytest.raises(TypeError, match="unexpected keyword"):
        M3LateChunkingNodeParser.from_encoder(tiny_encoder, include_meta=False)  # type: ignore[call-arg]


def test_a_document_that_became_blank_replaces_its_chunks(tiny_encoder: Any) -> None:
    """Documented difference from ``SentenceSplitter``: a whitespace-only document gives one
    node, so storing it with ``replace=True`` deletes the document's older chunks."""
    from m3kit.store import M3Index

    store = M3Index.open(tiny_encoder).store
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=6)
    assert SentenceSplitter().get_nodes_from_documents([Document(text=" \n ")]) == []
    first = parser.get_nodes_from_documents([Document(text=BERLIN, id_="d1")])
    store.upsert(chunk_records(first), replace=True)
    blank = parser.get_nodes_from_documents([Document(text=" \n ", id_="d1")])
    assert [(n.text, n.start_char_idx, n.end_char_idx) for n in blank] == [(" \n ", 0, 3)]
    store.upsert(chunk_records(blank), replace=True)
    assert store.count() == 1


def test_an_image_document_is_refused_not_turned_into_a_text_node(tiny_parser: Any) -> None:
    """``SentenceSplitter`` makes ``ImageNode``\\ s of an ``ImageDocument`` (the image kept);
    the parser makes text nodes only, so it refuses one instead of dropping its image."""
    from llama_index.core.schema import ImageDocument, ImageNode

    image = ImageDocument(text="A photo of the Spree. Boats on it.", image="iVBORw0KGgo=")
    assert all(isinstance(n, ImageNode) for n in SentenceSplitter()([image]))
    for call in (tiny_parser, tiny_parser.get_nodes_from_documents):
        with pytest.raises(TypeError, match=r"nodes\[1\] is an ImageDocument.*image"):
            call([Document(text=BERLIN), image])


def test_metadata_extractors_keep_the_parsers_keys_out_of_prompts_in_llm_mode(
    tiny_parser: Any,
) -> None:
    """The documented recipe: LlamaIndex's metadata extractors read ``MetadataMode.ALL`` by
    default, which ignores ``excluded_llm_metadata_keys`` and puts the sparse vector in every
    prompt; with ``metadata_mode=MetadataMode.LLM`` the prompt has the text and the user's
    metadata only."""
    from llama_index.core.extractors import KeywordExtractor
    from llama_index.core.llms import CompletionResponse, MockLLM

    prompts: list[str] = []

    class RecordingLLM(MockLLM):
        async def acomplete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponse:
            prompts.append(prompt)
            return CompletionResponse(text="spree, berlin")

    nodes = tiny_parser([Document(text=BERLIN, metadata={"title": "Berlin"})])
    KeywordExtractor(llm=RecordingLLM(), show_progress=False)(nodes[:1])
    assert SPARSE_METADATA_KEY in prompts[-1]  # LlamaIndex's default: every key
    KeywordExtractor(llm=RecordingLLM(), show_progress=False, metadata_mode=MetadataMode.LLM)(
        nodes[1:2]
    )
    assert "title: Berlin" in prompts[-1] and nodes[1].text.strip() in prompts[-1]
    assert SPARSE_METADATA_KEY not in prompts[-1] and LATE_METADATA_KEY not in prompts[-1]


def test_nodes_cut_from_late_chunked_nodes_do_not_inherit_their_sparse_vector(
    tiny_parser: Any, minilm_parser: Any
) -> None:
    """Nodes inherit the metadata of the node they are cut from: a dense-only model's nodes cut
    from another model's late-chunked nodes kept that node's ``m3_sparse``, read back (from
    JSON) as their own sparse vector."""
    parents = tiny_parser([Document(text=BERLIN)])
    assert SPARSE_METADATA_KEY in parents[0].metadata
    nodes = minilm_parser(parents[:1])
    assert all(SPARSE_METADATA_KEY not in n.metadata for n in nodes)
    rebuilt = TextNode.from_json(nodes[0].to_json())
    assert node_vectors(rebuilt).heads == frozenset({Head.DENSE})
