"""BM25 top-100 reranked by ``M3Reranker`` vs BM25 alone vs the three-way hybrid (issue #16).

On the held-out squad_en articles of ``quality_model.py``'s split (paragraphs as passages,
their questions as queries), nDCG@10 side by side:

- ``BM25``: bm25s (Lucene BM25, k1 1.5, b 0.75, English stop words, Snowball English
  stemmer), top 100 (passages sharing no term with the query are not retrieved);
- ``BM25 -> M3Reranker``: those 100 candidates re-scored by :class:`m3kit.rerank.M3Reranker`
  (default config, like FlagEmbedding's ``compute_score``: ``colbert+sparse+dense`` with
  weights 0.4 / 0.2 / 0.4), and, for reference, by each of its other scores;
- ``M3VectorStore hybrid``: :class:`langchain_m3.M3VectorStore` (embedded engine, a temp folder)
  ``similarity_search``: dense + sparse prefetch, RRF, ColBERT rerank (default), and the same
  candidates ranked by FlagEmbedding's weighted sum (``fusion="m3"``).

Run::

    python benchmarks/quality_model.py --out /tmp/m3kit-bench/minilm-m3-ft   # the model
    python benchmarks/rerank.py --model /tmp/m3kit-bench/minilm-m3-ft

Needs ``bm25s`` (in the ``dev`` extra). Writes ``--out`` (a stem: ``.json`` and ``.md``;
default a new time-stamped ``benchmarks/results/rerank_<UTC time>``); an existing file is never
written over. The results record the sha256 of the scored model's weight files.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence

from _bench import (
    RunStart,
    checkpoint_digest,
    command_line,
    machine_facts,
    model_provenance,
    positive_int,
    refuse_existing,
)
from _quality_data import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    bm25_runs,
    check_model,
    held_out,
    offline_env,
    results_paths,
    results_stem,
    write_results,
)

BM25_DEPTH = 100
METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@10", "recall@100")


def rerank_runs(
    model: str,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, list[str]]]:
    """Each candidate list re-ordered by every score of :class:`~m3kit.rerank.M3Reranker`."""
    from m3kit import M3Encoder
    from m3kit.rerank import M3Reranker, RerankMode

    reranker = M3Reranker(M3Encoder.from_pretrained(model, dtype="fp32", device="cpu"))
    pairs = [(queries[q], corpus[d]) for q, docs in candidates.items() for d in docs]
    scores = iter(reranker.score_pairs(pairs, show_progress=False))  # each text encoded once
    per_query = {q: [next(scores) for _ in docs] for q, docs in candidates.items()}
    runs: dict[str, dict[str, list[str]]] = {}
    for mode in RerankMode:
        run = {}
        for q, docs in candidates.items():
            s = [p.get(mode) for p in per_query[q]]
            order = sorted(range(len(docs)), key=lambda i: -s[i])  # stable: ties keep BM25 order
            run[q] = [docs[i] for i in order]
        runs[mode.value] = run
    return runs


def hybrid_runs(
    model: str, corpus: Mapping[str, str], queries: Mapping[str, str]
) -> dict[str, dict[str, list[str]]]:
    """Rankings of ``langchain_m3.M3VectorStore.similarity_search`` (RRF and M3 fusion)."""
    from langchain_m3 import M3VectorStore
    from m3kit import M3Encoder

    encoder = M3Encoder.from_pretrained(model, dtype="fp32", device="cpu")
    runs: dict[str, dict[str, list[str]]] = {"rrf": {}, "m3": {}}
    with tempfile.TemporaryDirectory(prefix="m3kit-rerank-") as folder:
        store = M3VectorStore.from_texts(
            list(corpus.values()), encoder, ids=list(corpus), location=folder, collection="rerank"
        )
        with store:
            for qid, text in queries.items():
                for fusion, run in runs.items():
                    docs = store.similarity_search(text, k=10, fusion=fusion)
                    run[qid] = [str(d.id) for d in docs]
    return runs


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="three-head M3 checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--eval-queries", type=positive_int, default=800, help="seeded sample")
    parser.add_argument("--seed", type=int, default=0, help="the split quality_model.py used")
    parser.add_argument("--depth", type=int, default=BM25_DEPTH, help="BM25 candidates")
    parser.add_argument(
        "--out", default=None, help="results stem (default: benchmarks/results/rerank_<UTC time>)"
    )
    args = parser.parse_args(argv)
    stem = results_stem(args.out, None, "rerank")
    refuse_existing(results_paths(stem))
    offline_env()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("m3kit.encoder").setLevel(logging.ERROR)  # per-passage truncation notes
    from m3kit.evaluation import evaluate_rankings
    from m3kit.rerank import RerankConfig

    model = check_model(args.model)
    digest = checkpoint_digest(model)
    split = held_out(args.data, seed=args.seed, eval_queries=args.eval_queries, model=model)
    corpus, queries, qrels = split.corpus, split.queries, split.qrels
    print(f"{len(queries)} queries, {len(corpus)} passages", flush=True)

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    bm25 = bm25_runs(corpus, queries, args.depth)
    seconds["bm25"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reranked = rerank_runs(model, corpus, queries, bm25)
    seconds["rerank (load, encode, score)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hybrid = hybrid_runs(model, corpus, queries)
    seconds["vector store (load, index, search x2)"] = time.perf_counter() - t0

    default_mode = RerankConfig().mode.value
    rows: dict[str, dict[str, float]] = {f"BM25 top-{args.depth}": evaluate_rankings(bm25, qrels)}
    rows[f"BM25 top-{args.depth} -> M3Reranker ({default_mode}, default)"] = evaluate_rankings(
        reranked[default_mode], qrels
    )
    for mode, run in reranked.items():
        if mode != default_mode:
            rows[f"BM25 top-{args.depth} -> M3Reranker ({mode})"] = evaluate_rankings(run, qrels)
    rows["M3VectorStore hybrid (dense+sparse, RRF, ColBERT rerank; default)"] = evaluate_rankings(
        hybrid["rrf"], qrels
    )
    rows["M3VectorStore hybrid (fusion=m3: weighted sum)"] = evaluate_rankings(hybrid["m3"], qrels)
    no_terms = sum(1 for q in bm25.values() if not q)

    command = command_line("rerank.py", argv)
    lines = ["| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for name, m in rows.items():
        cells = " | ".join(
            "-" if k == "recall@100" and "hybrid" in name else f"{m[k]:.4f}" for k in METRICS
        )
        lines.append(f"| {name} | {cells} |")
    table = "\n".join(lines)
    intro = (
        "# Reranking: BM25 vs BM25 + M3Reranker vs three-way hybrid (`benchmarks/rerank.py`)\n\n"
        f"Command: `{command}`. Model: `{model}` ({model_provenance(model)}"
        f", fp32; sha256 of its weight files "
        f"`{digest['sha256'][:16]}`). Held-out squad_en articles (split seed "
        f"{args.seed}): {len(queries)} queries, {len(corpus)} passages. BM25: bm25s, English "
        f"stop words, Snowball English stemmer (PyStemmer); {no_terms} queries share no term "
        "with any passage. The "
        "reranker re-orders BM25's candidates only (its recall@100 is BM25's); the hybrid "
        "searches 10 hits (no recall@100)."
    )
    payload = {
        "command": command,
        "model": model,
        "model_digest": digest,
        "eval_queries": len(queries),
        "eval_passages": len(corpus),
        "eval_articles": list(split.eval_articles),
        "bm25_queries_without_candidates": no_terms,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "args": vars(args),
        "methods": {name: {k: round(m[k], 4) for k in METRICS} for name, m in rows.items()},
    }
    for p in write_results(stem, payload, table, intro, machine_facts(start, "fp32")):
        print(f"wrote {p}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
