"""Benchmark the store backends: index throughput and hybrid query latency (p50 / p95).

Synthetic chunks shaped like BGE-M3 output: a 1024-d normalised dense vector, a learned-
sparse vector of 80 terms drawn Zipf-like from a 250k vocabulary, and a small ColBERT
multivector (16 tokens x 128 dims; real BGE-M3 tokens are 1024-d, scaled down so 100k
chunks fit the run). Queries are noisy copies of stored chunks (dense + sparse + ColBERT).

Measured per backend and size, through the public ``M3Store`` API:

* index: ``M3Store.upsert`` in batches of 1000, then ``M3Store.optimize()``; chunks per
  second over the whole load, index building included (the edge engine builds its HNSW
  graph every 20k new points and at ``optimize()``);
* hybrid: ``query(dense, sparse, colbert, k=10, fusion=RRF, rerank=True)`` - dense and
  sparse prefetch (50 each), RRF, ColBERT MaxSim rerank - the default search path;
* m3: the same with ``fusion=M3`` (exact weighted sum of the three heads on the union of
  candidates).

qdrant-client's local mode is pure Python and scans every point, so it only gets the sizes
that finish in the time budget (``--client-sizes``); the table says which were skipped.

Run: ``python benchmarks/store.py`` (about 10 minutes on 2 cores).

``--mode runs`` checks that a collection grown by many small index runs searches as fast as
one written at once (issue #14: hybrid p50 within 1.5x): ``--total`` chunks (default 100k)
written in one open of the embedded store, against the same chunks written in ``--runs``
(default 10) fresh opens, each closed after its share, as ``m3kit index`` runs would. Neither
calls ``optimize()``: indexing is left to the engine's automatic passes. Both stores are then
reopened and queried alternately (same queries).
Run: ``python benchmarks/store.py --mode runs`` (validate quickly with ``--total 10000``).

Results go to ``--out`` (a stem: ``.json`` and ``.md``), by default a new time-stamped name in
``benchmarks/results`` (``store_<UTC time>``, ``store_runs_<UTC time>``); an existing file is
never written over. Every result records the machine (CPU model and flags, torch and
transformers versions, threads, via ``m3kit.machine``), the load average at the start and at
the end: latencies on a shared machine measure the neighbours too. Queries are timed after 3
warm-up queries; in ``--mode runs`` the two stores take turns on each query; in the default
mode each backend and size is measured once, one after the other, never interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m3kit.outputs import Head, M3Output, SparseVector
from m3kit.store import Backend, ChunkRecord, Fusion, M3Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (
    RunStart,
    command_line,
    machine_facts,
    machine_markdown,
    output_stem,
    positive_int,
    refuse_existing,
    with_ext,
)

DENSE_DIM = 1024
COLBERT_TOKENS = 16
COLBERT_DIM = 128
SPARSE_TERMS = 80
VOCAB = 250_000
BATCH = 1000
#: No model runs here: what "precision" means for this benchmark's results.
PRECISION = "no model: synthetic float32 vectors"


class Corpus:
    """Deterministic synthetic chunks, generated batch by batch (never all in memory)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        self.cdf = np.cumsum(1.0 / ranks**1.07)
        self.cdf /= self.cdf[-1]

    def _unit(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        v = rng.standard_normal(shape, dtype=np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def _sparse(self, rng: np.random.Generator) -> SparseVector:
        draws = np.searchsorted(self.cdf, rng.random(SPARSE_TERMS * 3))
        terms = np.unique(draws)[:SPARSE_TERMS]
        if terms.size < SPARSE_TERMS:  # top up with uniform terms (rare)
            extra = rng.choice(VOCAB, SPARSE_TERMS * 2, replace=False)
            terms = np.unique(np.concatenate([terms, extra]))[:SPARSE_TERMS]
        weights = rng.uniform(0.01, 0.35, size=terms.size).astype(np.float32)
        return SparseVector(terms.astype(np.int64), weights)

    def rows(self, start: int, stop: int) -> list[M3Output]:
        rng = np.random.default_rng([self.seed, start])
        dense = self._unit(rng, (stop - start, DENSE_DIM))
        out = []
        for i in range(stop - start):
            out.append(
                M3Output(
                    heads=frozenset(Head),
                    token_counts=(COLBERT_TOKENS + 1,),
                    _dense=dense[i : i + 1],
                    _sparse=(self._sparse(rng),),
                    _colbert=(self._unit(rng, (COLBERT_TOKENS, COLBERT_DIM)),),
                )
            )
        return out

    def batches(self, n: int) -> Iterator[list[ChunkRecord]]:
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            yield [
                ChunkRecord(f"doc{start + i}", 0, f"chunk {start + i}", {"g": (start + i) % 10}, r)
                for i, r in enumerate(self.rows(start, stop))
            ]

    def queries(self, n_points: int, count: int) -> list[tuple[str, M3Output]]:
        """Noisy copies of random stored chunks, with the source's doc id."""
        rng = np.random.default_rng([self.seed, 10**9])
        picks = rng.choice(n_points, size=count, replace=False)
        out = []
        for p in picks:
            start = int(p) // BATCH * BATCH
            row = self.rows(start, min(n_points, start + BATCH))[int(p) - start]
            noise = rng.standard_normal(DENSE_DIM, dtype=np.float32) * 0.02
            d = row.dense[0] + noise
            c = (
                row.colbert[0][: COLBERT_TOKENS // 2]
                + rng.standard_normal((COLBERT_TOKENS // 2, COLBERT_DIM), dtype=np.float32) * 0.05
            )
            sp = row.sparse[0]
            keep = np.sort(rng.choice(len(sp), size=len(sp) // 4, replace=False))
            out.append(
                (
                    f"doc{int(p)}",
                    M3Output(
                        heads=frozenset(Head),
                        token_counts=(COLBERT_TOKENS // 2,),
                        _dense=(d / np.linalg.norm(d))[None, :],
                        _sparse=(SparseVector(sp.indices[keep], sp.values[keep]),),
                        _colbert=(c / np.linalg.norm(c, axis=1, keepdims=True),),
                    ),
                )
            )
        return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_queries(
    stores: dict[str, M3Store], qs: list[tuple[str, M3Output]], warmup: int = 3
) -> dict[str, dict[str, object]]:
    """Hybrid (RRF) and M3 latency of each store; stores take turns on each query."""
    timings: dict[str, dict[str, list[float]]] = {n: {"hybrid": [], "m3": []} for n in stores}
    found = {name: {"hybrid": 0, "m3": 0} for name in stores}
    for kind, fusion in (("hybrid", Fusion.RRF), ("m3", Fusion.M3)):
        for i, (source, q) in enumerate(qs):
            for name, store in stores.items():
                t = time.perf_counter()
                hits = store.query(
                    dense=q.dense[0],
                    sparse=q.sparse[0],
                    colbert=q.colbert[0],
                    k=10,
                    fusion=fusion,
                    rerank=True,
                )
                elapsed = (time.perf_counter() - t) * 1000
                if i >= warmup:  # warm-up excluded
                    timings[name][kind].append(elapsed)
                    found[name][kind] += int(bool(hits) and hits[0].doc_id == source)
    out: dict[str, dict[str, object]] = {}
    for name in stores:
        ms, n = timings[name], len(timings[name]["hybrid"])
        out[name] = {
            "queries": n,
            "hybrid_p50_ms": round(statistics.median(ms["hybrid"]), 2),
            "hybrid_p95_ms": round(_pct(ms["hybrid"], 95), 2),
            "m3_p50_ms": round(statistics.median(ms["m3"]), 2),
            "m3_p95_ms": round(_pct(ms["m3"], 95), 2),
            "hybrid_hit_at_1": round(found[name]["hybrid"] / n, 3),
            "m3_hit_at_1": round(found[name]["m3"] / n, 3),
        }
    return out


def _load_end() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(backend: Backend, n: int, queries: int, corpus: Corpus) -> dict[str, object]:
    """Index ``n`` chunks into a fresh store and time queries."""
    with tempfile.TemporaryDirectory(prefix="m3kit-bench-") as folder:
        location = folder if backend is Backend.EDGE else ":memory:"
        store = M3Store.open(
            location,
            collection="bench",
            dense_dim=DENSE_DIM,
            colbert_dim=COLBERT_DIM,
            sparse=True,
            backend=backend,
        )
        t0 = time.perf_counter()
        for batch in corpus.batches(n):
            store.upsert(batch, batch_size=250, show_progress=False)
        store.optimize()  # index what the automatic passes left (timed: part of indexing)
        index_s = time.perf_counter() - t0
        assert store.count() == n
        stats = _time_queries({"store": store}, corpus.queries(n, queries + 3))["store"]
        store.close()
    return {
        "backend": backend.value,
        "chunks": n,
        "index_s": round(index_s, 2),
        "index_chunks_per_s": round(n / index_s, 1),
        **stats,
    }


def _engine_state(store: M3Store) -> dict[str, object]:
    """What the embedded engine reports: points, indexed vectors, segments, unindexed points."""
    from m3kit.store.edge_backend import EdgeBackend

    backend = store._backend
    assert isinstance(backend, EdgeBackend)
    info = backend.shard.info()
    return {
        "points": info.points_count,
        "indexed_vectors": info.indexed_vectors_count,
        "segments": info.segments_count,
        "unindexed_points": backend.unindexed_points(),
    }


def _open_edge(location: Path, index_after: int | None = None) -> M3Store:
    return M3Store.open(
        location,
        collection="bench",
        dense_dim=DENSE_DIM,
        colbert_dim=COLBERT_DIM,
        sparse=True,
        backend=Backend.EDGE,
        index_after=index_after,
    )


def run_split(
    total: int, runs: int, queries: int, corpus: Corpus, index_after: int | None = None
) -> dict[str, object]:
    """``total`` chunks in one open vs in ``runs`` fresh opens; both queried alternately."""
    if runs < 2 or total % runs or (total // runs) % BATCH:
        raise SystemExit(f"--total must split into --runs (>= 2) shares of whole {BATCH}s")
    share = total // runs
    with tempfile.TemporaryDirectory(prefix="m3kit-bench-") as folder:
        loads: dict[str, float] = {}
        for name, shares in (("one run", 1), (f"{runs} runs", runs)):
            location = Path(folder) / name.replace(" ", "_")
            print(f"writing {total} chunks in {shares} open(s) ...", file=sys.stderr, flush=True)
            batches = corpus.batches(total)
            t0 = time.perf_counter()
            for _ in range(shares):
                # one open per share (a fresh process-like handle), closed after it
                with _open_edge(location, index_after) as store:
                    for _ in range(total // shares // BATCH):
                        store.upsert(next(batches), batch_size=250, show_progress=False)
            loads[name] = time.perf_counter() - t0
        stores = {name: _open_edge(Path(folder) / name.replace(" ", "_")) for name in loads}
        try:
            states = {name: _engine_state(store) for name, store in stores.items()}
            for store in stores.values():
                assert store.count() == total
            print("querying both (alternately) ...", file=sys.stderr, flush=True)
            stats = _time_queries(stores, corpus.queries(total, queries + 3))
        finally:
            for store in stores.values():
                store.close()
    rows = [
        {
            "written": name,
            "chunks": total,
            "per_open": total if name == "one run" else share,
            "index_s": round(loads[name], 2),
            "index_chunks_per_s": round(total / loads[name], 1),
            **states[name],
            **stats[name],
        }
        for name in loads
    ]
    one, split = rows
    ratio = float(split["hybrid_p50_ms"]) / float(one["hybrid_p50_ms"])  # type: ignore[arg-type]
    return {"rows": rows, "hybrid_p50_ratio": round(ratio, 2), "target": 1.5}


def _split_table(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    lines = [
        "| written | chunks per open | index chunks/s | segments | unindexed points "
        "| hybrid p50 ms | hybrid p95 ms | m3 p50 ms | hit@1 hybrid / m3 |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['written']} | {r['per_open']} | {r['index_chunks_per_s']} | {r['segments']} "
            f"| {r['unindexed_points']} | {r['hybrid_p50_ms']} | {r['hybrid_p95_ms']} "
            f"| {r['m3_p50_ms']} | {r['hybrid_hit_at_1']} / {r['m3_hit_at_1']} |"
        )
    verdict = "within" if float(result["hybrid_p50_ratio"]) <= 1.5 else "NOT within"  # type: ignore[arg-type]
    lines.append(
        f"\nhybrid p50, {rows[1]['written']} / one run: **{result['hybrid_p50_ratio']}x** "
        f"({verdict} the 1.5x target)"
    )
    return "\n".join(lines)


def main_split(args: argparse.Namespace, start: RunStart, stem: Path, command: str) -> int:
    result = run_split(args.total, args.runs, args.queries, Corpus(), args.index_after)
    table = _split_table(result)
    print(table)
    meta = {
        "command": command,
        "machine": machine_facts(start, PRECISION),
        "shape": {
            "dense": DENSE_DIM,
            "sparse_terms": SPARSE_TERMS,
            "colbert": [COLBERT_TOKENS, COLBERT_DIM],
        },
        "query": "k=10, dense+sparse prefetch 50 each, RRF (hybrid) or M3, ColBERT rerank",
        "index_after": args.index_after or "default (20,000)",
        "load_average_at_end": _load_end(),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    with_ext(stem, ".json").write_text(json.dumps({"meta": meta, **result}, indent=2))
    with_ext(stem, ".md").write_text(
        "# Store benchmark: one run vs many small runs (benchmarks/store.py --mode runs)\n\n"
        + f"Command: `{command}`\n\n"
        + machine_markdown(meta["machine"])  # type: ignore[arg-type]
        + f"\n- Load average at end: {meta['load_average_at_end']}\n\n"
        + f"index_after: {meta['index_after']}. Both stores take turns on each query (3 "
        "warm-up queries excluded).\n\n" + table + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--client-sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000],
        help="sizes qdrant-client's local (pure-Python) mode is run at",
    )
    parser.add_argument("--queries", type=positive_int, default=50)
    parser.add_argument("--client-queries", type=int, default=20)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results stem (default: benchmarks/results/store[_runs]_<UTC time>)",
    )
    parser.add_argument(
        "--mode",
        choices=("sizes", "runs"),
        default="sizes",
        help="sizes: backends at --sizes; runs: --total chunks in one open vs in --runs opens",
    )
    parser.add_argument("--total", type=int, default=100_000, help="chunks in --mode runs")
    parser.add_argument("--runs", type=int, default=10, help="opens the split load uses")
    parser.add_argument(
        "--index-after",
        type=int,
        default=None,
        help="--mode runs: unindexed points that trigger an index pass (default: the "
        "store's, 20,000); scale it down with --total for a quick check",
    )
    args = parser.parse_args(argv)
    command = command_line("store.py", argv)
    stem = output_stem(args.out, "store_runs" if args.mode == "runs" else "store")
    refuse_existing([with_ext(stem, ".json"), with_ext(stem, ".md")])
    if args.mode == "runs":
        return main_split(args, start, stem, command)
    corpus = Corpus()
    rows: list[dict[str, object]] = []
    for n in args.sizes:
        for backend in (Backend.EDGE, Backend.CLIENT):
            if backend is Backend.CLIENT and n not in args.client_sizes:
                rows.append({"backend": backend.value, "chunks": n, "skipped": True})
                continue
            nq = args.queries if backend is Backend.EDGE else args.client_queries
            print(f"running {backend.value} at {n} chunks ...", file=sys.stderr, flush=True)
            rows.append(run(backend, n, nq, corpus))
    header = (
        "| backend | chunks | index chunks/s | hybrid p50 ms | hybrid p95 ms | m3 p50 ms "
        "| m3 p95 ms | hit@1 hybrid / m3 |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        if r.get("skipped"):
            lines.append(
                f"| {r['backend']} | {r['chunks']} | skipped: pure-Python local mode, too slow "
                "for the time budget | | | | | |"
            )
            continue
        lines.append(
            f"| {r['backend']} | {r['chunks']} | {r['index_chunks_per_s']} | "
            f"{r['hybrid_p50_ms']} | {r['hybrid_p95_ms']} | {r['m3_p50_ms']} | {r['m3_p95_ms']} "
            f"| {r['hybrid_hit_at_1']} / {r['m3_hit_at_1']} |"
        )
    table = "\n".join(lines)
    print(table)
    meta = {
        "command": command,
        "machine": machine_facts(start, PRECISION),
        "python": platform.python_version(),
        "arch": platform.machine(),
        "shape": {
            "dense": DENSE_DIM,
            "sparse_terms": SPARSE_TERMS,
            "vocab": VOCAB,
            "colbert": [COLBERT_TOKENS, COLBERT_DIM],
        },
        "query": "k=10, dense+sparse prefetch 50 each, RRF (hybrid) or M3, ColBERT rerank",
        "cpus": os.cpu_count(),
        "load_average_at_end": _load_end(),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    with_ext(stem, ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    with_ext(stem, ".md").write_text(
        "# Store benchmark (benchmarks/store.py)\n\n"
        + f"Command: `{command}`\n\n"
        + machine_markdown(meta["machine"])  # type: ignore[arg-type]
        + f"\n- Load average at end: {meta['load_average_at_end']}\n\n"
        + f"Shapes: {json.dumps(meta['shape'])}; {meta['query']}. Latencies after 3 warm-up "
        "queries; each backend and size runs once, one after the other (not interleaved), so "
        "load that changes during the run falls on some rows only.\n\n" + table + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
