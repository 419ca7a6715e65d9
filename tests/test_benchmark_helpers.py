"""The pure helpers every benchmark shares (``benchmarks/_bench.py``).

Benchmarks are scripts, not a package: the module is loaded from its file. The benchmarks
folder is not in the sdist, so these tests skip there.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py"
pytestmark = pytest.mark.skipif(not BENCH.is_file(), reason="benchmarks/ not shipped here")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("m3kit_bench_helpers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_doctests(bench: ModuleType) -> None:
    result = doctest.testmod(bench, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_rotation_puts_every_variant_in_every_position(bench: ModuleType) -> None:
    items = ["naive", "late a", "late b"]
    orders = [bench.rotated(items, r) for r in range(len(items))]
    for position in range(len(items)):
        assert sorted(order[position] for order in orders) == sorted(items)
    assert all(sorted(order) == sorted(items) for order in orders)
    assert bench.rotated(["m3kit", "llamaindex"], 1) == ["llamaindex", "m3kit"]
    assert bench.rotated([], 3) == []


def test_spread_and_ratios(bench: ModuleType) -> None:
    per_round = bench.ratios([1.1, 0.9, 1.0], [1.0, 1.0, 1.0])
    s = bench.spread(per_round)
    assert s == {"median": 1.0, "min": 0.9, "max": 1.1, "rounds": 3}
    assert bench.spread_text(s) == "1.00x (0.90-1.10)"
    with pytest.raises(ValueError):
        bench.spread([])


def test_default_output_is_a_new_stamped_name(bench: ModuleType, tmp_path: Path) -> None:
    stem = bench.output_stem(None, "store", folder=tmp_path, when=86400.0)
    assert stem == tmp_path / "store_19700102T000000Z"
    assert bench.output_stem(tmp_path, "store", when=0.0) == tmp_path / "store_19700101T000000Z"
    assert bench.output_stem(tmp_path / "x.json", "store") == tmp_path / "x"
    assert bench.with_ext(tmp_path / "a.b", ".md") == tmp_path / "a.b.md"


def test_refuse_existing_names_the_file(bench: ModuleType, tmp_path: Path) -> None:
    fresh, taken = tmp_path / "new.json", tmp_path / "old.json"
    taken.write_text("{}", encoding="utf-8")
    bench.refuse_existing([fresh])
    with pytest.raises(SystemExit, match="old.json exists"):
        bench.refuse_existing([fresh, taken])


def test_machine_facts_carry_cpu_versions_precision_and_load(bench: ModuleType) -> None:
    start = bench.RunStart(started_utc="2026-01-01T00:00:00Z", load_average=(3.0, 2.0, 1.0))
    facts = bench.machine_facts(start, {"minilm": "fp32"})
    for key in ("cpu_model", "cpu_flags", "torch_version", "transformers_version", "torch_threads"):
        assert key in facts
    assert facts["precision"] == {"minilm": "fp32"}
    assert facts["load_average_at_start"] == [3.0, 2.0, 1.0]
    json.dumps(facts)  # JSON-ready
    md = bench.machine_markdown({**facts, "logical_cpus": 2})
    assert "Precision: minilm: fp32" in md and "Load average at start: 3 / 2 / 1" in md
    assert "indicative only" in md  # load 3 on 2 CPUs
    assert "CPU flags" in md


def test_checkpoint_digest_follows_every_weight_file(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"backbone")
    (tmp_path / "colbert_linear.pt").write_bytes(b"head")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    first = bench.checkpoint_digest(tmp_path)
    assert set(first["files"]) == {"model.safetensors", "colbert_linear.pt"}
    (tmp_path / "colbert_linear.pt").write_bytes(b"other head")
    assert bench.checkpoint_digest(tmp_path)["sha256"] != first["sha256"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no weight file"):
        bench.checkpoint_digest(empty)


def _script(name: str) -> ModuleType:
    """A benchmark script loaded from its file (its ``_bench`` imports resolve beside it)."""
    folder = str(BENCH.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(
        f"m3kit_bench_{name}", BENCH.parent / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_late_chunking_cost_times_the_split_in_naive_too(
    tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit import M3Encoder
    from m3kit.late_chunking import LateChunker

    cost = _script("late_chunking_cost")
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    chunker = LateChunker(encoder, chunk_size=8)
    docs = ["The Rhine rises in the Alps. It flows north to the sea. " * 3, "Oxygen is a gas. " * 5]
    expected = chunker.spans(docs)
    cuts: list[int] = []
    original = LateChunker.spans

    def counted(self: LateChunker, texts: list[str]) -> list[list[tuple[int, int]]]:
        cuts.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(LateChunker, "spans", counted)
    out = cost.naive_run(encoder, chunker, docs)()
    # the timed call cuts the documents itself, as LateChunker.chunk does for the late variants
    assert cuts == [len(docs)]
    assert out.dense.shape[0] == sum(len(s) for s in expected)


def test_encode_reports_the_threads_its_workers_ran_with(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    encode = _script("encode")
    passages = tmp_path / "passages.json"
    passages.write_text(json.dumps(["one short passage", "another one"]), encoding="utf-8")
    worker = encode.Worker("m3kit-fp32", tiny_m3_path, passages, tmp_path / "w.log", "0,0 1")
    try:
        assert worker.ready["torch_threads"] == 1  # --threads 1, set in the worker's process
    finally:
        worker.close()
    results = [{"model": "tiny", "rows": [{"config": "m3kit-fp32", "torch_threads": 1}]}]
    threads = encode.worker_threads(results)
    facts = encode.with_worker_threads({"cpu_model": "x", "torch_threads": 16}, threads)
    assert threads == 1 and facts["torch_threads"] == 1  # the workers', not the parent's 16
    mixed = [
        {
            "model": "m",
            "rows": [{"config": "a", "torch_threads": 1}, {"config": "b", "torch_threads": 2}],
        }
    ]
    assert encode.worker_threads(mixed) == {"m a": 1, "m b": 2}


SAMPLE = Path(__file__).resolve().parent / "data" / "squad_en"


def test_quality_benchmarks_refuse_a_model_trained_on_their_evaluation_articles(
    tmp_path: Path,
) -> None:
    quality = _script("_quality_data")
    from m3kit.finetune.splits import split_by_article

    # quality_model.py --seed 1 writes the articles it trained on into its checkpoint
    quality.record_split(tmp_path, str(SAMPLE), 1, split_by_article(SAMPLE, seed=1))
    # quality_paths.py / rerank.py with their default --seed 0 would score it on some of them
    with pytest.raises(SystemExit, match=r"trained on \d+ of the 4 evaluation articles.*--seed 1"):
        quality.held_out(str(SAMPLE), seed=0, eval_queries=None, model=str(tmp_path))
    split = quality.held_out(str(SAMPLE), seed=1, eval_queries=10, model=str(tmp_path))
    assert len(split.queries) == 10
    other = tmp_path / "not_from_quality_model"
    other.mkdir()
    assert quality.held_out(str(SAMPLE), seed=0, eval_queries=None, model=str(other)).queries


def test_late_chunking_cost_results_say_the_command_that_made_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = _script("late_chunking_cost")
    corpus = tmp_path / "corpus.jsonl"
    text = " ".join(f"Sentence {i} is about the Rhine and the towns along it." for i in range(40))
    corpus.write_text(json.dumps({"_id": "a01", "text": text}) + "\n", encoding="utf-8")
    monkeypatch.setattr(cost, "DATA", corpus)
    out = tmp_path / "cost run"
    argv = ["--count-only", "--docs", "1", "--chunk-size", "32", "--windows", "128"]
    cost.main([*argv, "--out", str(out)])
    expected = f"python benchmarks/late_chunking_cost.py {' '.join(argv)} --out '{out}'"
    record = json.loads(bench_with_ext(out, ".json").read_text(encoding="utf-8"))
    assert record["meta"]["command"] == expected
    assert f"Command: `{expected}`" in bench_with_ext(out, ".md").read_text(encoding="utf-8")


def bench_with_ext(stem: Path, ext: str) -> Path:
    return stem.parent / f"{stem.name}{ext}"
