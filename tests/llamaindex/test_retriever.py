"""M3Retriever: hybrid retrieval on the m3kit store, filters, writes, query engine."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from llamaindex_m3.retriever import M3Retriever
from m3kit import Head, M3Encoder
from m3kit.outputs import SparseVector
from m3kit.store import Fusion, point_id

DOCS = [
    Document(
        text="Berlin is the capital of Germany.",
        id_="berlin",
        metadata={"topic": "geo", "year": 2001},
    ),
    Document(
        text="Oxygen has the atomic number 8.",
        id_="oxygen",
        metadata={"topic": "chem", "year": 2010},
    ),
    Document(
        text="The Amazon river flows through Brazil and Peru.",
        id_="amazon",
        metadata={"topic": "geo", "year": 2020},
    ),
    Document(
        text="Photosynthesis turns light into chemical energy.",
        id_="photo",
        metadata={"topic": "bio", "year": 2024},
    ),
]


@pytest.fixture()
def retriever(tiny_encoder: M3Encoder) -> Iterator[M3Retriever]:
    with M3Retriever.from_documents(DOCS, tiny_encoder, similarity_top_k=4) as r:
        yield r


def _texts(hits: list[NodeWithScore]) -> list[str]:
    return [h.node.get_content() for h in hits]


@pytest.mark.parametrize("fusion", ["rrf", "dbsf", "m3"])
def test_each_fusion_finds_the_document(retriever: M3Retriever, fusion: str) -> None:
    retriever.fusion = fusion  # type: ignore[assignment]
    for doc in DOCS:
        hits = retriever.retrieve(doc.text)
        assert _texts(hits)[0] == doc.text, fusion
        assert len(hits) == 4
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_nodes_carry_ids_metadata_and_source(retriever: M3Retriever) -> None:
    hit = retriever.retrieve(DOCS[1].text)[0]
    node = hit.node
    assert isinstance(node, TextNode) and isinstance(hit.score, float)
    assert node.node_id == point_id("oxygen", 0)
    assert node.ref_doc_id == "oxygen"
    assert node.metadata == {"topic": "chem", "year": 2010, "doc_id": "oxygen", "chunk_index": 0}
    from llama_index.core.schema import MetadataMode

    assert "doc_id" not in node.get_content(metadata_mode=MetadataMode.LLM)
    assert "topic: chem" in node.get_content(metadata_mode=MetadataMode.LLM)


def test_similarity_top_k(retriever: M3Retriever) -> None:
    retriever.similarity_top_k = 1
    assert len(retriever.retrieve("capital")) == 1
    with pytest.raises(ValueError, match="similarity_top_k"):
        M3Retriever(retriever.index, similarity_top_k=0)


@pytest.mark.parametrize("value", [True, 2.5, "3"])
def test_similarity_top_k_that_is_not_a_positive_int_is_refused(
    retriever: M3Retriever, value: object
) -> None:
    # True was taken as 1, 2.5 failed at the first retrieve, "3" with a bare TypeError
    with pytest.raises(ValueError, match=rf"similarity_top_k must be an int >= 1, not {value!r}"):
        M3Retriever(retriever.index, similarity_top_k=value)  # type: ignore[arg-type]


async def test_sync_equals_async(retriever: M3Retriever) -> None:
    for doc in DOCS[:2]:
        sync = retriever.retrieve(doc.text)
        asyn = await retriever.aretrieve(doc.text)
        assert [h.node.node_id for h in asyn] == [h.node.node_id for h in sync]
        assert [h.score for h in asyn] == pytest.approx([h.score for h in sync], abs=1e-6)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (MetadataFilters(filters=[MetadataFilter(key="topic", value="geo")]), {"berlin", "amazon"}),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="topic", value=["bio", "chem"], operator=FilterOperator.IN)
                ]
            ),
            {"oxygen", "photo"},
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="topic", value="geo"),
                    MetadataFilter(key="year", value=2010, operator=FilterOperator.GT),
                ]
            ),
            {"amazon"},
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="doc_id", value="berlin"),
                    MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE),
                ],
                condition="or",
            ),
            {"berlin", "photo"},
        ),
        (
            MetadataFilters(filters=[MetadataFilter(key="topic", value="geo")], condition="not"),
            {"oxygen", "photo"},
        ),
    ],
)
def test_metadata_filters_restrict(
    retriever: M3Retriever, filters: MetadataFilters, expected: set[str]
) -> None:
    retriever.filters = filters
    for query in ("capital of Germany", DOCS[1].text):
        assert {h.node.ref_doc_id for h in retriever.retrieve(query)} == expected


def test_unsupported_filter_refused_when_built(retriever: M3Retriever) -> None:
    bad = MetadataFilters(
        filters=[MetadataFilter(key="t", value="x", operator=FilterOperator.TEXT_MATCH_INSENSITIVE)]
    )
    with pytest.raises(NotImplementedError, match="TEXT_MATCH_INSENSITIVE"):
        M3Retriever(retriever.index, filters=bad)


def test_a_filter_that_is_not_metadata_filters_is_refused_by_name(retriever: M3Retriever) -> None:
    # a {key: value} dict (what the core and LangChain take) failed with "'dict' object has
    # no attribute 'filters'", when built and at each query once assigned
    with pytest.raises(TypeError, match="MetadataFilters, not dict"):
        M3Retriever(retriever.index, filters={"topic": "geo"})  # type: ignore[arg-type]
    retriever.filters = {"topic": "geo"}  # type: ignore[assignment]
    with pytest.raises(TypeError, match="MetadataFilters, not dict"):
        retriever.retrieve("capital")


def test_query_engine_with_mock_llm(retriever: M3Retriever) -> None:
    retriever.similarity_top_k = 2
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = engine.query(DOCS[3].text)
    assert str(response)
    assert response.source_nodes[0].node.ref_doc_id == "photo"
    assert len(response.source_nodes) == 2


async def test_async_query_engine(retriever: M3Retriever) -> None:
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = await engine.aquery(DOCS[2].text)
    assert response.source_nodes[0].node.ref_doc_id == "amazon"


def test_adding_again_neither_duplicates_nor_loses(retriever: M3Retriever) -> None:
    index = retriever.index
    assert index.count() == 4
    assert retriever.add_documents(DOCS) == ["berlin", "oxygen", "amazon", "photo"]
    assert index.count() == 4
    changed = Document(text="Berlin is a city of 3.7 million people.", id_="berlin")
    retriever.add_documents([changed])
    assert index.count() == 4
    assert _texts(retriever.retrieve(changed.text))[0] == changed.text
    assert DOCS[0].text not in _texts(retriever.retrieve(DOCS[0].text))
    with pytest.raises(TypeError, match="not a single string"):
        retriever.delete("berlin")  # type: ignore[arg-type]
    assert index.count() == 4
    retriever.delete(["berlin"])
    assert index.count() == 3


def test_documents_without_ids_get_content_ids(tiny_encoder: M3Encoder) -> None:
    docs = [Document(text="Iron is Fe."), Document(text="Gold is Au.")]
    again = [Document(text="Iron is Fe."), Document(text="Gold is Au.")]
    assert docs[0].doc_id != again[0].doc_id  # LlamaIndex draws random ids
    from llamaindex_m3 import M3Embedding

    with M3Retriever.open(M3Embedding.from_encoder(tiny_encoder)) as r:  # or the encoder
        assert r.index.encoder is tiny_encoder
        first = r.add_documents(docs)
        assert r.add_documents(again) == first
        assert r.index.count() == 2


def test_late_chunking(tiny_encoder: M3Encoder) -> None:
    long = Document(
        text=" ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(60)),
        id_="long",
    )
    with M3Retriever.from_documents([long], tiny_encoder, late_chunking=True) as r:
        assert r.index.count() > 1
        hit = r.retrieve("Sentence number 42 talks about topic 2.")[0]
        assert hit.node.ref_doc_id == "long" and hit.node.metadata["chunk_index"] >= 0


def test_add_nodes_from_a_node_parser(tiny_encoder: M3Encoder) -> None:
    long = Document(
        text="\n\n".join(f"Paragraph {i} is about subject {i}. " * 6 for i in range(8)),
        id_="essay",
        metadata={"kind": "essay"},
    )
    nodes = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents([long])
    assert len(nodes) > 2
    with M3Retriever.open(tiny_encoder, similarity_top_k=len(nodes)) as r:
        ids = r.add_nodes(nodes)
        assert ids == [n.node_id for n in nodes]  # LlamaIndex's convention: the node ids
        assert r.index.count() == len(nodes)
        assert r.index.store.get([point_id("essay", 3)])[0].text == nodes[3].get_content()
        hits = r.retrieve(nodes[3].get_content())
        assert hits[0].node.node_id == ids[3]
        assert hits[0].node.metadata["chunk_index"] == 3
        assert hits[0].node.metadata["kind"] == "essay"
        assert r.add_nodes(nodes) == ids and r.index.count() == len(nodes)
        r.add_nodes(nodes[:2])  # the document now has two chunks: stale ones are removed
        assert r.index.count() == 2
        with pytest.raises(TypeError, match="nodes\\[0\\]"):
            r.add_nodes(["text"])  # type: ignore[list-item]


def test_dense_only_model(minilm_encoder: M3Encoder) -> None:
    with M3Retriever.from_documents(DOCS, minilm_encoder, similarity_top_k=1) as r:
        assert r.retrieve("What is the capital of Germany?")[0].node.ref_doc_id == "berlin"
        assert r.retrieve("atomic number of oxygen")[0].node.ref_doc_id == "oxygen"


def test_add_nodes_keeps_late_chunked_vectors(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamaindex_m3.node_parser import SPARSE_METADATA_KEY, M3LateChunkingNodeParser

    long = Document(
        text=" ".join(f"Sentence {i} is about theme {i % 7}." for i in range(80)),
        id_="late",
        metadata={"kind": "late"},
    )
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=48)
    assert parser.chunker.late_heads == set(Head)  # the default: every head of an M3 model
    nodes = parser.get_nodes_from_documents([long])
    assert len(nodes) > 2
    with M3Retriever.open(tiny_encoder, similarity_top_k=1) as r:

        def no_encoding(*args: object, **kwargs: object) -> None:
            raise AssertionError("late-chunked nodes must not be encoded again")

        monkeypatch.setattr(r.index.encoder, "encode", no_encoding)
        ids = r.add_nodes(nodes)
        monkeypatch.undo()
        assert r.index.count() == len(nodes)
        for i, node in enumerate(nodes):  # the stored dense vector is the late-chunked one
            (hit,) = r.index.store.query(dense=node.embedding, k=1, rerank=False)
            assert hit.chunk_id == ids[i] and hit.score == pytest.approx(1.0, abs=1e-4)
            assert SPARSE_METADATA_KEY not in hit.metadata and hit.metadata["kind"] == "late"
        # nodes rebuilt from JSON (a docstore, an IngestionPipeline cache) lose ColBERT: an
        # unchanged, stored document is skipped; a store without it gets an error, never a
        # silent re-encoding of each chunk on its own text
        rebuilt = [TextNode.from_json(n.to_json()) for n in nodes]
        assert all(SPARSE_METADATA_KEY in n.metadata for n in rebuilt)
        monkeypatch.setattr(r.index.encoder, "encode", no_encoding)
        assert r.add_nodes(rebuilt) == ids
        monkeypatch.undo()
        with M3Retriever.open(tiny_encoder, collection="fresh") as fresh:
            with pytest.raises(ValueError, match="rebuilt from JSON.*colbert.*disable_cache=True"):
                fresh.add_nodes(rebuilt)
            assert fresh.index.count() == 0
        # the same text split by a plain parser is another version: re-encoded, replaced
        plain = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents([long])
        r.add_nodes(plain)
        assert r.index.count() == len(plain)


def test_ingestion_pipeline_cache_keeps_late_vectors(
    minilm_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached pipeline run hands back rebuilt nodes; a dense-only store takes their vectors."""
    from llama_index.core.ingestion import IngestionPipeline

    from llamaindex_m3.node_parser import M3LateChunkingNodeParser

    doc = Document(text=" ".join(f"Sentence {i} is about theme {i % 7}." for i in range(40)))
    pipeline = IngestionPipeline(
        transformations=[M3LateChunkingNodeParser.from_encoder(minilm_encoder, chunk_size=32)]
    )
    live = pipeline.run(documents=[doc])
    cached = pipeline.run(documents=[doc])  # from the pipeline's cache: plain TextNodes
    assert len(live) == len(cached) > 2 and not isinstance(cached[0], type(live[0]))

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("late-chunked nodes must not be encoded again")

    with M3Retriever.open(minilm_encoder, similarity_top_k=1) as r:
        monkeypatch.setattr(r.index.encoder, "encode", no_encoding)
        ids = r.add_nodes(cached)
        monkeypatch.undo()
        assert r.index.count() == len(live)
        for i, node in enumerate(live):  # stored: the live late-chunked dense vectors
            (hit,) = r.index.store.query(dense=node.embedding, k=1, rerank=False)
            assert hit.chunk_id == ids[i] and hit.score == pytest.approx(1.0, abs=1e-5)
            assert "m3_late_chunk" not in hit.metadata


