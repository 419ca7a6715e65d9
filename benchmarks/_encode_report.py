"""The report of ``benchmarks/encode.py``: the torch threads its workers ran with and the
markdown table of its results."""

from __future__ import annotations

from typing import Any

import numpy as np
from _bench import machine_markdown


def worker_threads(results: list[dict[str, Any]]) -> int | dict[str, int]:
    """The torch threads the timed configurations ran with, each in its own process.

    One number when they all agree, else ``{"model config": threads}``. The parent process
    never encodes, so its own thread count says nothing about the timings.
    """
    per_config = {
        f"{res['model']} {r['config']}": r["torch_threads"] for res in results for r in res["rows"]
    }
    values = set(per_config.values())
    return values.pop() if len(values) == 1 else per_config


def _threads_text(threads: int | dict[str, int]) -> str:
    if isinstance(threads, int):
        return str(threads)
    return ", ".join(f"{config}: {n}" for config, n in threads.items())


def with_worker_threads(machine: dict[str, Any], threads: int | dict[str, int]) -> dict[str, Any]:
    """``machine`` (:func:`_bench.machine_facts`) with ``torch_threads`` the workers' count
    (the most of them when they differ; ``threads`` keeps each one)."""
    count = threads if isinstance(threads, int) else max(threads.values())
    return {**machine, "torch_threads": count}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def _ratio(row: dict[str, Any], key: str) -> str:
    s = row.get(f"{key}_spread")
    if s is None:
        return "-"
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Encoding speed: m3kit vs FlagEmbedding",
        "",
        f"{meta['cpu']}, {_threads_text(meta['threads'])} torch threads (in each configuration's "
        f"process), torch {meta['torch']}, "
        f"{meta['passages']} passages of ~{meta['tokens']} tokens, median of "
        f"{meta['repeats']} rounds (order rotated per round, one untimed warm-up call at the "
        f"timed shape first). Command: `{meta['command']}`",
        "",
        machine_markdown(meta["machine"]),
        "",
        "- Speed-ups are medians of per-round ratios, min-max in parentheses (each round runs "
        "every configuration once, in its own process, the order rotated from round to round; "
        "passages/s is from the median time). FlagEmbedding forces fp32 on CPU and runs one "
        "extra forward pass "
        "on the first batch of every `encode` call (its batch-size probe); m3kit fp32 runs the "
        "same maths once, so `x m3kit fp32` is the gain of the fast path alone.",
        "- Accuracy is against m3kit fp32 (which equals FlagEmbedding). Random checkpoints map "
        "all texts to nearly the same vectors and give few positive sparse weights, so the "
        "MiniLM rows (real weights) are the honest test of a lossy path.",
        "- RSS peak counts the pages of the memory-mapped checkpoint read during loading "
        "(casting to bf16 reads all of them); `after` is the resident size after encoding.",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['model']} ({res['passages']} passages, {res['tokens']} tokens)",
            "",
            "| config | precision | passages/s | tokens/s | RSS MB peak / after "
            "| x FlagEmbedding (min-max) | x m3kit fp32 (min-max) "
            "| dense cos min / mean | sparse top-10 overlap (terms/text) "
            "| ColBERT MaxSim max abs diff |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            a = r["accuracy_vs_m3kit_fp32"]
            lines.append(
                f"| {r['config']} | {r['precision']} | {r['passages_per_s']:.2f} "
                f"| {r['tokens_per_s']:.0f} "
                f"| {r['peak_rss_mb']:.0f} / {_fmt(r.get('rss_after_mb'), '.0f')} "
                f"| {_ratio(r, 'speedup_vs_flagembedding')} "
                f"| {_ratio(r, 'speedup_vs_m3kit_fp32')} "
                f"| {a['dense_cos_min']:.6f} / {a['dense_cos_mean']:.6f} "
                f"| {_fmt(a.get('sparse_top10_overlap'), '.3f')} "
                f"({_fmt(a.get('sparse_terms_mean'), '.0f')}) "
                f"| {_fmt(a.get('colbert_maxsim_absdiff_max'), '.5f')} |"
            )
        lines.append("")
    return "\n".join(lines)
