"""llamaindex_m3.M3Reranker: a BaseNodePostprocessor over m3kit.rerank, for any nodes."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from pydantic import ValidationError

from llamaindex_m3 import M3Embedding, M3Reranker, M3Retriever
from llamaindex_m3 import postprocessor as postprocessor_module
from m3kit import M3Encoder
from m3kit.rerank import M3Reranker as CoreReranker
from m3kit.rerank import RerankConfig
from m3kit.testing import SAMPLE_TEXTS
from tests.encode_spy import show_progress_calls

QUERY = SAMPLE_TEXTS[2]


def _nodes() -> list[NodeWithScore]:
    nodes: list[NodeWithScore] = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"i": i}), score=0.0)
        for i, t in enumerate(SAMPLE_TEXTS[:5])
    ]
    nodes.append(NodeWithScore(node=Document(text=SAMPLE_TEXTS[6], id_="doc")))  # no score
    return nodes


def test_scores_and_order_equal_the_core_reranker(tiny_encoder: M3Encoder) -> None:
    weights = (0.2, 0.3, 0.5)
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=3, weights=weights)
    assert isinstance(reranker, BaseNodePostprocessor)
    nodes = _nodes()
    out = reranker.postprocess_nodes(nodes, query_str=QUERY)
    core = CoreReranker(tiny_encoder, RerankConfig(weights=weights))
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    expected = core.rerank(QUERY, texts, top_n=3)
    assert [n.node.node_id for n in out] == [nodes[r.index].node.node_id for r in expected]
    assert [n.score for n in out] == [r.score for r in expected]
    assert out[0].node.node_id == "n2"
    assert out[0].node is nodes[2].node  # the node itself, not a copy
    assert [n.score for n in nodes] == [0.0] * 5 + [None]  # input untouched


def test_top_n_none_and_no_nodes(tiny_encoder: M3Encoder) -> None:
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=None, mode="sparse")
    out = reranker.postprocess_nodes(_nodes(), query_str=QUERY)
    assert len(out) == len(_nodes())
    assert reranker.postprocess_nodes([], query_str=QUERY) == []


def test_scores_the_text_the_embedding_model_sees_as_stock_rerankers_do(
    tiny_encoder: M3Encoder,
) -> None:
    """LlamaIndex's rerankers (``SentenceTransformerRerank``, ``CohereRerank``, the
    FlagEmbedding and ColBERT ones) score ``get_content(MetadataMode.EMBED)``: the metadata a
    node shows its embedding model (``excluded_embed_metadata_keys`` hides keys), the text
    ``M3Embedding`` and ``M3VectorStore`` encode. ``M3Reranker`` scored the text alone
    (``MetadataMode.NONE``), so a node whose title is in its metadata ranked as if it had none.
    ``metadata_mode`` picks the text; ``"none"`` scores the text alone."""
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=None, mode="sparse")
    plain = TextNode(text="Bees dance.", id_="plain")
    tagged = TextNode(text="Bees dance.", id_="tagged", metadata={"topic": QUERY})
    hidden = TextNode(
        text="Bees dance.",
        id_="hidden",
        metadata={"topic": QUERY},
        excluded_embed_metadata_keys=["topic"],
    )
    nodes = [NodeWithScore(node=n) for n in (plain, tagged, hidden)]
    out = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert out[0].node.node_id == "tagged"
    core = reranker.reranker.score(
        QUERY, [n.get_content(metadata_mode=MetadataMode.EMBED) for n in (plain, tagged)]
    )
    scores = {n.node.node_id: n.score for n in out}
    assert (scores["tagged"], scores["plain"]) == (core[1].sparse, core[0].sparse)
    assert scores["hidden"] == scores["plain"]  # an excluded key is not scored
    text_alone = M3Reranker.from_encoder(
        tiny_encoder, top_n=None, mode="sparse", metadata_mode="none"
    )
    alone = text_alone.postprocess_nodes(nodes, query_str=QUERY)
    assert len({n.score for n in alone}) == 1
    assert alone[0].score == pytest.approx(scores["plain"], abs=1e-5)  # batches pad otherwise


async def test_async(tiny_encoder: M3Encoder) -> None:
    reranker = M3Reranker.from_encoder(tiny_encoder)
    sync = reranker.postprocess_nodes(_nodes(), query_str=QUERY)
    got = await reranker.apostprocess_nodes(_nodes(), query_str=QUERY)
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in sync]


def test_in_a_query_engine(tiny_encoder: M3Encoder) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder)
    docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS)]
    with M3Retriever.from_documents(docs, embed, similarity_top_k=6) as retriever:
        engine = RetrieverQueryEngine.from_args(
            retriever,
            llm=MockLLM(),
            node_postprocessors=[M3Reranker.from_encoder(tiny_encoder, top_n=2)],
        )
        response = engine.query(QUERY)
    assert len(response.source_nodes) == 2
    assert response.source_nodes[0].node.get_content() == QUERY
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


def test_fields_and_errors(tiny_encoder: M3Encoder, minilm_encoder: M3Encoder) -> None:
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=4, mode="colbert")
    assert (reranker.top_n, reranker.mode.value, reranker.dtype.value) == (4, "colbert", "fp32")
    assert Path(reranker.model_name) == tiny_encoder.info.path  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="extra"):
        M3Reranker.from_encoder(tiny_encoder, similarity_top_k=3)
    with pytest.raises(ValidationError, match="weights"):
        M3Reranker.from_encoder(tiny_encoder, weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="come from the encoder"):
        M3Reranker.from_encoder(tiny_encoder, device="cpu")
    with pytest.raises((ValueError, ValidationError), match="needs the"):
        M3Reranker.from_encoder(minilm_encoder)
    with pytest.raises(ValueError, match="query"):
        reranker.postprocess_nodes(_nodes())
    # loading by path builds its own encoder with the same scores
    by_path = M3Reranker(model_name=str(tiny_encoder.info.path), dtype="fp32", top_n=None)  # type: ignore[union-attr]
    assert [n.score for n in by_path.postprocess_nodes(_nodes(), query_str=QUERY)] == [
        n.score
        for n in M3Reranker.from_encoder(tiny_encoder, top_n=None).postprocess_nodes(
            _nodes(), query_str=QUERY
        )
    ]


def test_module_example() -> None:
    result = doctest.testmod(postprocessor_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_from_dict_and_pickle_keep_the_encoders_max_length_and_instruction(
    tiny_m3_path: Path, tiny_encoder: M3Encoder
) -> None:
    """The reranker had no ``max_length`` nor ``query_instruction`` field (LangChain's has):
    ``M3Reranker(model_name=..., max_length=128)`` was refused, and ``from_dict`` / a pickle
    of one built on an encoder with ``max_length=8`` could not restore it (the checkpoint
    loaded at its default: refused as another encoder). Both are fields now, as
    ``M3Embedding``'s; ``to_dict`` records the encoder's identity and ``from_dict`` checks it."""
    import pickle

    short = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=8)
    reranker = M3Reranker.from_encoder(short, top_n=None)
    assert reranker.max_length == 8
    scores = [n.score for n in reranker.postprocess_nodes(_nodes(), query_str=QUERY)]
    for again in (
        M3Reranker.from_dict(reranker.to_dict()),
        M3Reranker.from_json(reranker.to_json()),
        pickle.loads(pickle.dumps(reranker)),
    ):
        assert again.reranker.encoder.max_length == 8
        assert [n.score for n in again.postprocess_nodes(_nodes(), query_str=QUERY)] == scores
    built = M3Reranker(model_name=str(tiny_m3_path), max_length=8, query_instruction="q: ")
    assert built.reranker.encoder.max_length == 8
    assert built.reranker.encoder.query_instruction == "q: "
    with pytest.raises(ValueError, match="checkpoint at .* is another one"):
        M3Reranker.from_dict({**reranker.to_dict(), "max_length": None})
    same = M3Reranker.from_encoder(tiny_encoder, top_n=None, mode="colbert")
    again = M3Reranker.from_dict(same.to_dict())
    assert again.mode.value == "colbert" and again.to_dict() == same.to_dict()
    assert [n.score for n in again.postprocess_nodes(_nodes(), query_str=QUERY)] == [
        n.score for n in same.postprocess_nodes(_nodes(), query_str=QUERY)
    ]


def test_show_progress_is_off_unless_asked(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the core's default shows a bar when the candidates take more than one batch: every
    # query of a query engine that retrieves 50 and reranks to 5 printed one
    seen = show_progress_calls(tiny_encoder, monkeypatch)
    for given, want in (({}, False), ({"show_progress": True}, True)):
        seen.clear()
        M3Reranker.from_encoder(tiny_encoder, **given).postprocess_nodes(
            _nodes(), query_str="capital"
        )
        assert seen[-1] is want  # the candidates' encode (the query's shows none)