def test_rerank_and_score_threshold(retriever: M3Retriever) -> None:
    reranked = retriever.retrieve(DOCS[0].text)
    retriever.rerank = False  # fused dense + sparse scores only, no ColBERT MaxSim
    fused = retriever.retrieve(DOCS[0].text)
    assert _texts(fused)[0] == _texts(reranked)[0] == DOCS[0].text
    assert [h.score for h in fused] != pytest.approx([h.score for h in reranked])
    retriever.rerank = None
    retriever.score_threshold = reranked[0].score + 1.0
    assert retriever.retrieve(DOCS[0].text) == []


@pytest.mark.parametrize("fusion", ["rrf", "m3"])
async def test_custom_embedding_strs_search_their_mean_on_the_scale_of_one_query(
    retriever: M3Retriever, fusion: str
) -> None:
    # HyDE and other query transforms set custom_embedding_strs; LlamaIndex's vector retriever
    # averages their embeddings into one query. They used to be searched one by one and
    # RRF-fused: scores fell to the RRF scale (~0.03), so a similarity_cutoff dropped them all
    from llama_index.core.postprocessor import SimilarityPostprocessor
    from llama_index.core.schema import QueryBundle

    retriever.fusion = Fusion(fusion)
    retriever.similarity_top_k = 3
    text = DOCS[0].text
    single = retriever.retrieve(text)
    twice = retriever.retrieve(QueryBundle("not searched", custom_embedding_strs=[text, text]))
    assert [h.node.node_id for h in twice] == [h.node.node_id for h in single]
    assert [h.score for h in twice] == pytest.approx([h.score for h in single], rel=1e-4)
    cutoff = SimilarityPostprocessor(similarity_cutoff=0.5 * (single[-1].score or 0.0))
    assert len(cutoff.postprocess_nodes(twice)) == len(single)

    # two texts: one search with the mean of their query vectors (dense: the normalised mean,
    # sparse: the mean weights, ColBERT: their tokens together, a token-weighted mean MaxSim)
    texts = [DOCS[0].text, DOCS[3].text]
    index = retriever.index
    out = index.encoder.encode(texts, heads=sorted(index.store.heads), query=True)
    dense = out.dense.mean(axis=0)
    weights: dict[int, float] = {}
    for vec in out.sparse:
        for i, w in zip(vec.indices.tolist(), vec.values.tolist(), strict=True):
            weights[i] = weights.get(i, 0.0) + w / len(texts)
    settings = index.search_settings(fusion=fusion)
    expected = index.store.query(
        dense=dense / np.linalg.norm(dense),
        sparse=SparseVector.from_mapping(weights),
        colbert=np.concatenate(out.colbert),
        k=3,
        fusion=settings.fusion,
        rerank=True,
        weights=settings.weights if settings.fusion is Fusion.M3 else None,
        candidates=settings.candidates,
    )
    bundle = QueryBundle("not searched", custom_embedding_strs=texts)
    hits = retriever.retrieve(bundle)
    assert [h.node.node_id for h in hits] == [h.chunk_id or h.id for h in expected]
    assert [h.score for h in hits] == pytest.approx([h.score for h in expected], rel=1e-4)
    assert hits[0].node.ref_doc_id in {"berlin", "photo"}
    ahits = await retriever.aretrieve(bundle)
    assert [h.score for h in ahits] == pytest.approx([h.score for h in hits], rel=1e-4)


