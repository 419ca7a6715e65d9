"""The finetune CLI subcommands and the LlamaIndex engine, end to end on the tiny checkpoint."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from m3kit import M3Encoder
from m3kit.finetune import TrainingExample, read_jsonl, write_jsonl
from m3kit.finetune.cli import add_subcommands
from m3kit.outputs import ALL_HEADS
from m3kit.store import FusionCalibration, M3Index
from tests.finetune.beir_folders import numbered, write_beir


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="m3kit")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


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
        _run(
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
        _run(
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
        _run(
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
    assert json.loads((report / "report.json").read_text())["meta"]["queries"] == 8

    # calibrate the fine-tuned checkpoint's fusion on the BEIR folder; searches then use it
    assert _run(["calibrate", "--model", str(out), "--data", str(data), "--grid-step", "0.5"]) == 0
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
    assert _run(argv) == 0
    again = FusionCalibration.load(out)
    assert again is not None and again.weights_digest != saved.weights_digest
    assert "saved to" in capsys.readouterr().out
    with M3Index.open(M3Encoder.from_pretrained(out), ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", again)


def test_cli_bad_input_is_an_error(tiny_m3_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2", "pos": []}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: row has no positive"):
        _run(
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
        _run(
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
        _run(argv)
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
    assert _run([*argv, "--corpus", str(corpus), "--output", str(mined), "--range", "0-5"]) == 0
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
            _run([*argv, "--quiet"])
    report = tmp_path / "report"
    argv = ["eval", "--model", str(model), "--data", str(data), "--split", "test", "--quiet"]
    assert _run([*argv, "--output", str(report)]) == 0
    assert json.loads((report / "report.json").read_text())["model"]["dense"]["queries"] == 2
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--split", "dev"]
    assert _run([*argv, "--grid-step", "0.5", "--quiet"]) == 0
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.queries == 1
    capsys.readouterr()
    with pytest.raises(SystemExit):  # refused by the parser, before the model loads
        _run([*argv, "--alpha", "0", "--quiet"])
    assert "a p-value threshold in (0, 1], got 0" in capsys.readouterr().err


def test_cli_eval_counts_the_queries_it_averages(tiny_m3_path: Path, tmp_path: Path) -> None:
    """meta.queries counted a query judged only with grade 0, which no metric averages; an
    empty folder failed in encoding ("need at least one array to stack")."""
    data = tmp_path / "beir"
    data.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (data / name).write_text("")
    with pytest.raises(ValueError, match=f"no queries with relevant passages in {data}$"):
        _run(["eval", "--model", str(tmp_path / "not-loaded"), "--data", str(data)])
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    corpus, queries = numbered("d", texts), numbered("q", [t[:12] for t in texts])
    write_beir(data, corpus, queries, "q0\td0\t1\nq1\td1\t1\nq2\td2\t0\n")
    report = tmp_path / "report"
    argv = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output", str(report)]
    assert _run([*argv, "--quiet"]) == 0
    saved = json.loads((report / "report.json").read_text())
    assert saved["meta"]["queries"] == saved["model"]["dense"]["queries"] == 2
    assert saved["meta"]["queries_dropped"] == 1
    caption = "2 queries averaged (1 judged only with grade 0 left out)"
    assert (report / "report.md").read_text().endswith(f"\n\n{caption}\n")


def test_llamaindex_engine(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine

    passages = sorted({t for ex in toy_examples for t in ex.pos})
    ids = {t: f"node-{i}" for i, t in enumerate(passages)}
    dataset = SimpleNamespace(  # EmbeddingQAFinetuneDataset's fields, no llama-index-finetuning
        queries={f"q{i}": ex.query for i, ex in enumerate(toy_examples)},
        corpus={v: k for k, v in ids.items()},
        relevant_docs={f"q{i}": [ids[ex.pos[0]]] for i, ex in enumerate(toy_examples)},
        mode="text",
    )
    engine = M3FinetuneEngine(
        dataset,
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "ft"),
        val_dataset=dataset,
        epochs=1,
        batch_size=6,
        mine_negatives=2,
        passage_max_length=32,
        show_progress_bar=False,
    )
    with pytest.raises(RuntimeError, match="call finetune"):
        engine.get_finetuned_model()
    result = engine.finetune()
    assert result.steps == 2
    assert engine.val_report is not None and "fused" in engine.val_report.metrics
    # the validation set also calibrated the checkpoint's fusion (saved beside the weights)
    assert engine.calibration is not None
    assert FusionCalibration.load(result.path) == engine.calibration
    assert engine.calibration.encoder_identity is not None
    # measured on the checkpoint as it loads, so a default load searches with it
    with M3Index.open(M3Encoder.from_pretrained(result.path), ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", engine.calibration)
    embed = engine.get_finetuned_model(dtype="fp32")
    assert type(embed).__name__ == "M3Embedding"
    assert len(embed.get_query_embedding("Where does the Rhine flow?")) == 32
    assert "llama_index.finetuning" not in sys.modules


def test_attention_dropout_and_frozen_layers_reach_cli_and_engine(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import FinetuneConfig, M3Finetuner, QADataset

    seen: list[FinetuneConfig] = []

    def record(self: M3Finetuner, examples: object) -> object:
        seen.append(self.config)
        raise SystemExit(0)  # the config is what this test checks; training is tested apart

    monkeypatch.setattr(M3Finetuner, "fit", record)
    train = write_jsonl(toy_examples, tmp_path / "t.jsonl")
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(train)]
    argv += ["--output", str(tmp_path / "m"), "--quiet"]
    for extra in ([], ["--attention-dropout", "0", "--frozen-layers", "1"]):
        with pytest.raises(SystemExit):
            _run([*argv, *extra])
    assert [(c.attention_dropout, c.frozen_layers) for c in seen] == [(None, 0), (0.0, 1)]
    engine = M3FinetuneEngine(
        QADataset.from_examples(toy_examples),
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "e"),
        attention_dropout=0.0,
        frozen_layers=1,
    )
    assert (engine.config.attention_dropout, engine.config.frozen_layers) == (0.0, 1)


def test_llamaindex_engine_validates_on_its_queries_only(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """relevant_docs of a query the validation set does not hold (queries trimmed to a
    sample) are not judged: LlamaIndex's evaluators ignore them; they scored 0 here, so
    val_report understated every metric."""
    import m3kit.finetune.evaluate as evaluate
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import M3Finetuner, QADataset
    from m3kit.finetune.trainer import FinetuneResult

    full = QADataset.from_examples(toy_examples)
    kept = dict(list(full.queries.items())[:2])
    val = QADataset(queries=kept, corpus=full.corpus, relevant_docs=full.relevant_docs)
    done = FinetuneResult(tiny_m3_path, frozenset(ALL_HEADS), 0, 0, 0.0, ())
    monkeypatch.setattr(M3Finetuner, "fit", lambda self, examples: done)
    judged: list[set[str]] = []
    real = evaluate.evaluate_heads

    def spy(encoder: object, corpus: object, queries: object, qrels: dict, **kw: object) -> object:
        judged.append(set(qrels))
        return real(encoder, corpus, queries, qrels, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate, "evaluate_heads", spy)
    engine = M3FinetuneEngine(
        full, model_id=str(tiny_m3_path), val_dataset=val, calibrate_fusion=False
    )
    engine.finetune()
    assert judged == [set(kept)]
    assert engine.val_report is not None
    assert engine.val_report.metrics["dense"]["queries"] == len(kept)


def test_cli_eval_fuses_with_the_checkpoints_calibrated_weights(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fused row used FlagEmbedding's 0.4/0.2/0.4 whatever the checkpoint's calibration
    chose, so `m3kit eval` reported a fusion its searches never run; --weights wins."""
    from m3kit.finetune.evaluate import evaluate_heads
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store import SearchSettings
    from m3kit.store.fusion_calibration import calibrated_encoder_identity

    model = tmp_path / "model"
    shutil.copytree(tiny_m3_path, model)
    words = [
        "river",
        "sea",
        "oxygen",
        "number",
        "city",
        "bridge",
        "music",
        "river",
        "paint",
        "glass",
        "stone",
        "wind",
    ]
    corpus = {
        f"d{i}": f"{w} {words[(i + 3) % 12]} {words[(i + 5) % 12]}" for i, w in enumerate(words)
    }
    queries = {f"q{i}": f"{words[(i + 1) % 12]} {w}" for i, w in enumerate(words)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(12)}
    qrels_text = "".join(f"q{i}\td{i}\t1\n" for i in range(12))
    data = write_beir(tmp_path / "beir", corpus, queries, qrels_text)
    encoder = M3Encoder.from_pretrained(model)
    fp = encoder_fingerprint(encoder)
    calibrated = (0.0, 1.0, 0.0)
    FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=calibrated, rerank=True),
        dense_sparse=None,
        weights_digest=fp.weights,
        encoder_identity=calibrated_encoder_identity(fp),
    ).save(model)

    def fused_row(extra: list[str]) -> dict[str, float]:
        out = tmp_path / f"report{len(extra)}"
        argv = ["eval", "--model", str(model), "--data", str(data), "--output", str(out)]
        assert _run([*argv, *extra, "--quiet"]) == 0
        return dict(json.loads((out / "report.json").read_text())["model"]["fused"])

    def expected(weights: tuple[float, float, float]) -> dict[str, float]:
        report = evaluate_heads(encoder, corpus, queries, qrels, weights=weights)
        return dict(report.metrics["fused"])

    assert expected(calibrated) != expected((0.4, 0.2, 0.4))  # the weights change the row
    assert fused_row([]) == expected(calibrated)
    assert fused_row(["--weights", "0.4", "0.2", "0.4"]) == expected((0.4, 0.2, 0.4))
    with pytest.raises(SystemExit):  # argparse: --weights takes three numbers
        fused_row(["--weights", "1", "2"])
    capsys.readouterr()
    # calibrated without a sparse cut, evaluated with one: the weights are used (as an index
    # with that cut uses them), and the printed source says they were fitted to uncut scores
    fused_row(["--sparse-top-k", "2"])
    out = capsys.readouterr().out
    assert "warning: the search calibration was measured with no sparse cut" in out
    assert "this collection has sparse_top_k=2" in out
    fused_row([])
    assert "warning" not in capsys.readouterr().out


