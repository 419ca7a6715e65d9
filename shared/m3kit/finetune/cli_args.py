"""Argument types and flags shared by the ``m3kit`` fine-tuning subcommands
(:mod:`m3kit.finetune.cli`): ``--alpha``, the sparse cut (``--sparse-top-k`` /
``--sparse-min-weight``), ``--keep-identical-ids`` and how a model is loaded (``--device``,
``--dtype``, ...)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "add_encoder_arguments",
    "add_keep_identical_ids_argument",
    "add_sparse_cut_arguments",
    "check_output_place",
    "encoder_options",
    "p_threshold",
    "split_list",
]


def add_sparse_cut_arguments(parser: argparse.ArgumentParser, use: str, recorded: str) -> None:
    """``--sparse-top-k`` / ``--sparse-min-weight`` of ``m3kit calibrate``, ``eval`` and
    ``finetune`` (``--validation``): the sparse cut of the collections the numbers are for
    (``m3kit index``'s flags of the same name), checked before any model loads.

    Args:
        parser: The subcommand's parser.
        use: How the cut is used, the start of the help (``"measure with"``).
        recorded: Where it is recorded (``"recorded in the report"``).
    """
    from m3kit.cli_open import sparse_min_weight
    from m3kit.cli_scale import positive_int

    top_k_help = (
        f"{use} the sparse cut your collections are indexed with (m3kit index "
        "--sparse-top-k): keep the K highest sparse weights of every passage and query; "
        f"{recorded} (default: no cut)"
    )
    parser.add_argument("--sparse-top-k", type=positive_int, metavar="K", help=top_k_help)
    w_help = "likewise, drop sparse weights at or below W (default: no cut)"
    parser.add_argument("--sparse-min-weight", type=sparse_min_weight, metavar="W", help=w_help)


def add_keep_identical_ids_argument(parser: argparse.ArgumentParser, use: str) -> None:
    """``--keep-identical-ids`` of ``m3kit eval``, ``calibrate`` and ``finetune``
    (``--validation``): score a hit whose id is its query's id, which they leave out by
    default, as BEIR's evaluator does.

    Args:
        parser: The subcommand's parser.
        use: What scores the hit, the start of the help (``"score"``).
    """
    parser.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help=f"{use} a hit whose id is its query's id (default: left out, as BEIR's evaluator "
        "does: ArguAna and Quora queries are corpus documents too)",
    )


def p_threshold(text: str) -> float:
    """``--alpha``: a p-value threshold in (0, 1], checked before any model loads."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a p-value threshold in (0, 1], got {text}")
    return value


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated flag value as a list (``None`` for none given).

    >>> split_list("dense, sparse,"), split_list(None)
    (['dense', 'sparse'], None)
    """
    return [h.strip() for h in value.split(",") if h.strip()] if value else None


def add_encoder_arguments(parser: argparse.ArgumentParser, use: str) -> None:
    """``--device``, ``--dtype``, ``--max-length``, ``--batch-size``, ``--max-batch-tokens``
    and ``--query-instruction``: how the model is loaded for ``use`` (defaults:
    ``M3Encoder.from_pretrained``'s: the checkpoint's own length and instruction, 32 texts and
    8192 padded tokens per pass)."""
    from m3kit.cli_scale import positive_int
    from m3kit.precision import Precision

    parser.add_argument("--device", default=None, help=f"device {use} (default: auto)")
    parser.add_argument(
        "--dtype",
        choices=[p.value for p in Precision],
        default="auto",
        help=f"precision {use} (default: auto)",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per text (default: the checkpoint's; up to its position embeddings)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="texts per pass")
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=8192,
        help="most padded tokens per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--query-instruction",
        default=None,
        help="prefix added to queries (default: the checkpoint's own; '' for none)",
    )


def encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``M3Encoder.from_pretrained`` options :func:`add_encoder_arguments` parsed."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "query_instruction": args.query_instruction,
    }


def check_output_place(path: str, flag: str, *, folder: bool) -> None:
    """Refuse, before any model loads, an output the command could write only after its
    work: a ``folder`` path that is a file, or a file path that is a folder, or one under a
    file (the write failed at the end with a bare ``File exists`` / ``Is a directory``).

    Raises:
        ValueError: Names the flag, the path and what is in the way.
    """
    from pathlib import Path

    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path}: a file is there; give a folder for the report")
    if not folder and p.is_dir():
        raise ValueError(f"{flag} {path}: a folder is there; give the file to write")
    for above in p.parents:
        if above.exists():
            if not above.is_dir():
                raise ValueError(f"{flag} {path}: {above} is a file, not a folder")
            break