async def test_aadd_documents(tiny_encoder: M3Encoder) -> None:
    with M3Retriever.open(tiny_encoder, similarity_top_k=1) as r:
        assert await r.aadd_documents(DOCS) == [d.doc_id for d in DOCS]
        assert await r.aadd_documents(DOCS) == [d.doc_id for d in DOCS]
        assert r.index.count() == len(DOCS)
        assert (await r.aretrieve(DOCS[2].text))[0].node.ref_doc_id == "amazon"


async def test_async_node_writes_equal_the_sync_ones(tiny_encoder: M3Encoder) -> None:
    """``add_nodes`` and ``delete`` had no async twin: an async app wrapped them in a thread
    of its own, which no cancel stops."""
    nodes = SentenceSplitter(chunk_size=40, chunk_overlap=0).get_nodes_from_documents(
        [Document(text=d.text, id_=d.doc_id) for d in DOCS]
    )
    with M3Retriever.open(tiny_encoder) as sync, M3Retriever.open(tiny_encoder) as r:
        assert await r.aadd_nodes(nodes) == sync.add_nodes(nodes)
        assert r.index.count() == sync.index.count() == len(nodes)
        await r.adelete([DOCS[0].doc_id])
        sync.delete([DOCS[0].doc_id])
        assert r.index.count() == sync.index.count() < len(nodes)