def test_llamaindex_engine_names_a_bad_dataset_argument(
    toy_examples: list[TrainingExample],
) -> None:
    """``SentenceTransformersFinetuneEngine``'s fourth argument is ``batch_size``, this one's
    ``val_dataset``: LlamaIndex's positional call said only "got int", not which argument."""
    from llamaindex_m3.finetune import M3FinetuneEngine
    from m3kit.finetune import QADataset

    train = QADataset.from_examples(toy_examples)
    with pytest.raises(TypeError, match=r"^val_dataset: .*got int.*batch_size=") as bad_val:
        M3FinetuneEngine(train, "BAAI/bge-m3", "exp_finetune", 16)
    assert "relevant_docs" in str(bad_val.value)
    with pytest.raises(TypeError, match=r"^train_dataset: .*got list"):
        M3FinetuneEngine([1, 2])


def test_cli_calibrate_refuses_a_sole_test_split_by_default(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A BEIR folder whose only qrels split is qrels/test.tsv (most BEIR data sets) was read
    by ``m3kit calibrate`` / ``finetune --validation`` with no split named: the fusion was
    fitted on the test set that ``m3kit eval`` then reports. Fitting on it needs
    ``--split test`` (``--validation-split test``); ``eval`` still reads it by default."""
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    corpus, queries = numbered("d", texts), numbered("q", [t[:12] for t in texts])
    qrels_text = "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n"
    data = write_beir(tmp_path / "beir", corpus, queries, qrels_text, split="test")
    model = tmp_path / "model"
    shutil.copytree(tiny_m3_path, model)
    finetune = ["finetune", "--model", str(model), "--output", str(tmp_path / "o")]
    finetune += ["--train", str(tmp_path / "unread.jsonl"), "--validation", str(data)]
    for argv, flag in (
        (["calibrate", "--model", str(model), "--data", str(data)], "--split test"),
        (finetune, "--validation-split test"),
    ):
        with pytest.raises(ValueError, match=f"only qrels split is test.*{flag}"):
            _run([*argv, "--quiet"])
    assert FusionCalibration.load(model) is None
    assert _run(["eval", "--model", str(model), "--data", str(data), "--quiet"]) == 0
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--split", "test"]
    assert _run([*argv, "--grid-step", "0.5", "--quiet"]) == 0
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.queries == 2


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
