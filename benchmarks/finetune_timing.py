"""Training time, m3kit vs LlamaIndex's engine: alternating runs on the same rows.

One training run per engine can be off by 30 % on a shared 2-core VM: the same m3kit run
took 148 s and 204 s an hour apart on the same machine. This benchmark therefore runs the
two engines in pairs on the same training rows that ``benchmarks/finetune.py`` uses
(:func:`_finetune_setup.training_split` at the same ``--data``, ``--seed``, ``--rows`` and
``--validation-fraction``: squad_en split by article, seed 0, a quarter of the training
articles held out, by default; all-MiniLM-L6-v2 start, 1 epoch, batch 16), the order
alternating from pair to pair (m3kit first in pairs 1, 3, ...; LlamaIndex first in pairs 2,
4, ...), and reports every pair's ratio with the median, min and max. Neither fine-tuned
model is scored here; quality is ``benchmarks/finetune.py``'s job::

    python benchmarks/finetune.py ...                     # quality (and one timing)
    python benchmarks/finetune_timing.py --repeats 4      # time, alternating order

LlamaIndex's engine runs in its own venv (``--bench-python``, set up as
``benchmarks/finetune.py`` describes), with no validation set (no evaluation in its loop;
the final model saved). Both times cover the same span, the transformers ``Trainer.train()``
loop: m3kit's ``Trainer.train()`` (model loaded before, saved after) and LlamaIndex's
``SentenceTransformerTrainer.train()`` less the final save made inside it (building its
engine, which loads the model, and the whole ``finetune()`` call are reported apart).
Results committed before this change timed LlamaIndex's whole ``finetune()`` with a
validation set (two evaluations and saves inside) and always ran m3kit first.

Results go to ``--results`` (a stem or ``.json``; default a new time-stamped name in
``benchmarks/results``); an existing file is never written over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from m3kit.finetune import M3Finetuner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (
    RunStart,
    command_line,
    machine_facts,
    machine_markdown,
    output_stem,
    refuse_existing,
    rotated,
    spread,
    spread_text,
    with_ext,
)
from _finetune_setup import (
    add_training_arguments,
    check_bench_python,
    m3kit_config,
    record_rows,
    training_split,
)
from finetune import _minilm, _run_llamaindex, timers

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/m3kit-bench-finetune-timing", help="work folder")
    parser.add_argument(
        "--repeats", type=int, default=4, help="pairs of runs (the order alternates)"
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--results",
        default=None,
        help="results stem or .json (default: benchmarks/results/finetune_timing_<UTC time>)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    stem = output_stem(args.results, "finetune_timing")
    results, results_md = with_ext(stem, ".json"), with_ext(stem, ".md")
    refuse_existing([results, results_md])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    split = training_split(
        args.data, seed=args.seed, rows=args.rows, validation_fraction=args.validation_fraction
    )
    check_bench_python(args.bench_python)  # before any training, after the data's checks
    train = list(split.train)
    model = _minilm()
    out = Path(args.out)
    pairs: list[dict[str, Any]] = []
    precision = ""
    li_length = 0
    li: dict[str, Any] = {}
    steps = 0
    for rep in range(args.repeats):
        load = os.getloadavg()[0]
        order = rotated(["m3kit", "llamaindex"], rep)  # alternate which engine goes first
        seconds: dict[str, float] = {}
        for engine in order:
            if engine == "m3kit":
                result = M3Finetuner(m3kit_config(args, model, out / f"m3kit-{rep}")).fit(train)
                record_rows(result.path, "finetune_timing.py", args, split)
                precision, steps = result.precision, result.steps
                seconds["m3kit"] = result.train_seconds + result.sparse_fit_seconds
            else:
                li = _run_llamaindex(
                    args.bench_python,
                    train,
                    model,
                    out / f"llamaindex-{rep}",
                    1,
                    args.batch_size,
                    args.llamaindex_max_length,
                )
                record_rows(out / f"llamaindex-{rep}" / "model", "finetune_timing.py", args, split)
                li_length = int(li["max_length"])
                seconds["llamaindex"] = li["train_seconds"]
        pair = {
            "first": order[0],
            "m3kit_s": round(seconds["m3kit"], 1),
            "llamaindex_s": round(seconds["llamaindex"], 1),
            "llamaindex_finetune_s": round(li["finetune_seconds"], 1),
            "llamaindex_build_s": round(li["build_seconds"], 1),
            "ratio": round(seconds["m3kit"] / seconds["llamaindex"], 3),
            "load_at_start": round(load, 2),
        }
        pairs.append(pair)
        print(json.dumps(pair), flush=True)
    ratio = spread([p["ratio"] for p in pairs])
    facts = machine_facts(
        start,
        {"m3kit": f"{precision} (--precision {args.precision})", "LlamaIndex": "fp32"},
    )
    command = command_line("finetune_timing.py", argv)  # every argument given, no defaults
    record = {
        "command": command,
        "train_rows": len(train),
        "m3kit_steps": steps,
        "m3kit_precision": precision,
        "llamaindex_max_length": li_length,
        # glibc's malloc settings from the environment, which both engines' processes inherit
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "timers": timers(li.get("timer")),
        "pairs": pairs,
        "ratio": ratio,
        "median_ratio": ratio["median"],
        "worst_ratio": max(p["ratio"] for p in pairs),
        "median_m3kit_s": round(statistics.median(p["m3kit_s"] for p in pairs), 1),
        "median_llamaindex_s": round(statistics.median(p["llamaindex_s"] for p in pairs), 1),
        "llamaindex_venv": {
            "python": args.bench_python,
            "versions": li.get("versions", {}),
            "torch_threads": li.get("torch_threads"),
            "timer": li.get("timer"),
        },
        "args": vars(args),
        "machine": facts,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    dropout = "the model's own" if args.attention_dropout is None else args.attention_dropout
    memory = (
        "kept for reuse (`m3kit.heap`)" if args.keep_freed_memory else "unmapped (glibc's default)"
    )
    tunables = record["glibc_tunables"] or "unset"
    layers = (
        f"embeddings and the first {args.frozen_layers} layers frozen"
        if args.frozen_layers
        else "every layer trained"
    )
    rows = "\n".join(
        f"| {i + 1} | {p['first']} | {p['m3kit_s']} | {p['llamaindex_s']} | {p['ratio']:.2f} | "
        f"{p['load_at_start']} | {p['llamaindex_finetune_s']} | {p['llamaindex_build_s']} |"
        for i, p in enumerate(pairs)
    )
    versions = ", ".join(f"{k} {v or '-'}" for k, v in li.get("versions", {}).items())
    md = (
        "# Training time, m3kit vs LlamaIndex's engine, alternating runs "
        "(`benchmarks/finetune_timing.py`)\n\n"
        f"`{command}`: {len(train)} training rows of {Path(args.data).name} (the rows of "
        "`benchmarks/finetune.py` at the same arguments), all-MiniLM-L6-v2 start, 1 epoch, "
        f"batch {args.batch_size}. m3kit: three heads, {args.negatives} hard negatives per query, "
        f"passage max length {args.train_max_length or args.max_length}, "
        f"{precision} autocast ({steps} steps), "
        f"attention dropout {dropout}, {layers}, freed memory {memory}. "
        "LlamaIndex `SentenceTransformersFinetuneEngine`: (query, positive) pairs, in-batch "
        f"negatives, max length {li_length}, fp32 (its default), no validation set (no "
        f"evaluation; the final model saved); its venv: {versions}. "
        f"`GLIBC_TUNABLES` (both processes): {tunables}. "
        "The order alternates from pair to pair (column `first`). "
        f"Both times cover the training loop alone: m3kit {record['timers']['m3kit']}; "
        f"LlamaIndex {record['timers']['LlamaIndex']}. Its whole `finetune()` call and "
        "building its engine "
        "are the last two columns.\n\n"
        f"**m3kit / LlamaIndex: {spread_text(ratio)} over {len(pairs)} pairs** (median, "
        f"min-max; median {record['median_m3kit_s']} s vs "
        f"{record['median_llamaindex_s']} s).\n\n"
        f"{machine_markdown(facts)}\n\n"
        "| pair | first | m3kit s | LlamaIndex s | ratio | load average at start "
        "| LlamaIndex finetune() s | LlamaIndex build s |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
    )
    results_md.write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
