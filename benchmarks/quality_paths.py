"""Retrieval quality of each lossy encoder path against torch fp32 (issue #15's guard).

For each path (``M3Encoder.from_pretrained(model, backend=..., dtype=...)``): torch fp32 (the
reference), torch bf16, torch int8, ONNX fp32 and ONNX int8, the held-out squad_en articles'
paragraphs are indexed with :class:`m3kit.store.M3Index` (embedded engine, a temp folder) and
every held-out query is searched:

- ``dense``: dense search of the index; ``sparse``: sparse search of the index;
- ``colbert``: ColBERT MaxSim of the index's hybrid candidates (dense and sparse top-50,
  ``fusion="m3"`` with weights ``[0, 0, 1]``; the store has no ColBERT-only search);
- ``fused``: what :meth:`M3Index.search` runs by default (dense + sparse prefetch, RRF, ColBERT
  rerank), with the queries encoded in one batch (the first 50 are also searched through
  ``M3Index.search`` itself and the share of identical top-10s is reported); ``m3``: the same
  candidates ranked by FlagEmbedding's weighted sum.

As a cross-check the same encoder is scored exhaustively (every query against every passage,
no index) by :func:`m3kit.finetune.evaluate.evaluate_heads`. The guard of issue #15: each path's
nDCG@10 within 0.5 points (0.005) of torch fp32 for dense, sparse, ColBERT and fused.

The model is the three-head MiniLM of ``quality_model.py`` (trained sparse and ColBERT heads)::

    python benchmarks/quality_model.py --out /tmp/m3kit-bench/minilm-m3-ft
    python benchmarks/quality_paths.py --model /tmp/m3kit-bench/minilm-m3-ft

Writes ``--out`` (a stem: ``.json`` and ``.md``), or ``benchmarks/results/NAME.*`` with
``--name NAME``; by default a new time-stamped ``benchmarks/results/quality_paths_<UTC time>``.
An existing file is never written over. The results record the sha256 of the scored model's
weight files.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from _bench import (
    RunStart,
    checkpoint_digest,
    command_line,
    machine_facts,
    model_provenance,
    refuse_existing,
)
from _quality_data import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    check_model,
    held_out,
    offline_env,
    results_paths,
    results_stem,
    write_results,
)

GUARD_POINTS = 0.5
GUARDED = ("dense", "sparse", "colbert", "fused")
INDEX_METHODS = ("dense", "sparse", "colbert", "fused", "m3")
EXHAUSTIVE_METHODS = ("dense", "sparse", "colbert", "fused", "rrf")
SEARCH_CHECKS = 50  # queries also run through M3Index.search itself


@dataclass(frozen=True)
class EncoderPath:
    """One way of running the model."""

    backend: str
    dtype: str

    @property
    def name(self) -> str:
        return f"{self.backend} {self.dtype}"


PATHS = (
    EncoderPath("torch", "fp32"),
    EncoderPath("torch", "bf16"),
    EncoderPath("torch", "int8"),
    EncoderPath("onnx", "fp32"),
    EncoderPath("onnx", "int8"),
)


def _encoder_path(text: str) -> EncoderPath:
    """A ``--paths`` item, checked before any work (``torch_int8`` failed as a TypeError,
    ``torch-int4`` only after the reference path had run).

    >>> _encoder_path("onnx-int8")
    EncoderPath(backend='onnx', dtype='int8')
    """
    backend, _, dtype = text.partition("-")
    if backend not in ("torch", "onnx") or dtype not in ("fp32", "bf16", "fp16", "int8"):
        raise SystemExit(
            f"error: --paths item {text!r} is not BACKEND-DTYPE (backend torch or onnx; dtype "
            "fp32, bf16, fp16 or int8), e.g. torch-fp32"
        )
    return EncoderPath(backend, dtype)


def _index_runs(
    encoder: object,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    folder: str,
) -> tuple[dict[str, dict[str, list[str]]], np.ndarray, float]:
    """``{method: {query_id: [doc_id, ...]}}`` from an M3Index over ``corpus``, the queries'
    dense vectors, and the share of checked queries where ``M3Index.search`` ranks the same."""
    from m3kit import M3Encoder
    from m3kit.store import M3Index

    assert isinstance(encoder, M3Encoder)
    runs: dict[str, dict[str, list[str]]] = {m: {} for m in INDEX_METHODS}
    agree = 0
    qids = list(queries)
    qs = encoder.encode([queries[q] for q in qids], query=True, show_progress=False)
    with M3Index.open(encoder, folder, collection="quality") as index:
        index.add_texts(list(corpus.values()), doc_ids=list(corpus), show_progress=False)
        if index.count() != len(corpus):
            raise RuntimeError(f"indexed {index.count()} chunks for {len(corpus)} passages")
        store = index.store
        for i, qid in enumerate(qids):
            dense, sparse, colbert = qs.dense[i], qs.sparse[i], qs.colbert[i]
            text = queries[qid]
            hits = {
                "dense": store.query(dense=dense, k=10, rerank=False),
                "sparse": store.query(sparse=sparse, k=10, rerank=False) if len(sparse) else [],
                "colbert": store.query(
                    dense=dense,
                    sparse=sparse,
                    colbert=colbert,
                    k=10,
                    fusion="m3",
                    weights=(0.0, 0.0, 1.0),
                ),
                # M3Index.search's own call, with the query encoded once in the batch above
                "fused": store.query(dense=dense, sparse=sparse, colbert=colbert, k=10),
                "m3": store.query(dense=dense, sparse=sparse, colbert=colbert, k=10, fusion="m3"),
            }
            for method, found in hits.items():
                runs[method][qid] = [h.doc_id for h in found]
            if i < SEARCH_CHECKS:  # the same as M3Index.search (which encodes one query)?
                same = [h.doc_id for h in index.search(text, k=10)] == runs["fused"][qid]
                agree += int(same)
    return runs, qs.dense, agree / max(1, min(SEARCH_CHECKS, len(qids)))


def evaluate_path(
    path: EncoderPath,
    model: str,
    split: object,
    onnx_cache: str,
) -> dict[str, object]:
    """Index, search and score one path; metrics of the index and of exhaustive scoring."""
    from m3kit import M3Encoder
    from m3kit.evaluation import evaluate_rankings
    from m3kit.finetune.evaluate import evaluate_heads

    start = time.perf_counter()
    encoder = M3Encoder.from_pretrained(
        model,
        backend=path.backend,
        dtype=path.dtype,
        device="cpu",
        onnx_cache_dir=onnx_cache if path.backend == "onnx" else None,
    )
    corpus, queries, qrels = split.corpus, split.queries, split.qrels  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="m3kit-quality-") as folder:
        runs, query_dense, agreement = _index_runs(encoder, corpus, queries, folder)
    index_metrics = {m: evaluate_rankings(run, qrels) for m, run in runs.items()}
    exhaustive = evaluate_heads(encoder, corpus, queries, qrels).metrics
    return {
        "search_agreement": agreement,
        "index": index_metrics,
        "exhaustive": exhaustive,
        "query_dense": query_dense,
        "seconds": time.perf_counter() - start,
    }


def _points(value: float, ref: float) -> float:
    return round(100.0 * (value - ref), 2)


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="three-head M3 checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--eval-queries", type=int, default=800, help="seeded sample")
    parser.add_argument("--seed", type=int, default=0, help="the split quality_model.py used")
    parser.add_argument("--onnx-cache", default="/tmp/m3kit-bench/onnx")
    parser.add_argument(
        "--paths",
        nargs="+",
        default=[p.name.replace(" ", "-") for p in PATHS],
        help="backend-dtype pairs; the first is the reference",
    )
    parser.add_argument(
        "--name", default=None, help="results stem in benchmarks/results/ (or give --out)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results stem (default: benchmarks/results/quality_paths_<UTC time>)",
    )
    args = parser.parse_args(argv)
    stem = results_stem(args.out, args.name, "quality_paths")
    refuse_existing(results_paths(stem))
    offline_env()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("m3kit.encoder").setLevel(logging.ERROR)  # per-passage truncation notes
    paths = [_encoder_path(p) for p in args.paths]
    model = check_model(args.model)
    digest = checkpoint_digest(model)
    split = held_out(args.data, seed=args.seed, eval_queries=args.eval_queries, model=model)
    print(
        f"{len(split.queries)} queries, {len(split.corpus)} passages of "
        f"{len(split.eval_articles)} held-out articles",
        flush=True,
    )
    results: dict[str, dict[str, object]] = {}
    for path in paths:
        results[path.name] = evaluate_path(path, model, split, args.onnx_cache)
        r = results[path.name]
        idx = r["index"]
        assert isinstance(idx, dict)
        print(
            f"{path.name}: "
            + ", ".join(f"{m} {idx[m]['ndcg@10']:.4f}" for m in INDEX_METHODS)
            + f" ({r['seconds']:.0f} s)",
            flush=True,
        )

    ref_name = paths[0].name
    ref = results[ref_name]
    ref_dense = ref["query_dense"]
    assert isinstance(ref_dense, np.ndarray)
    rows: dict[str, dict[str, object]] = {}
    for name, r in results.items():
        qd = r["query_dense"]
        assert isinstance(qd, np.ndarray)
        cos = np.sum(qd * ref_dense, axis=1)
        row: dict[str, object] = {
            "seconds": round(float(r["seconds"]), 1),
            "m3index_search_same_ranking": r["search_agreement"],
        }
        for kind, methods in (("index", INDEX_METHODS), ("exhaustive", EXHAUSTIVE_METHODS)):
            mine, base = r[kind], ref[kind]
            assert isinstance(mine, dict) and isinstance(base, dict)
            row[kind] = {
                m: {
                    "ndcg@10": round(mine[m]["ndcg@10"], 4),
                    "recall@100": round(mine[m].get("recall@100", float("nan")), 4),
                    "delta_points": _points(mine[m]["ndcg@10"], base[m]["ndcg@10"]),
                }
                for m in methods
            }
            row[f"{kind}_guard_pass"] = {
                m: abs(100.0 * (mine[m]["ndcg@10"] - base[m]["ndcg@10"])) <= GUARD_POINTS
                for m in GUARDED
            }
        row["query_dense_cosine_to_ref"] = {
            "min": round(float(cos.min()), 5),
            "mean": round(float(cos.mean()), 5),
        }
        rows[name] = row

    command = command_line("quality_paths.py", argv)
    table = _markdown(rows, ref_name)
    intro = (
        f"# Retrieval quality per encoder path (`benchmarks/quality_paths.py`)\n\n"
        f"Command: `{command}`. Model: `{model}` ({model_provenance(model)}"
        f"; sha256 of its weight files "
        f"`{digest['sha256'][:16]}`). Held-out squad_en articles (split seed "
        f"{args.seed}): {len(split.queries)} queries, {len(split.corpus)} passages. nDCG@10; "
        f"Δ = points against {ref_name}; guard (issue #15): |Δ| <= {GUARD_POINTS} for "
        f"{', '.join(GUARDED)}. Index: M3Index, embedded engine (dense / sparse search; "
        "colbert = MaxSim over the dense+sparse top-50 candidates; fused = `M3Index.search`'s "
        "default query: RRF + ColBERT rerank; m3 = weighted sum). Exhaustive: "
        "`m3kit.finetune.evaluate.evaluate_heads` (every query x every passage; fused = "
        "weighted sum 0.4/0.2/0.4)."
    )
    payload = {
        "command": command,
        "model": model,
        "model_digest": digest,
        "reference": ref_name,
        "guard_points": GUARD_POINTS,
        "eval_queries": len(split.queries),
        "eval_passages": len(split.corpus),
        "eval_articles": list(split.eval_articles),
        "args": vars(args),
        "paths": rows,
    }
    facts = machine_facts(start, {p.name: f"{p.backend} {p.dtype}" for p in paths})
    for p in write_results(stem, payload, table, intro, facts):
        print(f"wrote {p}")
    print(table)
    return 0


def _markdown(rows: Mapping[str, Mapping[str, object]], ref_name: str) -> str:
    out = []
    for kind, methods in (("index", INDEX_METHODS), ("exhaustive", EXHAUSTIVE_METHODS)):
        out.append(f"## {'M3Index (embedded engine)' if kind == 'index' else 'Exhaustive'}\n")
        out.append(
            "| path | "
            + " | ".join(f"{m} nDCG@10 (Δ)" for m in methods)
            + " | guard | dense cos to fp32 min / mean |"
        )
        out.append("|---|" + "---:|" * len(methods) + "---|---|")
        for name, row in rows.items():
            cells = row[kind]
            passed = row[f"{kind}_guard_pass"]
            cos = row["query_dense_cosine_to_ref"]
            assert isinstance(cells, dict) and isinstance(passed, dict) and isinstance(cos, dict)
            guard = (
                "reference"
                if name == ref_name
                else "pass"
                if all(passed.values())
                else "FAIL: " + ", ".join(m for m, ok in passed.items() if not ok)
            )
            out.append(
                f"| {name} | "
                + " | ".join(
                    f"{cells[m]['ndcg@10']:.4f} ({cells[m]['delta_points']:+.2f})" for m in methods
                )
                + f" | {guard} | {cos['min']:.5f} / {cos['mean']:.5f} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
