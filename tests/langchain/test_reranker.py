"""langchain_m3.M3Reranker: a BaseDocumentCompressor over m3kit.rerank (top_n, weights, scores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ValidationError

from langchain_m3 import M3Reranker, M3VectorStore
from m3kit import M3Encoder
from m3kit.rerank import M3Reranker as CoreReranker
from m3kit.rerank import RerankConfig
from m3kit.testing import SAMPLE_TEXTS
from tests.encode_spy import show_progress_calls

QUERY = SAMPLE_TEXTS[2]
DOCS = [Document(t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(SAMPLE_TEXTS[:6])]


def test_compress_documents_orders_by_core_scores(tiny_encoder: M3Encoder) -> None:
    weights = (1.0, 0.5, 2.0)
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=3, weights=weights)
    assert isinstance(reranker, BaseDocumentCompressor)
    out = reranker.compress_documents(DOCS, QUERY)
    core = CoreReranker(tiny_encoder, RerankConfig(weights=weights))
    expected = core.rerank(QUERY, [d.page_content for d in DOCS], top_n=3)
    assert [d.id for d in out] == [f"d{r.index}" for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == [r.score for r in expected]
    assert out[0].id == "d2"  # the query's own text
    assert out[0].metadata["n"] == 2
    assert all("relevance_score" not in d.metadata for d in DOCS)  # input untouched


def test_top_n_none_and_modes(tiny_encoder: M3Encoder) -> None:
    everything = M3Reranker.from_encoder(tiny_encoder, top_n=None, mode="colbert")
    out = everything.compress_documents(DOCS, QUERY)
    assert sorted(d.id for d in out) == sorted(d.id for d in DOCS)  # type: ignore[type-var]
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    colbert = everything.reranker.score(QUERY, [out[0].page_content])[0].colbert
    assert scores[0] == colbert
    assert everything.compress_documents([], QUERY) == []


async def test_async(tiny_encoder: M3Encoder) -> None:
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=2)
    assert await reranker.acompress_documents(DOCS, QUERY) == reranker.compress_documents(
        DOCS, QUERY
    )


def test_contextual_compression_retriever(tiny_encoder: M3Encoder) -> None:
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    with M3VectorStore.from_documents(DOCS, tiny_encoder) as store:
        pipeline = retrievers.ContextualCompressionRetriever(
            base_compressor=M3Reranker.from_encoder(tiny_encoder, top_n=2),
            base_retriever=store.as_retriever(search_kwargs={"k": 5}),
        )
        docs = pipeline.invoke(QUERY)
        assert len(docs) == 2 and docs[0].id == "d2"
        assert docs[0].metadata["relevance_score"] >= docs[1].metadata["relevance_score"]


def test_bad_configuration(tiny_encoder: M3Encoder, minilm_encoder: M3Encoder) -> None:
    with pytest.raises(ValidationError, match="weights"):
        M3Reranker.from_encoder(tiny_encoder, weights=(1.0, -1.0, 1.0))
    with pytest.raises(ValidationError, match="top_n"):
        M3Reranker.from_encoder(tiny_encoder, top_n=0)
    with pytest.raises(ValidationError, match="extra"):
        M3Reranker.from_encoder(tiny_encoder, k=3)
    with pytest.raises((ValueError, ValidationError), match="needs the"):
        M3Reranker.from_encoder(minilm_encoder)
    dense = M3Reranker.from_encoder(minilm_encoder, mode="dense", top_n=1)
    assert dense.compress_documents(DOCS, QUERY)[0].id == "d2"
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        dense.compress_documents(["text"], QUERY)  # type: ignore[list-item]


def test_a_sparse_dense_mode_without_its_weights_is_refused_when_built(
    tiny_encoder: M3Encoder,
) -> None:
    """``mode="sparse+dense"`` with weights ``[0, 0, 1]`` (its dense and sparse weights both
    0) has no score to order by: it was built and failed only at the first
    ``compress_documents`` ("no 'sparse+dense' score"). It is refused when built, naming the
    weights, as all-zero weights are (``RerankConfig``, so LlamaIndex's reranker too)."""
    with pytest.raises(ValueError, match=r"'sparse\+dense'.*\[0\.0, 0\.0, 1\.0\]"):
        RerankConfig(mode="sparse+dense", weights=(0.0, 0.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"'sparse\+dense'"):
        M3Reranker.from_encoder(tiny_encoder, mode="sparse+dense", weights=(0.0, 0.0, 1.0))
    dense_only = M3Reranker.from_encoder(tiny_encoder, mode="sparse+dense", weights=(1, 0, 0))
    assert dense_only.compress_documents(DOCS, QUERY)[0].id == "d2"


def test_top_n_is_read_per_call_so_it_can_be_changed(tiny_encoder: M3Encoder) -> None:
    """``top_n`` is read by each ``compress_documents`` call (as LangChain's
    ``CrossEncoderReranker`` / ``CohereRerank`` read theirs), yet assigning it raised
    "read once, when the M3Reranker is built ... would change nothing" and
    ``model_copy(update={"top_n": ...})`` refused it likewise: both now work, validated; the
    fields read when the reranker is built are still refused."""
    reranker = M3Reranker.from_encoder(tiny_encoder, top_n=3)
    reranker.top_n = 1
    assert [d.id for d in reranker.compress_documents(DOCS, QUERY)] == ["d2"]
    with pytest.raises(ValidationError, match="top_n"):
        reranker.top_n = 0
    assert reranker.top_n == 1
    everything = reranker.model_copy(update={"top_n": None})
    assert len(everything.compress_documents(DOCS, QUERY)) == len(DOCS)
    assert everything.encoder is reranker.encoder and reranker.top_n == 1
    with pytest.raises(AttributeError, match="weights"):
        reranker.weights = (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="mode"):
        reranker.model_copy(update={"mode": "dense"})


def test_a_passage_length_past_the_models_is_refused(tiny_m3_path: Path) -> None:
    """``max_length=8`` with ``max_passage_length=100`` ranked by the first 8 tokens, silently
    (as in the core test ``test_a_length_past_the_encoders_is_refused_not_cut_there``)."""
    with pytest.raises(ValueError, match=r"max_passage_length=100 .*max_length 8"):
        M3Reranker(
            model_name_or_path=str(tiny_m3_path), dtype="fp32", max_length=8, max_passage_length=100
        )


def test_show_progress_reaches_the_candidates_encode(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``show_progress`` was never passed on: a bar appeared whenever the documents took more
    than one batch, also with ``show_progress=False`` (the default), and ``True`` showed none
    for one batch."""
    seen = show_progress_calls(tiny_encoder, monkeypatch)
    for flag in (False, True):
        seen.clear()
        M3Reranker.from_encoder(tiny_encoder, show_progress=flag).compress_documents(DOCS, QUERY)
        assert seen[-1] is flag  # the candidates' encode (the query's shows none)
