"""`m3kit index` (or `m3kit eval`) with and without kept freed memory: wall time and peak
memory, alternating.

``m3kit index``, ``eval``, ``calibrate`` and ``mine-negatives`` run inside
:func:`m3kit.heap.keep_freed_memory` by default (glibc keeps the memory freed tensors leave
for the next batch instead of unmapping it); ``--no-keep-freed-memory`` leaves glibc as it
is. This benchmark indexes the same documents into a new embedded store with each setting,
in fresh processes, the order alternating from round to round (``--repeats`` rounds), and
reports each run's wall time (the whole command: model load, chunking, encoding, writes) and
peak resident memory (the child process's ``ru_maxrss``), with the median ratio::

    python benchmarks/index_memory.py --model ./bge-m3 --docs 4 --repeats 2
    python benchmarks/index_memory.py --model ./minilm-m3 --docs 24 --dtype fp32
    python benchmarks/index_memory.py --model ./bge-m3 --eval ../shared/data/squad_en \
        --max-queries 200

With ``--eval BEIR_FOLDER`` each run is ``m3kit eval`` of every head on that folder instead
(the first ``--max-queries`` queries, seeded; the whole corpus is encoded).

Documents: the first ``--docs`` rows of ``--data`` (default: the long squad_en articles,
``../shared/data/squad_en/longdoc/corpus.jsonl``), indexed with ``--late-chunking`` unless
``--no-late-chunking``. Results go to ``--results`` (a stem or ``.json``; default a new
time-stamped name in ``benchmarks/results``); an existing file is never written over.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import (
    RunStart,
    command_line,
    machine_facts,
    machine_markdown,
    output_stem,
    ratios,
    refuse_existing,
    rotated,
    spread,
    spread_text,
    with_ext,
)

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ("kept", "unmapped")  # --keep-freed-memory (the default), --no-keep-freed-memory


def _run(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident KiB of ``python -m m3kit`` ``argv`` (a fresh process)."""
    begin = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "m3kit", *argv])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - begin
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: m3kit {' '.join(argv)} exited with {proc.returncode}")
    return seconds, int(usage.ru_maxrss)  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    start = RunStart.now()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local checkpoint m3kit index loads")
    default_data = REPO.parent / "shared" / "data" / "squad_en" / "longdoc" / "corpus.jsonl"
    parser.add_argument("--data", type=Path, default=default_data, help=".jsonl documents")
    parser.add_argument("--label", default=None, help="what the model is, for the report")
    parser.add_argument("--docs", type=int, default=24, help="first N documents of --data")
    parser.add_argument("--dtype", default=None, help="m3kit index --dtype (default: its own)")
    parser.add_argument(
        "--late-chunking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="index with --late-chunking (default) or without",
    )
    parser.add_argument(
        "--eval", type=Path, default=None, metavar="BEIR", help="run m3kit eval on this folder"
    )
    parser.add_argument("--max-queries", type=int, default=200, help="with --eval (200)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds (order alternates)")
    parser.add_argument("--results", default=None, help="results stem or .json")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.docs < 1:
        raise SystemExit("error: --repeats and --docs must be >= 1")
    if args.eval is None and not args.data.is_file():
        raise SystemExit(f"error: {args.data} is missing (pass --data FILE.jsonl)")
    if args.eval is not None and not (args.eval / "corpus.jsonl").is_file():
        raise SystemExit(f"error: {args.eval} is not a BEIR folder (no corpus.jsonl)")
    if args.eval is not None and (args.dtype or args.late_chunking is not None):
        raise SystemExit("error: --dtype and --[no-]late-chunking are m3kit index's, not eval's")
    late_chunking = args.late_chunking is not False
    stem = output_stem(args.results, "index_memory")
    results, results_md = with_ext(stem, ".json"), with_ext(stem, ".md")
    refuse_existing([results, results_md])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = args.data if args.eval is None else args.eval / "corpus.jsonl"
    rows = source.read_text(encoding="utf-8").splitlines()
    rows = rows if args.eval is not None else rows[: args.docs]
    chars = sum(len(json.loads(row).get("text", "")) for row in rows)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        docs = Path(work) / "docs.jsonl"
        docs.write_text("\n".join(rows) + "\n", encoding="utf-8")
        for rep in range(args.repeats):
            for setting in rotated(SETTINGS, rep):
                store = Path(work) / f"store-{rep}-{setting}"
                if args.eval is not None:
                    cmd = ["eval", "--model", args.model, "--data", str(args.eval), "--quiet"]
                    cmd += ["--max-queries", str(args.max_queries)]
                else:
                    cmd = ["index", str(docs), "--collection", "bench", "--path", str(store)]
                    cmd += ["--model", args.model, "-q"]
                    cmd += ["--late-chunking"] if late_chunking else ["--no-late-chunking"]
                    cmd += ["--dtype", args.dtype] if args.dtype else []
                cmd += ["--no-keep-freed-memory"] if setting == "unmapped" else []
                load = os.getloadavg()[0]
                seconds, rss_kib = _run(cmd)
                run = {"round": rep + 1, "setting": setting, "seconds": round(seconds, 2)}
                run |= {"peak_rss_mib": round(rss_kib / 1024, 1), "load_at_start": round(load, 2)}
                runs.append(run)
                print(json.dumps(run), flush=True)

    def of(setting: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["setting"] == setting]

    ratio = spread(ratios(of("kept", "seconds"), of("unmapped", "seconds")))
    facts = machine_facts(start, args.dtype or "m3kit index's default (--dtype not given)")
    record = {
        "command": command_line("index_memory.py", argv),
        "model": args.model,
        "label": args.label,
        "subcommand": "index" if args.eval is None else "eval",
        "documents": len(rows),
        "characters": chars,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "time_ratio_kept_over_unmapped": ratio,
        "runs": runs,
        "machine": facts,
    }
    results.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = [
        "| round | setting | seconds | peak RSS MiB | load at start |",
        "|---:|---|---:|---:|---:|",
        *(
            f"| {r['round']} | {r['setting']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{r['load_at_start']} |"
            for r in runs
        ),
    ]
    if args.eval is None:
        what = (
            f"{len(rows)} documents ({chars:,} characters) of {args.data.name}, late chunking "
            f"{'on' if late_chunking else 'off'}"
        )
        each = "`python -m m3kit index` into a new embedded store"
    else:
        what = (
            f"`m3kit eval` on {args.eval} ({len(rows)} passages, {chars:,} characters; "
            f"{args.max_queries} queries at most)"
        )
        each = "`python -m m3kit eval` (every head, exhaustive scoring)"
    results_md.write_text(
        f"# `m3kit {record['subcommand']}` with kept vs unmapped freed memory "
        "(`benchmarks/index_memory.py`)\n\n"
        f"`{record['command']}`: {what}, model `{args.model}`"
        + (f" ({args.label})" if args.label else "")
        + "; "
        f"each run a fresh {each}, the order "
        "alternating by round. `kept`: the default (`--keep-freed-memory`); `unmapped`: "
        f"`--no-keep-freed-memory`. `GLIBC_TUNABLES`: {record['glibc_tunables'] or 'unset'}.\n\n"
        f"**kept / unmapped wall time: {spread_text(ratio)} over {args.repeats} round(s)**\n\n"
        f"{machine_markdown(facts)}\n\n" + "\n".join(table) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {results} {results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
