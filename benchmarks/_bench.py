"""What every benchmark shares: where results go, the facts they carry, the order of rounds.

- Output: :func:`output_stem` gives a results name; without ``--out`` it is a new name
  stamped with the UTC start time (``benchmarks/results/<name>_<YYYYmmddTHHMMSSZ>``), so a
  run never replaces a committed record; :func:`refuse_existing` stops a run before it
  starts when a file it would write exists already.
- Facts: :func:`machine_facts` is :func:`m3kit.machine.describe_machine` (CPU model and
  flags, torch / transformers versions, threads) plus the precision measured and the load
  average when the run started; :func:`machine_markdown` writes them as a results header.
- Rounds: :func:`rotated` is the order of the timed variants in one round (each variant
  takes every position in turn); :func:`spread` is the median, min and max over rounds.
- :func:`checkpoint_digest`: sha256 of a checkpoint's weight files (which model was scored).
- :func:`command_line`: the command a results file says made it.
- :func:`record_training` writes the articles a benchmark trained a checkpoint on into it
  (:data:`SPLIT_FILE`); :func:`check_not_trained_on` refuses to score it on one of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
T = TypeVar("T")

#: Files whose bytes are a checkpoint's weights (heads included).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# -- where results go -------------------------------------------------------------------------
def utc_stamp(when: float | None = None) -> str:
    """``YYYYmmddTHHMMSSZ`` of ``when`` (default: now).

    >>> utc_stamp(0.0)
    '19700101T000000Z'
    """
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))


def output_stem(
    value: str | Path | None, name: str, *, folder: Path = RESULTS, when: float | None = None
) -> Path:
    """The results stem (a path without extension) a run writes ``.json`` / ``.md`` beside.

    ``value`` None: ``folder/<name>_<stamp>`` (a new name); an existing folder: the same
    stamped name inside it; else ``value`` itself with a ``.json`` / ``.md`` / ``.jsonl``
    extension dropped.

    >>> output_stem(None, "encode", folder=Path("/r"), when=0.0).as_posix()
    '/r/encode_19700101T000000Z'
    >>> output_stem("/tmp/x/late.json", "late").as_posix()
    '/tmp/x/late'
    """
    if value is None:
        return folder / f"{name}_{utc_stamp(when)}"
    path = Path(value)
    if path.is_dir():
        return path / f"{name}_{utc_stamp(when)}"
    if path.suffix in (".json", ".md", ".jsonl"):
        return path.with_suffix("")
    return path


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--queries 0`` crashed deep in the run, or
    wrote a table of zeros).

    >>> positive_int("3")
    3
    """
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def with_ext(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext`` (a dot in the stem's name is kept, unlike ``Path.with_suffix``).

    >>> with_ext(Path("/tmp/run.v2"), ".json").as_posix()
    '/tmp/run.v2.json'
    """
    return stem.parent / f"{stem.name}{ext}"


def refuse_existing(paths: Iterable[Path]) -> None:
    """Exit before the run when one of ``paths`` exists: results are never written over.

    Raises:
        SystemExit: Naming the existing file.
    """
    for path in paths:
        if path.exists():
            raise SystemExit(
                f"error: {path} exists; benchmarks never write over a result "
                "(pass --out with a new name, or leave --out out for a time-stamped one)"
            )


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that made a result: ``python benchmarks/<script>`` and its arguments.

    ``argv`` None: this process's own (``sys.argv[1:]``); an empty list: no arguments. Each
    argument is quoted as a shell needs it, so the line can be run again as it is.

    >>> command_line("late_chunking.py", ["--models", "ckpt:span=/tmp/my model"])
    "python benchmarks/late_chunking.py --models 'ckpt:span=/tmp/my model'"
    >>> command_line("store.py", [])
    'python benchmarks/store.py'
    """
    given = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *given])


