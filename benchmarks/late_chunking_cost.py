"""What late chunking costs against naive chunking on a BGE-M3-sized model, per window size.

Late chunking runs each document through the model in windows of ``window`` tokens; naive
chunking encodes every chunk alone. Both produce the SAME chunks (``LateChunker.spans``) with
all three heads. Attention cost grows with the window, so the window is the knob that trades
context for time; this script measures that trade on the full-size XLM-RoBERTa-large M3
architecture (random weights cost the same FLOPs as BAAI/bge-m3), in one interleaved run.

Run::

    python benchmarks/late_chunking_cost.py --docs 3     # 3 long SQuAD documents, ~10k tokens
    python benchmarks/late_chunking_cost.py --docs 1 --windows 514 8192 --overlaps 0 64

Writes ``benchmarks/results/late_chunking_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from m3kit import M3Encoder
from m3kit.late_chunking import LateChunker
from m3kit.machine import describe_machine
from m3kit.testing import build_random_m3_checkpoint, xlmr_tokenizer_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad_en" / "longdoc" / "corpus.jsonl"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _cpu() -> float:
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/m3-large"))
    parser.add_argument("--docs", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--windows", type=int, nargs="+", default=[512, 1024, 8192])
    parser.add_argument(
        "--overlaps",
        type=int,
        nargs="+",
        default=[-1],
        help="overlaps to try per window (-1: the chunker's default)",
    )
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; best kept")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(
            f"error: longdoc data missing: {DATA} (this benchmark reads the shared data beside "
            "the checkout, ../shared/data/squad_en/longdoc)"
        )

    if not (args.checkpoint / "colbert_linear.pt").is_file():
        build_random_m3_checkpoint(args.checkpoint, tokenizer_file=xlmr_tokenizer_file())
    encoder = M3Encoder.from_pretrained(args.checkpoint, dtype=args.dtype)
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    docs = [r["text"] for r in sorted(rows, key=lambda r: len(r["text"]))[: args.docs]]
    tokenizer = encoder.tokenizer
    tokens = sum(len(tokenizer(d, verbose=False)["input_ids"]) for d in docs)  # type: ignore[operator]

    base = LateChunker(encoder, chunk_size=args.chunk_size)
    spans = base.spans(docs)
    chunk_texts = [
        doc[s:e] for doc, doc_spans in zip(docs, spans, strict=True) for s, e in doc_spans
    ]
    chunkers = [
        LateChunker(
            encoder,
            chunk_size=args.chunk_size,
            window=window,
            overlap=None if overlap < 0 else overlap,
        )
        for window in args.windows
        for overlap in args.overlaps
    ]
    for chunker in chunkers:
        assert chunker.spans(docs) == spans, "late and naive must cut the same chunks"
    runs: list[tuple[str, int | None, int | None, Callable[[], object]]] = [
        ("naive", None, None, lambda: encoder.encode(chunk_texts, show_progress=False)),
        *(
            ("late", c.window, c.overlap, lambda c=c: c.chunk(docs, show_progress=False))
            for c in chunkers
        ),
    ]
    cpu: dict[int, list[float]] = {i: [] for i in range(len(runs))}
    wall: dict[int, list[float]] = {i: [] for i in range(len(runs))}
    encoder.encode(chunk_texts[:2], show_progress=False)  # warm-up
    for repeat in range(args.repeats):  # interleaved: machine drift hits every method alike
        for i, (label, window, overlap, fn) in enumerate(runs):
            w0, c0 = time.perf_counter(), _cpu()
            fn()
            wall[i].append(time.perf_counter() - w0)
            cpu[i].append(_cpu() - c0)
            print(
                f"[{repeat}] {label:>5} window={window!s:>5} overlap={overlap!s:>4}: "
                f"{wall[i][-1]:6.1f} s wall, {cpu[i][-1]:6.1f} s CPU",
                flush=True,
            )
    naive_cpu = min(cpu[0])
    results = [
        {
            "method": label,
            "window": window,
            "overlap": overlap,
            "wall_s": round(min(wall[i]), 2),
            "cpu_s": round(min(cpu[i]), 2),
            "cpu_s_all": [round(x, 2) for x in cpu[i]],
            "x_naive_cpu": round(min(cpu[i]) / naive_cpu, 2),
        }
        for i, (label, window, overlap, _) in enumerate(runs)
    ]
    machine = describe_machine()
    meta = {
        "checkpoint": str(args.checkpoint),
        "precision": encoder.precision.value,
        "documents": len(docs),
        "tokens": tokens,
        "chunks": len(chunk_texts),
        "chunk_size": args.chunk_size,
        "repeats": args.repeats,
        "machine": machine.as_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "late_chunking_cost.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8"
    )
    lines = [
        "# Late vs naive chunking cost (`benchmarks/late_chunking_cost.py`)",
        "",
        f"Full-size random M3 ({encoder.precision.value}), {len(docs)} long SQuAD documents, "
        f"{tokens} tokens, {len(chunk_texts)} chunks of <= {args.chunk_size} tokens, all three "
        f"heads; same chunks for both methods; best of {args.repeats} interleaved rounds.",
        "",
        machine.markdown(),
        "",
        "| method | window | overlap | wall s | CPU s | x naive (CPU) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['method']} | {r['window'] or '-'} | {_dash(r['overlap'])} "
            f"| {r['wall_s']} | {r['cpu_s']} | {r['x_naive_cpu']} |"
            for r in results
        ),
    ]
    (args.out / "late_chunking_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