def test_read_back_nodes_replace_their_document_only_whole(tiny_encoder: M3Encoder) -> None:
    # add_nodes replaces a document with the nodes given: one read-back chunk, edited and added
    # again, used to delete the document's other chunks
    text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(18))
    nodes = SentenceSplitter(chunk_size=40, chunk_overlap=0).get_nodes_from_documents(
        [Document(text=text, id_="long")]
    )
    with M3Retriever.open(tiny_encoder) as r:
        r.add_nodes(nodes)
        count = r.index.count()
        assert count >= 3
        back = [h.node for h in r.retrieve(nodes[1].get_content())]
        one = next(n for n in back if n.ref_doc_id == "long")
        one.set_content("An edited sentence.")
        with pytest.raises(ValueError, match="others would be deleted"):
            r.add_nodes([one])
        assert r.index.count() == count


def test_add_nodes_encodes_the_text_the_embedding_model_sees(tiny_encoder: M3Encoder) -> None:
    """MetadataMode.EMBED (a title in the metadata counts), as M3VectorStore and LlamaIndex;
    the stored text stays the node's own."""
    from llama_index.core.schema import MetadataMode

    node = TextNode(text="It has the atomic number 8.", id_="n1", metadata={"title": "Oxygen"})
    embed_text = node.get_content(metadata_mode=MetadataMode.EMBED)
    assert embed_text != node.get_content(metadata_mode=MetadataMode.NONE)
    with M3Retriever.open(tiny_encoder) as r:
        r.add_nodes([node])
        want = tiny_encoder.encode([embed_text], heads=["dense", "sparse"], show_progress=False)
        (hit,) = r.index.store.query(dense=want.dense[0], k=1, rerank=False)
        assert hit.score == pytest.approx(1.0, abs=1e-5) and hit.text == node.text
        weights = want.sparse[0].to_dict()
        (hit,) = r.index.store.query(sparse=want.sparse[0], k=1, rerank=False)
        assert hit.score == pytest.approx(sum(w * w for w in weights.values()), rel=1e-4)
