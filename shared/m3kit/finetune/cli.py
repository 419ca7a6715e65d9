"""``m3kit finetune``, ``mine-negatives``, ``eval`` and ``calibrate`` (added to the m3kit CLI).

Examples::

    m3kit mine-negatives --model BAAI/bge-m3 --train train.jsonl --output mined.jsonl
    m3kit finetune --model BAAI/bge-m3 --train mined.jsonl --output out/bge-m3-ft --epochs 1 \
        --validation data/val        # then calibrates the fusion on that BEIR folder
    m3kit finetune --model BAAI/bge-m3 --late-chunking --longdoc data/squad_en/longdoc \
        --output out/bge-m3-span     # span pooling (late-chunking-aware)
    m3kit eval --model out/bge-m3-ft --data shared/data/squad_en --baseline BAAI/bge-m3
    m3kit calibrate --model out/bge-m3-ft --data data/val
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from m3kit.cli_memory import add_keep_freed_memory_argument, keeping_freed_memory
from m3kit.cli_scale import positive_int
from m3kit.cli_search import add_weights_argument
from m3kit.finetune.cli_args import (
    add_encoder_arguments,
    add_keep_identical_ids_argument,
    add_sparse_cut_arguments,
    p_threshold,
    split_list,
)
from m3kit.finetune.cli_calibrate import calibrate_and_report, run_calibrate
from m3kit.finetune.cli_eval import read_beir, run_eval
from m3kit.finetune.cli_mine import run_mine
from m3kit.finetune.data import DEFAULT_NEGATIVES
from m3kit.finetune.sparse_start import SparseStart
from m3kit.precision import TRAINING_PRECISIONS

__all__ = ["add_subcommands"]

_SPLIT_HELP = (
    "qrels split to read (qrels/SPLIT.tsv of a BEIR folder); needed when qrels/ holds several"
)


def add_subcommands(subparsers: Any) -> None:
    """Register the four subcommands on the m3kit CLI's subparsers."""
    ft = subparsers.add_parser(
        "finetune",
        help="fine-tune the dense, sparse and ColBERT heads",
        description="Fine-tune an M3 (or dense-only) checkpoint on FlagEmbedding jsonl rows "
        '{"query", "pos", "neg"} or a LlamaIndex QA dataset JSON.',
    )
    ft.add_argument("--model", required=True, help="start checkpoint (folder or hub id)")
    src = ft.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", type=Path, help="FlagEmbedding jsonl / jsonl.gz")
    src.add_argument(
        "--qa-json",
        type=Path,
        help="EmbeddingQAFinetuneDataset JSON (one row per query and relevant doc, as "
        "M3FinetuneEngine trains)",
    )
    src.add_argument(
        "--longdoc",
        type=Path,
        help="long-document folder (corpus.jsonl + queries.jsonl with doc_id and paragraph "
        "spans); needs --late-chunking",
    )
    ft.add_argument("--output", required=True, type=Path, help="folder of the new checkpoint")
    ft.add_argument("--heads", default="dense,sparse,colbert", help="heads to train")
    ft.add_argument(
        "--sparse-start",
        choices=[m.value for m in SparseStart],
        default=SparseStart.IDF.value,
        help="how a dense-only model's new sparse head starts: idf (each token weighted by its "
        "inverse document frequency over the training passages) or uniform (every token 0.1)",
    )
    ft.add_argument("--freeze-encoder", action="store_true", help="train the heads only")
    ft.add_argument(
        "--frozen-layers",
        type=int,
        default=0,
        metavar="N",
        help="keep the token embeddings and the first N transformer layers fixed (cheaper steps)",
    )
    ft.add_argument(
        "--late-chunking",
        action="store_true",
        help="span pooling: pool each question's paragraph from the windows late chunking "
        "encodes its whole document in (needs --longdoc; --passage-max-length is the window, "
        "--span-overlap the tokens windows share; in-batch negatives, plus --span-negatives "
        "other spans of the window)",
    )
    ft.add_argument(
        "--articles",
        default=None,
        help="with --longdoc: comma-separated document ids to train on (e.g. a training split)",
    )
    ft.add_argument(
        "--chunk-chars",
        type=int,
        default=None,
        help="with --longdoc: train on chunks of about this many characters holding the answer "
        "(default: whole paragraphs)",
    )
    ft.add_argument("--epochs", type=float, default=1.0, help="passes over the rows (default 1)")
    ft.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (wins over epochs)"
    )
    ft.add_argument(
        "--batch-size", type=int, default=16, help="queries a step (in-batch negatives; default 16)"
    )
    ft.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    ft.add_argument(
        "--negatives",
        type=int,
        default=None,
        help=f"hard negatives per query row (default {DEFAULT_NEGATIVES}; with --late-chunking use "
        "--span-negatives)",
    )
    ft.add_argument(
        "--span-negatives",
        type=int,
        default=0,
        help="with --late-chunking: other spans of the positive's window pooled as its "
        "negatives (default 0: in-batch negatives only)",
    )
    ft.add_argument(
        "--span-overlap",
        type=int,
        default=None,
        help="with --late-chunking: text tokens consecutive windows share (default: the late "
        "chunker's, an eighth of the window)",
    )
    ft.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: by the start model's size, 1e-4 below 100M "
        "parameters, else 2e-5)",
    )
    ft.add_argument(
        "--temperature", type=float, default=0.02, help="softmax temperature of the loss (0.02)"
    )
    ft.add_argument(
        "--query-max-length", type=int, default=64, help="query tokens trained on (default 64)"
    )
    ft.add_argument(
        "--passage-max-length",
        type=int,
        default=256,
        help="passage tokens trained on (with --late-chunking: the window; default 256)",
    )
    ft.add_argument(
        "--precision",
        choices=list(TRAINING_PRECISIONS),
        default="auto",
        help="autocast: auto = bf16 where native (AVX-512 BF16/AMX CPUs, GPUs 8.0+), fp16 on "
        "older GPUs, else fp32",
    )
    ft.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="dropout on attention probabilities while training (default: the model's own; "
        "0 trains ~1.5x faster on CPU at a small quality cost)",
    )
    ft.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="training on CPU, and the --validation calibration (Linux, glibc): keep freed "
        "memory for reuse instead of unmapping it; faster steps, higher peak memory "
        "(default: on)",
    )
    ft.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ft.add_argument("--seed", type=int, default=42, help="seeds batches, dropout and heads (42)")
    ft.add_argument(
        "--validation",
        type=Path,
        default=None,
        help="BEIR folder (corpus/queries/qrels) of held-out validation data: after training, "
        "calibrate the checkpoint's fusion on it (see m3kit calibrate)",
    )
    ft.add_argument(
        "--validation-split",
        default=None,
        metavar="SPLIT",
        help="with --validation: its qrels split (qrels/SPLIT.tsv; needed when it holds several)",
    )
    add_sparse_cut_arguments(ft, "with --validation: calibrate with", "recorded with it")
    add_keep_identical_ids_argument(ft, "with --validation: score")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    ft.set_defaults(handler=_run_finetune)

    mine = subparsers.add_parser(
        "mine-negatives",
        help="replace the negatives of training rows with ones mined by a model",
        description="Rank a corpus for each query with the model and sample negatives from a "
        "window of ranks (never a positive).",
    )
    mine.add_argument("--model", required=True, help="checkpoint ranking the corpus")
    mine.add_argument("--train", required=True, type=Path, help="FlagEmbedding jsonl / jsonl.gz")
    mine.add_argument("--output", required=True, type=Path, help="jsonl (.gz) to write")
    mine.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help='jsonl of {"text"[, "title"]} candidates (default: all pos + neg of the rows)',
    )
    add_encoder_arguments(mine, "ranking the corpus")
    mine.add_argument("--negatives", type=int, default=7, help="negatives per row (default 7)")
    mine.add_argument("--range", default="10-100", help="rank window START-END (0-based)")
    mine.add_argument(
        "--score",
        choices=["dense", "sparse", "fused"],
        default="dense",
        help="the head (or fusion) ranking the corpus (default dense)",
    )
    mine.add_argument("--seed", type=int, default=0, help="seeds the sample from the window")
    add_keep_freed_memory_argument(mine, "ranking the corpus")
    mine.add_argument("--quiet", action="store_true", help="no progress bars")
    mine.set_defaults(handler=keeping_freed_memory(run_mine))

    ev = subparsers.add_parser(
        "eval",
        help="retrieval metrics of each head on a BEIR folder",
        description="nDCG@10, MRR@10, hit@k and recall@k of the dense, sparse and ColBERT heads "
        "and their fusion, exhaustively over the corpus.",
    )
    ev.add_argument("--model", required=True, help="checkpoint to evaluate (folder or hub id)")
    ev.add_argument("--data", required=True, type=Path, help="BEIR folder (corpus/queries/qrels)")
    ev.add_argument("--split", default=None, help=_SPLIT_HELP)
    ev.add_argument("--baseline", default=None, help="a second model to compare with")
    ev.add_argument("--heads", default=None, help="comma-separated heads (default: all)")
    ev.add_argument(
        "--max-queries",
        type=positive_int,
        default=None,
        help="seeded sample of the queries with a relevant passage",
    )
    ev.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="load the models at this length and score passages and queries cut at it "
        "(default: each model's own; up to its position embeddings)",
    )
    add_weights_argument(
        ev,
        "weights of the fused row (default: each model's calibrated m3 weights from its "
        "m3kit_search.json, else FlagEmbedding's 0.4 0.2 0.4)",
    )
    add_sparse_cut_arguments(ev, "score with", "recorded in the report")
    add_keep_identical_ids_argument(ev, "score")
    ev.add_argument("--output", type=Path, default=None, help="write report.json/.md/.png here")
    ev.add_argument("--seed", type=int, default=0, help="seeds the --max-queries sample")
    add_keep_freed_memory_argument(ev, "encoding")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(handler=keeping_freed_memory(run_eval))

    cal = subparsers.add_parser(
        "calibrate",
        help="fit a checkpoint's fusion on validation data",
        description="Measure RRF, DBSF and the M3 weighted sum (a grid of weights) through the "
        "store on a BEIR folder of validation data (not your test set), and save the best as "
        "m3kit_search.json in the checkpoint folder: searches then use it by default.",
    )
    cal.add_argument("--model", required=True, type=Path, help="local checkpoint folder")
    cal.add_argument("--data", required=True, type=Path, help="BEIR folder of validation data")
    cal.add_argument("--split", default=None, help=_SPLIT_HELP)
    cal.add_argument(
        "--max-queries",
        type=positive_int,
        default=None,
        help="seeded sample of the queries with a relevant passage",
    )
    cal.add_argument("--grid-step", type=float, default=0.1, help="weight grid step (0.1)")
    cal.add_argument(
        "--min-gain",
        type=float,
        default=0.005,
        help="nDCG@10 a setting must gain over the model's uncalibrated default (RRF; m3 "
        "0.4/0.2/0.4 for a BGE-M3-shaped model) to be chosen (default 0.005)",
    )
    cal.add_argument(
        "--alpha",
        type=p_threshold,
        default=0.05,
        help="largest p-value (sign-flip test over the queries, best of every setting "
        "tried) at which a setting replaces the model's uncalibrated default (default 0.05; "
        "1 turns the test off)",
    )
    cal.add_argument("--candidates", type=int, default=None, help="candidates per retriever")
    cal.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="cut the validation passages and queries at this length (at most the model's "
        "own; the calibration is for the model as it loads by default, and as it loads at "
        "this length)",
    )
    add_sparse_cut_arguments(
        cal, "measure with", "recorded with the calibration, and an index with another cut warns"
    )
    add_keep_identical_ids_argument(cal, "score")
    cal.add_argument("--device", default=None, help="cpu, cuda or mps (default: a GPU if any)")
    cal.add_argument("--seed", type=int, default=0, help="seeds the --max-queries sample")
    add_keep_freed_memory_argument(cal, "encoding and searching")
    cal.add_argument("--quiet", action="store_true", help="no progress bars")
    cal.set_defaults(handler=keeping_freed_memory(run_calibrate))


