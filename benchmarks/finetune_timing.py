"""Training time, m3kit vs LlamaIndex's engine: alternating runs on the same rows.

One training run per engine can be off by 30 % on a shared 2-core VM: the same m3kit run
took 148 s and 204 s an hour apart on the same machine. This benchmark therefore
alternates the two engines (m3kit, LlamaIndex, m3kit, LlamaIndex, ...) on the same
training rows that ``benchmarks/finetune.py`` uses (squad_en split by article, seed 0,
all-MiniLM-L6-v2 start, 1 epoch, batch 16) and reports every pair's ratio and the
median. Neither fine-tuned model is scored here; quality is ``benchmarks/finetune.py``'s job::

    python benchmarks/finetune.py ...                     # quality (and one timing)
    python benchmarks/finetune_timing.py --repeats 3      # time, alternating

LlamaIndex's engine runs in its own venv (``--bench-python``, set up as
``benchmarks/finetune.py`` describes). Its time is ``finetune()`` alone (building the
engine, which loads the model, is reported apart); m3kit's is ``Trainer.train()`` alone (its
model loads before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from m3kit.finetune import M3Finetuner, TrainingExample
from m3kit.finetune.splits import split_by_article
from m3kit.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import _minilm, _run_llamaindex, add_training_arguments, m3kit_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/m3kit-bench-finetune-timing")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs")
    add_training_arguments(parser)
    parser.add_argument("--results", default=str(HERE / "results" / "finetune_timing.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        split = split_by_article(
            args.data,
            seed=args.seed,
            max_train_rows=args.rows,
            validation_fraction=0.25,
            drop_foreign_negatives=True,
        )
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e} (squad_en sits at ../shared/data/squad_en)") from None
    train = list(split.train)
    model = _minilm()
    out = Path(args.out)
    li_val = [TrainingExample(ex.query, ex.pos[:1]) for ex in train[:32]]
    pairs: list[dict[str, float]] = []
    precision = ""
    li_length = 0
    for rep in range(args.repeats):
        cfg = m3kit_config(args, model, out / f"m3kit-{rep}")
        load = os.getloadavg()[0]
        result = M3Finetuner(cfg).fit(train)
        precision = result.precision
        li = _run_llamaindex(
            args.bench_python,
            train,
            li_val,
            model,
            out / f"llamaindex-{rep}",
            1,
            args.batch_size,
            args.llamaindex_max_length,
        )
        li_length = int(li["max_length"])
        pair = {
            "m3kit_s": round(result.train_seconds, 1),
            "llamaindex_s": round(li["train_seconds"], 1),
            "llamaindex_build_s": round(li["build_seconds"], 1),
            "ratio": round(result.train_seconds / li["train_seconds"], 3),
            "load_at_start": round(load, 2),
        }
        pairs.append(pair)
        print(json.dumps(pair), flush=True)
    ratios = [p["ratio"] for p in pairs]
    machine = describe_machine()
    record = {
        "train_rows": len(train),
        "m3kit_steps": result.steps,
        "m3kit_precision": precision,
        "llamaindex_max_length": li_length,
        "pairs": pairs,
        "median_ratio": round(statistics.median(ratios), 3),
        "worst_ratio": max(ratios),
        "median_m3kit_s": round(statistics.median(p["m3kit_s"] for p in pairs), 1),
        "median_llamaindex_s": round(statistics.median(p["llamaindex_s"] for p in pairs), 1),
        "args": vars(args),
        "machine": machine.as_dict(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    attention = (
        "" if args.attention_dropout is None else f" --attention-dropout {args.attention_dropout}"
    )
    frozen = "" if not args.frozen_layers else f" --frozen-layers {args.frozen_layers}"
    li_arg = (
        ""
        if args.llamaindex_max_length is None
        else f" --llamaindex-max-length {args.llamaindex_max_length}"
    )
    dropout = "the model's own" if args.attention_dropout is None else args.attention_dropout
    layers = (
        f"embeddings and the first {args.frozen_layers} layers frozen"
        if args.frozen_layers
        else "every layer trained"
    )
    rows = "\n".join(
        f"| {i + 1} | {p['m3kit_s']} | {p['llamaindex_s']} | {p['ratio']:.2f} | "
        f"{p['load_at_start']} | {p['llamaindex_build_s']} |"
        for i, p in enumerate(pairs)
    )
    md = (
        "# Training time, m3kit vs LlamaIndex's engine, alternating runs "
        "(`benchmarks/finetune_timing.py`)\n\n"
        f"`python benchmarks/finetune_timing.py --repeats {args.repeats} --precision "
        f"{args.precision}{attention}{frozen}{li_arg}`, run alone: {len(train)} training rows "
        "of squad_en (the rows of `benchmarks/finetune.py`), all-MiniLM-L6-v2 start, 1 epoch, "
        f"batch {args.batch_size}. m3kit: three heads, {args.negatives} hard negatives per query, "
        f"passage max length {args.train_max_length or args.max_length}, "
        f"{precision} autocast ({result.steps} steps), "
        f"attention dropout {dropout}, {layers}. "
        "LlamaIndex `SentenceTransformersFinetuneEngine`: (query, positive) pairs, in-batch "
        f"negatives, max length {li_length}, fp32 (its default). "
        "The engines alternate, m3kit first. "
        "Times are the training loops alone: m3kit's `Trainer.train()`, LlamaIndex's "
        "`finetune()` (building its engine, which loads the model, is the last column).\n\n"
        f"**Median m3kit / LlamaIndex: {record['median_ratio']:.2f}x** (worst pair "
        f"{record['worst_ratio']:.2f}x; median {record['median_m3kit_s']} s vs "
        f"{record['median_llamaindex_s']} s).\n\n"
        f"{machine.markdown()}\n\n"
        "| pair | m3kit s | LlamaIndex s | ratio | load average at start | LlamaIndex build s |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
    )
    results.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
