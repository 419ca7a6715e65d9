"""``m3kit mine-negatives``: hard negatives mined by a model's own ranking
(:func:`m3kit.finetune.mining.mine_hard_negatives`), written as training rows."""

from __future__ import annotations

import argparse
from pathlib import Path

from m3kit.finetune.cli_args import check_output_place, encoder_options

__all__ = ["run_mine"]


def _read_corpus(path: Path) -> tuple[list[str], list[str | None]]:
    """Texts and titles of a ``--corpus`` jsonl (``{"text"[, "title"]}`` rows)."""
    from m3kit.jsonl import iter_json_rows

    texts: list[str] = []
    titles: list[str | None] = []
    for line_no, row in iter_json_rows(path):
        if not isinstance(row.get("text"), str):
            raise ValueError(f'{path}:{line_no}: a corpus row needs a "text" string')
        if not isinstance(row.get("title"), (str, type(None))):
            raise ValueError(f'{path}:{line_no}: a corpus row\'s "title" must be a string')
        texts.append(row["text"])
        titles.append(row.get("title"))
    return texts, titles


def run_mine(args: argparse.Namespace) -> int:
    """``m3kit mine-negatives``."""
    from m3kit.encoder import M3Encoder
    from m3kit.finetune.data import read_jsonl, write_jsonl
    from m3kit.finetune.mining import mine_hard_negatives

    try:
        start, end = (int(x) for x in args.range.split("-"))
    except ValueError as e:
        raise ValueError(f"--range must look like 10-100, got {args.range!r}") from e
    check_output_place(args.output, "--output", folder=False)  # before the mining
    examples = read_jsonl(args.train)
    corpus, titles = _read_corpus(args.corpus) if args.corpus else (None, None)
    encoder = M3Encoder.from_pretrained(args.model, **encoder_options(args))
    mined = mine_hard_negatives(
        encoder,
        examples,
        corpus,
        corpus_titles=titles,
        num_negatives=args.negatives,
        rank_range=(start, end),
        score=args.score,
        seed=args.seed,
        show_progress=False if args.quiet else None,
    )
    write_jsonl(mined, args.output)
    print(f"wrote {len(mined)} row(s) with mined negatives to {args.output}")
    return 0