# -- machine facts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunStart:
    """When a run started and the load average then (1, 5, 15 minutes)."""

    started_utc: str
    load_average: tuple[float, float, float]

    @classmethod
    def now(cls) -> RunStart:
        """The current time and load average (zeros where the OS has none)."""
        try:
            load = os.getloadavg()
        except (AttributeError, OSError):  # Windows
            load = (0.0, 0.0, 0.0)
        return cls(
            started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        )


def machine_facts(start: RunStart, precision: object) -> dict[str, Any]:
    """``describe_machine()`` as a dict, plus ``precision``, the start time and load average."""
    from m3kit.machine import describe_machine

    return {
        **describe_machine().as_dict(),
        "precision": precision,
        "started_utc": start.started_utc,
        "load_average_at_start": list(start.load_average),
    }


def loaded(load_1min: float, cpus: int) -> bool:
    """Whether other work held at least half the CPUs when the run started.

    >>> loaded(0.3, 2), loaded(1.0, 2)
    (False, True)
    """
    return load_1min >= 0.5 * max(1, cpus)


def load_line(load: Sequence[float], cpus: int) -> str:
    """A markdown line on the load at start, with the caveat timings need.

    >>> load_line([0.1, 0.2, 0.3], 2)[:60]
    '- Load average at start: 0.1 / 0.2 / 0.3 (1 / 5 / 15 min) on'
    >>> "indicative only" in load_line([1.5, 1.0, 1.0], 2)
    True
    """
    text = (
        f"- Load average at start: {load[0]:g} / {load[1]:g} / {load[2]:g} (1 / 5 / 15 min) on "
        f"{cpus} logical CPUs; "
    )
    if loaded(load[0], cpus):
        return text + "**other work was running: timings are indicative only**"
    return text + "compare timings only with runs at a similar load"


def _precision_text(precision: object) -> str:
    if isinstance(precision, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in precision.items()) or "-"
    return str(precision)


def machine_markdown(facts: Mapping[str, Any]) -> str:
    """Markdown header lines of :func:`machine_facts`: machine, precision, start, load."""
    from m3kit.machine import MachineInfo

    known = {f.name for f in dataclasses.fields(MachineInfo)}
    machine = MachineInfo.from_dict({k: v for k, v in facts.items() if k in known})
    lines = [machine.markdown(), f"- Precision: {_precision_text(facts.get('precision', '-'))}"]
    if "started_utc" in facts:
        lines.append(f"- Started: {facts['started_utc']}")
    if facts.get("load_average_at_start") is not None:
        lines.append(load_line(facts["load_average_at_start"], machine.logical_cpus))
    return "\n".join(lines)


