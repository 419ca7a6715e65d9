"""The finetune CLI subcommands (``mine-negatives``, ``finetune``, ``eval``, ``calibrate``) end
to end on the tiny checkpoint (the LlamaIndex engine: test_llamaindex_engine.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.finetune import TrainingExample, read_jsonl, write_jsonl
from m3kit.outputs import ALL_HEADS
from m3kit.store import FusionCalibration, M3Index
from m3kit.testing import SAMPLE_TEXTS
from tests.finetune.beir_folders import numbered, write_beir
from tests.finetune.cli_runs import run_cli


def test_cli_mine_finetune_eval(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    capsys: pytest.CaptureFixture[str],
) -> None:
    train = write_jsonl(
        [TrainingExample(ex.query, ex.pos) for ex in toy_examples], tmp_path / "t.jsonl"
    )
    mined = tmp_path / "mined.jsonl.gz"
    assert (
        run_cli(
            [
                "mine-negatives",
                "--model",
                str(tiny_m3_path),
                "--train",
                str(train),
                "--output",
                str(mined),
                "--negatives",
                "2",
                "--range",
                "0-6",
            ]
        )
        == 0
    )
    rows = read_jsonl(mined)
    assert len(rows) == 12 and all(len(r.neg) == 2 and not set(r.neg) & set(r.pos) for r in rows)

    out = tmp_path / "model"
    assert (
        run_cli(
            [
                "finetune",
                "--model",
                str(tiny_m3_path),
                "--train",
                str(mined),
                "--output",
                str(out),
                "--max-steps",
                "1",
                "--batch-size",
                "4",
                "--passage-max-length",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    assert "1 step(s)" in capsys.readouterr().out
    assert M3Encoder.from_pretrained(out).available_heads == ALL_HEADS

    passages = sorted({t for ex in toy_examples for t in ex.pos})
    ids = {t: f"d{i}" for i, t in enumerate(passages)}
    data = write_beir(
        tmp_path / "beir",
        {ids[t]: t for t in passages},
        numbered("q", [ex.query for ex in toy_examples]),
        "".join(f"q{i}\t{ids[ex.pos[0]]}\t1\n" for i, ex in enumerate(toy_examples)),
        titles=True,
    )
    report = tmp_path / "report"
    assert (
        run_cli(
            [
                "eval",
                "--model",
                str(out),
                "--baseline",
                str(tiny_m3_path),
                "--data",
                str(data),
                "--output",
                str(report),
                "--max-queries",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| baseline | dense |" in printed and "| model | fused |" in printed
    meta = json.loads((report / "report.json").read_text())["meta"]
    assert meta["queries"] == 8
    # the saved report names what it measured: models, each fused row's weights and source,
    # the settings (two runs differing in all of them wrote the same meta)
    assert meta["models"] == {"baseline": str(tiny_m3_path.resolve()), "model": str(out.resolve())}
    assert meta["data"] == str(data.resolve()) and meta["max_queries"] == 8
    assert set(meta["fused"]) == {"baseline", "model"}
    assert all(len(f["weights"]) == 3 and f["source"] for f in meta["fused"].values())
    assert "model fused [" in (report / "report.md").read_text()

    # calibrate the fine-tuned checkpoint's fusion on the BEIR folder; searches then use it
    assert (
        run_cli(["calibrate", "--model", str(out), "--data", str(data), "--grid-step", "0.5"]) == 0
    )
    printed = capsys.readouterr().out
    assert "all heads: " in printed and "dense+sparse: " in printed
    saved = FusionCalibration.load(out)
    assert saved is not None and saved.queries == len(toy_examples)
    assert saved.encoder_identity is not None  # measured on the checkpoint as it loads
    with M3Index.open(M3Encoder.from_pretrained(out), ":memory:") as index:
        assert index.calibration == saved and index.search_settings() == saved.all_heads
        assert index.search_source == "calibrated"
    # finetune --validation calibrates right after training (new weights: a new calibration)
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(mined), "--output", str(out)]
    argv += ["--max-steps", "1", "--batch-size", "4", "--validation", str(data), "--quiet"]
    assert run_cli(argv) == 0
    again = FusionCalibration.load(out)
    assert again is not None and again.weights_digest != saved.weights_digest
    assert "saved to" in capsys.readouterr().out
    with M3Index.open(M3Encoder.from_pretrained(out), ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", again)


def test_cli_bad_input_is_an_error(tiny_m3_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2", "pos": []}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: row has no positive"):
        run_cli(
            [
                "finetune",
                "--model",
                str(tiny_m3_path),
                "--train",
                str(bad),
                "--output",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(ValueError, match="--range must look like"):
        run_cli(
            [
                "mine-negatives",
                "--model",
                str(tiny_m3_path),
                "--train",
                str(bad),
                "--output",
                str(tmp_path / "m.jsonl"),
                "--range",
                "ten",
            ]
        )


def test_cli_outputs_in_the_way_are_refused_before_any_model_loads(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval --output FILE`` and ``mine-negatives --output DIR`` failed with a bare
    ``File exists`` / ``Is a directory`` once every model had encoded the data."""
    import m3kit.encoder

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model loaded before the output was checked")

    monkeypatch.setattr(m3kit.encoder.M3Encoder, "from_pretrained", no_model)
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"query": "q", "pos": ["p"]}\n')
    mine = ["mine-negatives", "--model", str(tiny_m3_path), "--train", str(rows), "--output"]
    with pytest.raises(ValueError, match=r"--output .*: a folder is there"):
        run_cli([*mine, str(tmp_path)])
    with pytest.raises(ValueError, match=r"--output .*afile is a file, not a folder"):
        run_cli([*mine, str(a_file / "m.jsonl")])
    data = write_beir(tmp_path / "beir", {"d1": "a passage"}, {"q1": "a query"}, "q1\td1\t1\n")
    evaluate = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output"]
    with pytest.raises(ValueError, match=r"--output .*afile: a file is there"):
        run_cli([*evaluate, str(a_file)])
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("command", ["eval", "calibrate"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_max_queries_must_be_positive(
    command: str, value: str, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-queries 0`` failed after loading with "none of the queries given has a relevant
    passage (query ids such as None)" (eval) or "needs a non-empty corpus and queries"
    (calibrate), and ``-3`` with Python's "Sample larger than population or is negative":
    none named the flag. It is a usage error naming it now."""
    data = Path(__file__).resolve().parents[1] / "data" / "squad_en"
    argv = [command, "--model", str(tiny_m3_path), "--data", str(data), "--max-queries", value]
    with pytest.raises(SystemExit) as exc:
        run_cli(argv)
    assert exc.value.code == 2
    assert f"argument --max-queries: {value} must be" in capsys.readouterr().err


def test_cli_mining_recognises_a_titled_corpus_passage(tiny_m3_path: Path, tmp_path: Path) -> None:
    """--corpus rows {"title", "text"} were compared with the rows' positives as title + text:
    a text-only positive was mined as a negative."""
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    rows = [TrainingExample("Where does the Rhine flow?", (texts[0],))]
    train = write_jsonl(rows, tmp_path / "t.jsonl")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"title": "T", "text": t}) + "\n" for t in texts))
    mined = tmp_path / "mined.jsonl"
    argv = ["mine-negatives", "--model", str(tiny_m3_path), "--train", str(train)]
    assert run_cli([*argv, "--corpus", str(corpus), "--output", str(mined), "--range", "0-5"]) == 0
    assert set(read_jsonl(mined)[0].neg) == {"T Oxygen has atomic number 8.", "T Warsaw."}


def test_cli_reads_the_named_qrels_split(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A BEIR folder with qrels/dev.tsv and qrels/test.tsv was silently read as test."""
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    corpus, queries = numbered("d", texts), numbered("q", [t[:12] for t in texts])
    data = write_beir(tmp_path / "beir", corpus, queries, "q0\td0\t1\nq1\td1\t1\n", split="test")
    (data / "qrels" / "dev.tsv").write_text("q2\td2\t1\n")
    model = tmp_path / "model"
    shutil.copytree(tiny_m3_path, model)
    finetune = ["finetune", "--model", str(model), "--output", str(tmp_path / "o")]
    finetune += ["--train", str(tmp_path / "unread.jsonl"), "--validation", str(data)]
    for argv in (  # finetune reads --validation first: it fails before the training rows
        ["calibrate", "--model", str(model), "--data", str(data)],
        ["eval", "--model", str(model), "--data", str(data)],
        finetune,
    ):
        with pytest.raises(ValueError, match=r"several splits \(dev, test\)"):
            run_cli([*argv, "--quiet"])
    report = tmp_path / "report"
    argv = ["eval", "--model", str(model), "--data", str(data), "--split", "test", "--quiet"]
    assert run_cli([*argv, "--output", str(report)]) == 0
    assert json.loads((report / "report.json").read_text())["model"]["dense"]["queries"] == 2
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--split", "dev"]
    assert run_cli([*argv, "--grid-step", "0.5", "--quiet"]) == 0
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.queries == 1
    capsys.readouterr()
    with pytest.raises(SystemExit):  # refused by the parser, before the model loads
        run_cli([*argv, "--alpha", "0", "--quiet"])
    assert "a p-value threshold in (0, 1], got 0" in capsys.readouterr().err


def test_cli_max_queries_samples_queries_it_can_score(tmp_path: Path) -> None:
    """``--max-queries N`` drew its sample from every query with judgements, grade-0-only ones
    included, which no metric averages: with 3 of 6 queries judged relevant, ``--max-queries
    2`` averaged 1 query for some seeds or failed with "no query has a relevant passage" for
    others. It draws from the queries with a relevant passage now."""
    from m3kit.finetune.cli_eval import read_beir

    data = write_beir(
        tmp_path / "beir",
        numbered("d", [f"text {i}" for i in range(6)]),
        numbered("q", [f"query {i}" for i in range(6)]),
        "".join(f"q{i}\td{i}\t{int(i < 3)}\n" for i in range(6)),
        split="dev",
    )
    drawn = set()
    for seed in range(10):
        _, queries, qrels = read_beir(data, None, 2, seed)
        assert sorted(queries) == sorted(qrels), seed
        assert len(queries) == 2 and set(queries) <= {"q0", "q1", "q2"}, (seed, queries)
        drawn |= set(queries)
    assert drawn == {"q0", "q1", "q2"}  # a draw, not the first two


def test_cli_mine_negatives_quiet_turns_the_encoding_bars_off(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--quiet`` reached nothing in mine-negatives: the encoder's own bars still printed."""
    from m3kit.encoder import M3Encoder

    train = write_jsonl(
        [TrainingExample(ex.query, ex.pos) for ex in toy_examples], tmp_path / "t.jsonl"
    )
    seen: list[object] = []
    encode = M3Encoder.encode

    def spy(self: M3Encoder, *args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("show_progress"))
        return encode(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Encoder, "encode", spy)
    argv = ["mine-negatives", "--model", str(tiny_m3_path), "--train", str(train)]
    argv += ["--output", str(tmp_path / "m.jsonl"), "--negatives", "1", "--range", "0-6"]
    assert run_cli([*argv, "--quiet"]) == 0
    assert seen == [False, False]
    seen.clear()
    assert run_cli(argv) == 0
    assert seen == [None, None]  # the encoder's default: a bar for more than one batch


def test_cli_mine_negatives_loads_the_model_as_told(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mine-negatives loaded the model with every default (the checkpoint's full length,
    auto precision, the default device): no flag set how the corpus was encoded."""
    from m3kit.encoder import M3Encoder

    train = write_jsonl(
        [TrainingExample(ex.query, ex.pos) for ex in toy_examples], tmp_path / "t.jsonl"
    )
    loaded: list[dict[str, object]] = []
    load = M3Encoder.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type[M3Encoder], path: object, **options: object) -> M3Encoder:
        loaded.append(options)
        return load(cls, path, **options)  # type: ignore[no-any-return]

    monkeypatch.setattr(M3Encoder, "from_pretrained", classmethod(spy))
    argv = ["mine-negatives", "--model", str(tiny_m3_path), "--train", str(train), "--quiet"]
    argv += ["--output", str(tmp_path / "m.jsonl"), "--negatives", "1", "--range", "0-6"]
    flags = ["--device", "cpu", "--dtype", "fp32", "--max-length", "16", "--batch-size", "2"]
    flags += ["--max-batch-tokens", "64", "--query-instruction", "q: "]
    assert run_cli([*argv, *flags]) == 0
    assert loaded == [
        {
            "device": "cpu",
            "dtype": "fp32",
            "max_length": 16,
            "batch_size": 2,
            "max_batch_tokens": 64,
            "query_instruction": "q: ",
        }
    ]
    with pytest.raises(ValueError, match="not a device"):
        run_cli([*argv, "--device", "gpu0"])


def test_finetune_qa_json_trains_every_query_and_relevant_doc(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--qa-json`` made one row per query, each step drawing one of its relevant docs: a
    query's other docs were never a positive in an epoch (half the pairs of this file), while
    ``M3FinetuneEngine`` trains every pair from the same file."""
    from m3kit.finetune import QADataset

    docs = {f"d{i}": text for i, text in enumerate(SAMPLE_TEXTS[:6])}
    queries = {"q0": "Where is the river?", "q1": "What grows there?", "q2": "Who lives there?"}
    relevant = {"q0": ["d0", "d1"], "q1": ["d2", "d3"], "q2": ["d4", "d5"]}
    qa = QADataset(queries=queries, corpus=docs, relevant_docs=relevant)
    path = qa.save_json(tmp_path / "qa.json")
    argv = ["finetune", "--model", str(tiny_m3_path), "--qa-json", str(path)]
    argv += ["--output", str(tmp_path / "ft"), "--max-steps", "1", "--batch-size", "2"]
    assert run_cli([*argv, "--quiet"]) == 0
    assert "on 6 example(s)" in capsys.readouterr().out
