"""The training side of the fine-tuning benchmarks (finetune.py, finetune_timing.py,
finetune_sweep.py): one article split, one set of training arguments, one m3kit config, so
the three scripts train on the same rows with the same settings.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _quality_data import record_split

from m3kit.finetune import FinetuneConfig
from m3kit.finetune.data import DEFAULT_NEGATIVES
from m3kit.finetune.splits import ArticleSplit, split_by_article

REPO = Path(__file__).resolve().parents[1]
#: Share of the training articles held out as the validation task (finetune_sweep.py tunes
#: on it; finetune.py calibrates fusion on it): ``--validation-fraction``'s default.
VALIDATION_FRACTION = 0.25


def training_split(
    data: str,
    *,
    seed: int,
    rows: int,
    validation_fraction: float = VALIDATION_FRACTION,
    eval_queries: int | None = None,
    validation_queries: int | None = None,
) -> ArticleSplit:
    """The article split the fine-tuning benchmarks train on (finetune, _timing, _sweep).

    One call for all three, so they train on the same rows at the same arguments: a seeded
    half / half split by article, ``validation_fraction`` of the training articles held out,
    and rows keeping only their training-article negatives (CMRC's articles are single
    passages, so all its hard negatives come from other articles; squad_en has no such row
    among its training articles', so its rows are the same either way).

    Args:
        data: The data folder (squad_en, cmrc2018_zh, or the sample in ``tests/data``).
        seed: The split's (and samples') seed.
        rows: Keep a seeded sample of at most this many training rows.
        validation_fraction: Share of the training articles held out as the validation task.
        eval_queries: Keep a seeded sample of at most this many evaluation queries.
        validation_queries: Keep a seeded sample of at most this many validation queries.

    Raises:
        SystemExit: A data file is missing (naming it and where the data sits).
    """
    try:
        return split_by_article(
            data,
            seed=seed,
            max_train_rows=rows,
            max_eval_queries=eval_queries,
            validation_fraction=validation_fraction,
            max_validation_queries=validation_queries,
            drop_foreign_negatives=True,
        )
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e}; the full squad_en set sits beside the checkout as "
            "../shared/data/squad_en (or pass --data DIR, e.g. tests/data/squad_en, the sample)"
        ) from None


def record_rows(model: Path, by: str, args: argparse.Namespace, split: ArticleSplit) -> None:
    """Write the articles ``model`` was trained on into it (``_quality_data.record_split``)."""
    record_split(model, args.data, args.seed, split, by=by)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The data and both engines' training settings (shared with finetune_timing.py)."""
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad_en"))
    parser.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--negatives",
        type=int,
        default=DEFAULT_NEGATIVES,
        help="m3kit's hard negatives per query (default: the library's, FinetuneConfig's)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    # 1e-4 (+ FinetuneConfig's symmetric term): best on the validation articles,
    # benchmarks/results/finetune_sweep.md (was 5e-5)
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="m3kit's peak learning rate (default: the library's, by model size: 1e-4 for MiniLM)",
    )
    parser.add_argument(
        "--max-length", type=int, default=128, help="evaluation max length (and m3kit's training)"
    )
    parser.add_argument(
        "--train-max-length",
        type=int,
        default=None,
        help="m3kit's passage max length in training (default: --max-length); 256 is the "
        "length LlamaIndex's engine trains all-MiniLM-L6-v2 at",
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="m3kit's FinetuneConfig.attention_dropout (default: the model's own)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="m3kit's FinetuneConfig.keep_freed_memory (default: on)",
    )
    parser.add_argument(
        "--frozen-layers",
        type=int,
        default=0,
        help="m3kit's FinetuneConfig.frozen_layers (embeddings and the first N layers fixed)",
    )
    parser.add_argument(
        "--llamaindex-max-length",
        type=int,
        default=None,
        help="max length LlamaIndex's engine trains at (default: the model's own, 256 for "
        "all-MiniLM-L6-v2); --max-length 128 with this at 128 times both at equal lengths",
    )
    parser.add_argument("--seed", type=int, default=0, help="split (and training) seed")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=VALIDATION_FRACTION,
        help="share of the training articles held out of training (finetune.py calibrates "
        "the fusion on them; 0: none)",
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="m3kit's training seed (FinetuneConfig.seed: shuffling, negative sampling, new "
        "heads) apart from the split's (default: --seed)",
    )
    parser.add_argument(
        "--precision",
        default=FinetuneConfig.__dataclass_fields__["precision"].default,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="m3kit's training autocast (default: the library's); LlamaIndex's engine runs "
        "at its own default (fp32)",
    )


def m3kit_config(
    args: argparse.Namespace, model: str, output_path: Path, epochs: float = 1.0
) -> FinetuneConfig:
    """m3kit's settings from the benchmark's arguments (shared with finetune_timing.py)."""
    return FinetuneConfig(
        model=model,
        output_path=output_path,
        epochs=epochs,
        batch_size=args.batch_size,
        num_negatives=args.negatives,
        learning_rate=args.lr,
        query_max_length=64,
        passage_max_length=args.train_max_length or args.max_length,
        seed=args.seed if getattr(args, "train_seed", None) is None else args.train_seed,
        device="cpu",
        precision=args.precision,
        attention_dropout=args.attention_dropout,
        keep_freed_memory=getattr(args, "keep_freed_memory", True),
        frozen_layers=getattr(args, "frozen_layers", 0),
        show_progress=False,
        logging_steps=5,
    )


def check_bench_python(python: str) -> None:
    """Exit before any work when LlamaIndex's venv (``--bench-python``) is not there: it was
    found missing only after m3kit had trained (a raw ``FileNotFoundError``).

    Raises:
        SystemExit: Naming the path and how to set the venv up.
    """
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise SystemExit(
            f"error: --bench-python {python} is not an executable Python: LlamaIndex's engine "
            "runs in its own venv (python -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip "
            "install llama-index-finetuning sentence-transformers torch), or pass "
            "--skip-llamaindex"
        )