# -- rounds -----------------------------------------------------------------------------------
def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` in round ``round_index``'s order: rotated left by the round number.

    Over ``len(items)`` rounds every item runs once in every position.

    >>> [rotated("abc", r) for r in range(4)]
    [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b'], ['a', 'b', 'c']]
    """
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of ``values`` (and how many), rounded to ``digits``.

    >>> spread([1.0, 3.0, 2.0, 10.0])
    {'median': 2.5, 'min': 1.0, 'max': 10.0, 'rounds': 4}
    """
    if not values:
        raise ValueError("spread of no values")
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "rounds": len(values),
    }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-round ratios ``numerators[i] / denominators[i]``.

    >>> ratios([2.0, 3.0], [1.0, 2.0])
    [2.0, 1.5]
    """
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def spread_text(s: Mapping[str, Any], unit: str = "x") -> str:
    """``1.04x (0.98-1.10)``: median with min-max in parentheses.

    >>> spread_text({"median": 1.04, "min": 0.98, "max": 1.1, "rounds": 3})
    '1.04x (0.98-1.10)'
    """
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}-{s['max']:.2f})"


# -- which model ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_digest(folder: str | Path) -> dict[str, Any]:
    """sha256 of each weight file in ``folder`` (top level) and one over all of them.

    The combined digest hashes ``name:sha256`` lines in name order, so it changes when any
    weight file (backbone or head) changes, is added or removed.
    """
    root = Path(folder)
    files = {
        p.name: _sha256(p)
        for p in sorted(root.iterdir())
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    }
    if not files:
        raise ValueError(f"{root} holds no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    combined = hashlib.sha256("".join(f"{n}:{d}\n" for n, d in files.items()).encode())
    return {"sha256": combined.hexdigest(), "files": files}


# -- what a checkpoint was trained on ---------------------------------------------------------
#: File in a checkpoint a benchmark trained, naming the articles it was trained on.
SPLIT_FILE = "training_split.json"


def training_record(model: str | Path) -> dict[str, Any] | None:
    """What :func:`record_training` wrote into ``model`` (None: a checkpoint without it)."""
    path = Path(model) / SPLIT_FILE
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def model_provenance(model: str | Path) -> str:
    """How a results file describes ``model``: the script that trained it, from its
    :data:`SPLIT_FILE`, else that it carries no such record (the results files called any
    checkpoint given "MiniLM fine-tuned into three heads by quality_model.py")."""
    record = training_record(model)
    if record is None:
        return "a checkpoint these benchmarks did not train (no training_split.json)"
    return f"trained by `{record['by']}` on {len(record['train_articles'])} articles"


def record_training(
    model: str | Path,
    *,
    by: str,
    data: str | Path,
    train_articles: Iterable[str],
    held_out_articles: Iterable[str] = (),
    seed: int | None = None,
    start: str | Path | None = None,
) -> Path:
    """Write the articles ``model`` was trained on into it (:data:`SPLIT_FILE`).

    Args:
        model: The checkpoint folder a benchmark trained.
        by: The script that trained it (named when a benchmark refuses it).
        data: The data folder its training rows came from.
        train_articles: The articles whose rows it was trained on.
        held_out_articles: The articles the script left out of training for evaluation.
        seed: The :func:`m3kit.finetune.splits.split_by_article` seed of the split, if any.
        start: The checkpoint training started from: the articles its own :data:`SPLIT_FILE`
            names were trained on too, so they are added (a model trained further from a
            fine-tuned start is refused on its start's training articles as well).

    Returns:
        The file written.
    """
    start_record = training_record(start) if start is not None else None
    inherited = list(start_record["train_articles"]) if start_record else []
    trained = sorted({*train_articles, *inherited})
    trained_set = set(trained)
    record = {
        "by": by,
        "data": str(Path(data).resolve()),
        "seed": seed,
        "train_articles": trained,
        "held_out_articles": [a for a in held_out_articles if a not in trained_set],
        **({"start": str(start), "start_train_articles": inherited} if start_record else {}),
    }
    path = Path(model) / SPLIT_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def check_not_trained_on(
    model: str | Path,
    eval_articles: Sequence[str],
    *,
    hint: str | None = None,
    role: str = "evaluation",
) -> None:
    """Exit when ``model`` was trained on one of ``eval_articles``.

    Reads what :func:`record_training` wrote; a checkpoint without it (not trained by a
    benchmark) is not checked. Articles compare by id, wherever the data folder sits (a copy
    of squad_en, its long documents, or its sample in ``tests/data`` name the same articles).

    Args:
        model: The checkpoint to be scored.
        eval_articles: The articles it is to be scored on.
        hint: What to do instead (default: evaluate with the seed of the split it was
            trained on, when it has one).
        role: What the articles are for, in the message (``"validation"``: calibration).

    Raises:
        SystemExit: Naming the articles, how the model was trained and ``hint``.
    """
    record = training_record(model)
    if record is None:
        return
    trained = sorted(set(record["train_articles"]) & set(eval_articles))
    if not trained:
        return
    seed = record.get("seed")
    named = ", ".join(trained[:8]) + (", ..." if len(trained) > 8 else "")
    how = f"{record.get('by', 'quality_model.py')} trained it on articles of {record['data']}"
    if seed is not None:
        how += f" split with --seed {seed}"
        hint = hint or f"evaluate with --seed {seed}"
    raise SystemExit(
        f"error: {model} was trained on {len(trained)} of the {len(eval_articles)} {role} "
        f"articles ({named}): {how}" + (f"; {hint}" if hint else "")
    )
