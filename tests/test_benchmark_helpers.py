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

from tests.bench_scripts import BENCH
from tests.bench_scripts import load_script as _script
from tests.bench_scripts import single_passage_data as _single_passage_data

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


#: The other benchmark modules that hold a ``>>>`` example (only ``_bench.py``'s ran: the
#: examples of ``_quality_data.is_chinese`` and ``late_chunking_cost.estimated_flops`` never did).
EXAMPLES = sorted(
    path.stem
    for path in BENCH.parent.glob("*.py")
    if path != BENCH and ">>> " in path.read_text(encoding="utf-8")
)


def test_every_benchmark_with_examples_is_found() -> None:
    assert {"_quality_data", "late_chunking_cost"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_benchmark_doctests(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # they import ``_bench`` by name
    spec = importlib.util.spec_from_file_location(
        f"m3kit_bench_{name}", BENCH.parent / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
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


# -- checkpoints a benchmark trained are never scored on their training articles ---------------
def _longdoc(folder: Path, articles: list[str]) -> Path:
    """late_chunking.py's long-document layout for ``articles``: two paragraphs, one question."""
    folder.mkdir(parents=True)
    corpus, queries = [], []
    for a in articles:
        first, second = f"The first part of {a} is about a river.", f"Then {a} names a town."
        corpus.append({"_id": a, "title": a, "text": f"{first}\n\n{second}"})
        queries.append(
            {
                "_id": f"{a}-q",
                "text": f"What is {a} about?",
                "doc_id": a,
                "answer": "a river",
                "answer_start": first.index("a river"),
                "answer_end": first.index("a river") + len("a river"),
                "paragraph_start": 0,
                "paragraph_end": len(first),
            }
        )
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / name).write_text(lines, encoding="utf-8")
    return folder


def _sample_ids() -> list[str]:
    return [str(a["_id"]) for a in json.loads((SAMPLE / "articles.json").read_text("utf-8"))]


def test_late_chunking_refuses_a_checkpoint_trained_on_its_evaluation_articles(
    tmp_path: Path,
) -> None:
    from m3kit.finetune.splits import split_by_article

    late = _script("late_chunking")
    quality = _script("_quality_data")
    ids = _sample_ids()
    longdoc = _longdoc(tmp_path / "longdoc", ids)
    # quality_model.py (or finetune.py) with seed 0: half the articles, chosen by the seed
    split = split_by_article(SAMPLE, seed=0)
    model = tmp_path / "quality model"
    model.mkdir()
    quality.record_split(model, str(SAMPLE), 0, split)
    heldout = late.split_ids(ids, "heldout")
    leaked = sorted(set(heldout) & set(split.train_articles))
    assert leaked  # --split heldout holds some of the seed's training articles
    argv = ["--split", "heldout", "--models", f"ckpt:ft={model}", "--data", str(longdoc)]
    with pytest.raises(
        SystemExit,
        match=rf"trained on {len(leaked)} of the {len(heldout)} evaluation articles "
        rf"\({', '.join(leaked)}\): quality_model.py .*--seed 0",
    ):
        late.main([*argv, "--out", str(tmp_path / "late.json")])
    assert not (tmp_path / "late.json").exists()
    # a checkpoint trained on the dev articles only (span_finetune.py's) passes on heldout
    dev_model = tmp_path / "dev model"
    dev_model.mkdir()
    bench = _script("_bench")
    dev = late.split_ids(ids, "dev")
    bench.record_training(dev_model, by="span_finetune.py", data=SAMPLE, train_articles=dev)
    late.refuse_trained_checkpoints([f"ckpt:span={dev_model}", "minilm"], heldout)
    with pytest.raises(SystemExit, match=rf"{len(dev)} of the {len(dev)} evaluation articles"):
        late.refuse_trained_checkpoints([f"ckpt:span={dev_model}"], dev)


def _span_data(tmp_path: Path) -> Path:
    """The squad_en sample with a long-document folder of its articles (span_finetune.py)."""
    data = tmp_path / "squad_en"
    data.mkdir()
    for name in ("train.jsonl.gz", "train_ids.jsonl"):
        (data / name).write_bytes((SAMPLE / name).read_bytes())
    _longdoc(data / "longdoc", _sample_ids())
    return data


def test_span_finetune_refuses_a_start_trained_on_the_heldout_articles(tmp_path: Path) -> None:
    from m3kit.finetune.splits import split_by_article

    span = _script("span_finetune")
    data = _span_data(tmp_path)
    start = tmp_path / "finetuned start"
    start.mkdir()
    _script("_quality_data").record_split(start, str(SAMPLE), 0, split_by_article(SAMPLE, seed=0))
    heldout = set(span.late_chunking.split_ids(_sample_ids(), "heldout"))
    leaked = sorted(heldout & set(split_by_article(SAMPLE, seed=0).train_articles))
    with pytest.raises(SystemExit, match=rf"{start} was trained on .*\({', '.join(leaked)}\)"):
        span.main(["--data", str(data), "--start", str(start), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # refused before any training


def test_span_finetune_checkpoints_name_their_training_articles_and_their_starts(
    tmp_path: Path, tiny_m3_path: Path
) -> None:
    import shutil

    span = _script("span_finetune")
    bench = _script("_bench")
    data = _span_data(tmp_path)
    ids = _sample_ids()
    dev = span.late_chunking.split_ids(ids, "dev")
    start = tmp_path / "start"
    shutil.copytree(tiny_m3_path, start)
    # a start fine-tuned on one dev article (e.g. by an earlier span_finetune.py run)
    bench.record_training(start, by="span_finetune.py", data=data, train_articles=dev[:1])
    out = tmp_path / "out"
    argv = ["--data", str(data), "--start", str(start), "--out", str(out), "--no-eval"]
    span.main([*argv, "--rows", "2", "--max-steps", "1", "--batch-size", "2"])
    for name in ("plain", "span"):
        record = bench.training_record(out / name)
        assert record is not None, f"{name} has no {bench.SPLIT_FILE}"
        assert record["by"] == "span_finetune.py" and record["train_articles"] == dev
        assert record["start_train_articles"] == dev[:1]
    heldout = span.late_chunking.split_ids(ids, "heldout")
    span.late_chunking.refuse_trained_checkpoints([f"ckpt:span={out / 'span'}"], heldout)
    with pytest.raises(SystemExit, match=f"{out / 'span'} was trained on"):
        span.late_chunking.refuse_trained_checkpoints([f"ckpt:span={out / 'span'}"], dev)


def test_index_memory_runs_both_settings_and_reports_them(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """``benchmarks/index_memory.py`` runs ``m3kit index`` with and without
    ``--no-keep-freed-memory``, alternating, and writes each run with the machine facts."""
    index_memory = _script("index_memory")
    rows = tmp_path / "docs.jsonl"
    texts = ["The Rhine rises in the Alps. It flows north.", "Oxygen is a gas.", "Not read."]
    rows.write_text(
        "".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    stem = tmp_path / "out" / "im"
    stem.parent.mkdir()
    argv = ["--model", str(tiny_m3_path), "--data", str(rows), "--docs", "2", "--repeats", "2"]
    argv += ["--dtype", "fp32", "--no-late-chunking", "--results", str(stem)]
    assert index_memory.main(argv) == 0
    record = json.loads((tmp_path / "out" / "im.json").read_text(encoding="utf-8"))
    settings = [(r["round"], r["setting"]) for r in record["runs"]]
    assert settings == [(1, "kept"), (1, "unmapped"), (2, "unmapped"), (2, "kept")]
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 0 for r in record["runs"])
    assert record["documents"] == 2 and record["time_ratio_kept_over_unmapped"]["rounds"] == 2
    assert record["machine"]["cpu_model"]
    report = (tmp_path / "out" / "im.md").read_text(encoding="utf-8")
    assert "kept / unmapped wall time" in report and "| 2 | kept |" in report
    with pytest.raises(SystemExit, match="exists"):
        index_memory.main(argv)  # a result is never written over


def test_index_memory_eval_runs_m3kit_eval_with_both_settings(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """``--eval BEIR`` times ``m3kit eval`` instead of ``m3kit index``; index-only flags with it
    are an error rather than silently unused."""
    index_memory = _script("index_memory")
    data = tmp_path / "beir"
    data.mkdir()
    texts = ["The Rhine rises in the Alps.", "Oxygen is a gas.", "Warsaw is a city."]
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t[:10]}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    (data / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    stem = tmp_path / "out" / "ev"
    stem.parent.mkdir()
    argv = ["--model", str(tiny_m3_path), "--eval", str(data), "--repeats", "1"]
    with pytest.raises(SystemExit, match="not eval's"):
        index_memory.main([*argv, "--dtype", "fp32", "--results", str(stem)])
    assert index_memory.main([*argv, "--max-queries", "2", "--results", str(stem)]) == 0
    record = json.loads((tmp_path / "out" / "ev.json").read_text(encoding="utf-8"))
    assert record["subcommand"] == "eval" and record["documents"] == 3
    assert [r["setting"] for r in record["runs"]] == ["kept", "unmapped"]
    assert "`m3kit eval` with kept vs unmapped" in (tmp_path / "out" / "ev.md").read_text()


def test_benchmarks_refuse_what_would_fail_or_overwrite_before_any_work(tmp_path: Path) -> None:
    """Found by running them: ``flagembedding_probe.py`` wrote over a committed result;
    ``finetune.py`` found LlamaIndex's venv missing only after m3kit had trained (a raw
    ``FileNotFoundError``); ``quality_paths.py --paths torch_int8`` failed as a TypeError
    (``torch-int4`` after the reference path ran); ``store.py --queries 0`` and the like
    crashed deep in the run or wrote a table of zeros."""
    stem = tmp_path / "probe"
    (tmp_path / "probe.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit, match="probe.json exists"):
        _script("flagembedding_probe").main(["--sizes", "2", "--results", str(stem)])
    assert (tmp_path / "probe.json").read_text(encoding="utf-8") == "{}"
    out = tmp_path / "ft"
    with pytest.raises(SystemExit, match="--bench-python /no/python is not an executable"):
        data = str(_single_passage_data(tmp_path / "data"))  # (checked after the data)
        _script("finetune").main(
            ["--data", data, "--out", str(out), "--bench-python", "/no/python"]
        )
    assert not out.exists()
    for item in ("torch_int8", "torch-int4", "jax-fp32"):
        with pytest.raises(SystemExit, match=rf"--paths item '{item}' is not BACKEND-DTYPE"):
            _script("quality_paths").main(["--model", "x", "--paths", "torch-fp32", item])
    with pytest.raises(SystemExit):  # argparse: "--queries: must be >= 1, got 0"
        _script("store").main(["--queries", "0"])


def test_finetune_sweep_markdown_names_each_runs_machine_and_rows(tmp_path: Path) -> None:
    """``finetune_sweep.md`` had no CPU line (every result must name its CPU and flags) and
    said "same 1,000 training rows" whatever ``--rows`` was."""
    sweep = _script("finetune_sweep")
    facts = _script("_bench").machine_facts(_script("_bench").RunStart.now(), "fp32")
    row = {
        "name": "r",
        "base": "bench",
        "overrides": {},
        "ndcg@10": {"dense": 0.5},
        "train_rows": 16,
        "machine": facts,
    }
    log = tmp_path / "sweep.jsonl"
    log.write_text(json.dumps(row) + "\n", encoding="utf-8")
    sweep._write_markdown(log)
    text = (tmp_path / "sweep.md").read_text(encoding="utf-8")
    assert "| r | squad_en seed 0 | 16 | bench |" in text and text.rstrip().count("| M1 |") == 1
    assert f"- Machine: {facts['cpu_model']}" in text and "- CPU flags" in text
    assert "1,000" not in text


def test_results_describe_the_model_they_scored(bench: ModuleType, tmp_path: Path) -> None:
    # quality_paths.md / rerank.md called any checkpoint given "MiniLM fine-tuned into three
    # heads by quality_model.py"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "did not train" in bench.model_provenance(plain)
    bench.record_training(plain, by="quality_model.py", data=tmp_path, train_articles=["a", "b"])
    assert bench.model_provenance(plain) == "trained by `quality_model.py` on 2 articles"
