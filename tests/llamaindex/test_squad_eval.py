"""Retrieval quality through M3Retriever on real data: squad_en with real MiniLM weights.

The 214 paragraphs of the squad_en sample in tests/data are indexed through
``M3Retriever.add_documents`` (dense-only checkpoint, so plain dense search in Qdrant) and a
seeded sample of 300 questions is retrieved through LlamaIndex's ``retrieve``; nDCG@10 is
computed with :mod:`m3kit.evaluation`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from llama_index.core import Document

from llamaindex_m3 import M3Retriever
from m3kit import M3Encoder
from m3kit.evaluation import evaluate_rankings, load_beir

SAMPLE = 300
SEED = 13
NDCG10_FLOOR = 0.8  # all-MiniLM-L6-v2 reaches 0.874 here (hit@1 0.750); random ranking
# scores 0.02 and the right article but a random paragraph ~0.17, so a broken pipeline
# (wrong ids, query/passage mix-up, truncation to nothing) is far below it


@pytest.mark.slow
def test_squad_ndcg_through_m3retriever(
    minilm_encoder: M3Encoder, squad_sample_dir: Path, tmp_path: Path
) -> None:
    data = load_beir(squad_sample_dir)
    assert len(data.corpus) == 214
    docs = [Document(text=text, id_=doc_id) for doc_id, text in data.corpus.items()]
    qids = sorted(data.qrels)
    sample = random.Random(SEED).sample(qids, SAMPLE)
    with M3Retriever.from_documents(
        docs, minilm_encoder, location=tmp_path, collection="squad", similarity_top_k=10
    ) as retriever:
        assert retriever.index.count() == 214
        run = {
            qid: [h.node.ref_doc_id or "" for h in retriever.retrieve(data.queries[qid])]
            for qid in sample
        }
    metrics = evaluate_rankings(run, {q: data.qrels[q] for q in sample}, ks=(1, 10))
    print(
        f"\nsquad_en sample via M3Retriever (MiniLM, {SAMPLE} queries, seed {SEED}): "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    )
    assert metrics["queries"] == SAMPLE
    assert metrics["ndcg@10"] > NDCG10_FLOOR
    assert metrics["hit@10"] >= metrics["hit@1"] > 0.65
