"""What late chunking costs against naive chunking on a BGE-M3-sized model, per window size.

Late chunking runs each document through the model in windows of ``window`` tokens; naive
chunking encodes every chunk alone. Both produce the SAME chunks (``LateChunker.spans``) with
all three heads. Attention cost grows with the window, so the window is the knob that trades
context for time; this script measures that trade on the full-size XLM-RoBERTa-large M3
architecture (random weights cost the same FLOPs as BAAI/bge-m3), in one interleaved run.

Run::

    python benchmarks/late_chunking_cost.py                     # 2 long SQuAD documents
    python benchmarks/late_chunking_cost.py --docs 1 --windows 512 8192

Writes ``benchmarks/results/late_chunking_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from m3kit import M3Encoder
from m3kit.late_chunking import LateChunker
from m3kit.testing import build_random_m3_checkpoint, xlmr_tokenizer_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad_en" / "longdoc" / "corpus.jsonl"


def _cpu() -> float:
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/m3-large"))
    parser.add_argument("--docs", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--windows", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

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
    results: list[dict[str, object]] = []

    def timed(label: str, window: int | None, fn: object) -> None:
        w0, c0 = time.perf_counter(), _cpu()
        fn()  # type: ignore[operator]
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
        results.append(
            {"method": label, "window": window, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        )
        print(f"{label:>8} window={window!s:>5}: {wall:7.1f} s wall, {cpu:7.1f} s CPU", flush=True)

    encoder.encode(chunk_texts[:2])  # warm-up
    timed("naive", None, lambda: encoder.encode(chunk_texts))
    for window in args.windows:
        chunker = LateChunker(encoder, chunk_size=args.chunk_size, window=window)
        assert chunker.spans(docs) == spans, "late and naive must cut the same chunks"
        timed("late", window, lambda c=chunker: c.chunk(docs))
    timed("naive", None, lambda: encoder.encode(chunk_texts))  # second naive run: drift check

    naive_cpu = min(float(r["cpu_s"]) for r in results if r["method"] == "naive")  # type: ignore[arg-type]
    for r in results:
        r["x_naive_cpu"] = round(float(r["cpu_s"]) / naive_cpu, 2)  # type: ignore[arg-type]
    meta = {
        "checkpoint": str(args.checkpoint),
        "precision": encoder.precision.value,
        "documents": len(docs),
        "tokens": tokens,
        "chunks": len(chunk_texts),
        "chunk_size": args.chunk_size,
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
        "heads; same chunks for both methods.",
        "",
        "| method | window | wall s | CPU s | x naive (CPU) |",
        "|---|---|---|---|---|",
        *(
            f"| {r['method']} | {r['window'] or '-'} | {r['wall_s']} | {r['cpu_s']} | "
            f"{r['x_naive_cpu']} |"
            for r in results
        ),
    ]
    (args.out / "late_chunking_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
