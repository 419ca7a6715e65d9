"""``m3kit calibrate`` (and the calibration ``m3kit finetune --validation`` ends with): the
checkpoint's fusion fitted on a BEIR folder and saved in it
(:func:`m3kit.store.calibration.calibrate_checkpoint`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from m3kit.finetune.cli_eval import read_beir, say_identical_ids

__all__ = ["calibrate_and_report", "run_calibrate"]


def calibrate_and_report(
    model: Path,
    data: tuple[dict[str, str], dict[str, str], dict[str, dict[str, float]]],
    device: str | None,
    progress: bool,
    *,
    ignore_identical_ids: bool,
    **options: Any,
) -> None:
    """Calibrate the checkpoint at ``model`` on ``data`` (corpus, queries, judgements; BEIR)
    and print what was chosen, with its nDCG@10 and p-value, and where it was saved."""
    from m3kit.store.calibration import calibrate_checkpoint

    say_identical_ids(data[0], data[1], ignore_identical_ids)
    cal = calibrate_checkpoint(
        model,
        *data,
        device=device,
        show_progress=progress,
        ignore_identical_ids=ignore_identical_ids,
        **options,
    )
    for name, chosen in (("all heads", cal.all_heads), ("dense+sparse", cal.dense_sparse)):
        if chosen is not None:
            score = cal.scores.get(f"{chosen.describe()} [{name}]")
            extra = f" (nDCG@10 {score:.4f})" if score is not None else ""
            if name in cal.p_values:  # over the null setting: RRF, or BGE-M3's published m3
                p_value = cal.p_values[name]
                extra += f"; best setting's gain over the uncalibrated default: p = {p_value:.3f}"
            print(f"{name}: {chosen.describe()}{extra}")
    print(
        f"calibrated on {cal.queries} queries with {cal.sparse_cut.describe()}; saved to "
        f"{Path(model) / 'm3kit_search.json'}"
    )


def run_calibrate(args: argparse.Namespace) -> int:
    """``m3kit calibrate``."""
    data = read_beir(args.data, args.split, args.max_queries, args.seed, fit_flag="--split")
    calibrate_and_report(
        args.model,
        data,
        args.device,
        not args.quiet,
        grid_step=args.grid_step,
        min_gain=args.min_gain,
        alpha=args.alpha,
        candidates=args.candidates,
        max_length=args.max_length,
        sparse_top_k=args.sparse_top_k,
        sparse_min_weight=args.sparse_min_weight,
        ignore_identical_ids=not args.keep_identical_ids,
    )
    return 0