def _run_finetune(args: argparse.Namespace) -> int:
    from m3kit.finetune.data import TrainingExample, examples_from_qa, read_jsonl
    from m3kit.finetune.trainer import FinetuneConfig, M3Finetuner
    from m3kit.outputs import Head

    if args.late_chunking != (args.longdoc is not None):
        raise ValueError(
            "--late-chunking and --longdoc go together (span pooling on long documents)"
        )
    if args.articles is not None and args.longdoc is None:
        raise ValueError("--articles selects documents of --longdoc")
    if args.chunk_chars is not None and args.longdoc is None:
        raise ValueError("--chunk-chars cuts the documents of --longdoc; it needs --longdoc")
    if args.span_negatives and not args.late_chunking:
        raise ValueError("--span-negatives applies with --late-chunking (span pooling) only")
    if args.span_overlap is not None and not args.late_chunking:
        raise ValueError("--span-overlap applies with --late-chunking (span pooling) only")
    if args.negatives is not None and args.late_chunking:
        raise ValueError(
            "--negatives applies to query-passage rows; with --late-chunking use --span-negatives"
        )
    if args.validation_split is not None and args.validation is None:
        raise ValueError("--validation-split names a qrels split of --validation")
    cut = {"sparse_top_k": args.sparse_top_k, "sparse_min_weight": args.sparse_min_weight}
    if args.validation is None and any(v is not None for v in cut.values()):
        raise ValueError(
            "--sparse-top-k / --sparse-min-weight apply with --validation (the sparse cut the "
            "calibration measures with)"
        )
    if args.keep_identical_ids and args.validation is None:
        raise ValueError(
            "--keep-identical-ids applies with --validation (the calibration's rankings)"
        )
    if args.validation is not None:  # fail before reading and training, on a bad folder
        validation = read_beir(
            args.validation,
            args.validation_split,
            None,
            args.seed,
            fit_flag="--validation-split",
        )
    if args.longdoc is not None:
        from m3kit.finetune.span_data import read_longdoc_examples

        examples: list[Any] = read_longdoc_examples(
            args.longdoc, split_list(args.articles), chunk_chars=args.chunk_chars
        )
    elif args.train:
        examples = read_jsonl(args.train)
    else:
        # one row per (query, relevant doc), as M3FinetuneEngine and LlamaIndex's engine
        # (use_all_docs) train: one row per query trained a random one of its docs an epoch
        examples = [
            TrainingExample(ex.query, (pos,), ex.neg)
            for ex in examples_from_qa(args.qa_json)
            for pos in ex.pos
        ]
    if args.validation is not None:  # told now, not after the training run
        from m3kit.finetune.splits import warn_validation_overlap

        warn_validation_overlap((ex.query for ex in examples), validation[1].values())
    config = FinetuneConfig(
        model=args.model,
        output_path=args.output,
        heads=Head.parse(split_list(args.heads) or []),
        sparse_start=args.sparse_start,
        freeze_encoder=args.freeze_encoder,
        frozen_layers=args.frozen_layers,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        num_negatives=DEFAULT_NEGATIVES if args.negatives is None else args.negatives,
        span_negatives=args.span_negatives,
        span_overlap=args.span_overlap,
        learning_rate=args.lr,
        temperature=args.temperature,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        precision=args.precision,
        attention_dropout=args.attention_dropout,
        keep_freed_memory=args.keep_freed_memory,
        device=args.device,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    finetuner = M3Finetuner(config)
    result = finetuner.fit_spans(examples) if args.late_chunking else finetuner.fit(examples)
    print(
        f"fine-tuned {', '.join(sorted(h.value for h in result.heads))} on "
        f"{result.examples} example(s), {result.steps} step(s) in {result.train_seconds:.1f} s: "
        f"{result.path}"
    )
    if args.validation is not None:
        from m3kit import heap

        with heap.keep_freed_memory(args.keep_freed_memory):  # as m3kit calibrate does
            calibrate_and_report(
                result.path,
                validation,
                args.device,
                not args.quiet,
                ignore_identical_ids=not args.keep_identical_ids,
                **cut,
            )
    return 0
