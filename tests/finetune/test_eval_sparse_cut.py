"""``evaluate_heads`` / ``m3kit eval`` / ``m3kit finetune --validation`` / ``M3FinetuneEngine``
with a sparse cut (``sparse_top_k`` / ``sparse_min_weight``).

They encoded corpus and queries with every sparse weight kept, so the sparse and fused rows
measured uncut vectors even when the user's collections cut them (``M3Index.open(...,
sparse_top_k=...)``). The cut now reaches the encoding, and the report records it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.evaluation import evaluate_rankings
from m3kit.finetune import M3Finetuner, QADataset, TrainingExample
from m3kit.finetune.evaluate import _rank, evaluate_heads, score_matrix, write_report
from m3kit.finetune.trainer import FinetuneResult
from m3kit.outputs import ALL_HEADS, Head
from m3kit.store import FusionCalibration
from m3kit.store.sparse_cut import SparseCut
from tests.finetune.beir_folders import WORD_CORPUS, WORD_QRELS, WORD_QUERIES, write_word_beir
from tests.finetune.cli_runs import run_cli

CORPUS, QUERIES, QRELS = WORD_CORPUS, WORD_QUERIES, WORD_QRELS


def _cut_sparse_metrics(encoder: M3Encoder, top_k: int) -> dict[str, float]:
    """The sparse row computed by hand from vectors the encoder itself cut."""
    docs = encoder.encode(list(CORPUS.values()), sparse_top_k=top_k)
    qs = encoder.encode(list(QUERIES.values()), query=True, sparse_top_k=top_k)
    ranking = _rank(score_matrix(qs, docs, Head.SPARSE), list(CORPUS), 100)
    return evaluate_rankings(dict(zip(QUERIES, ranking, strict=True)), QRELS, (1, 5, 10, 100))


def test_a_cut_changes_the_sparse_and_fused_rows(tiny_encoder: M3Encoder) -> None:
    full = evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS)
    cut = evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS, sparse_top_k=1)
    assert cut.metrics["sparse"] == _cut_sparse_metrics(tiny_encoder, 1)
    assert cut.metrics["sparse"] != full.metrics["sparse"]  # the cut reached the encoding
    assert cut.metrics["fused"] != full.metrics["fused"]
    for head in ("dense", "colbert"):  # the other heads are not cut
        assert cut.metrics[head] == full.metrics[head]
    assert cut.sparse_cut == SparseCut(1)
    assert full.sparse_cut == SparseCut()  # measured uncut, and the report says so
    dense = evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS, heads=["dense"])
    assert dense.sparse_cut is None  # no sparse vectors scored


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparse_top_k": 0}, "sparse_top_k must be a positive integer"),
        ({"sparse_top_k": 2.5}, "sparse_top_k must be a positive integer"),
        ({"sparse_min_weight": float("nan")}, "sparse_min_weight is NaN"),
        ({"sparse_min_weight": float("inf")}, "sparse_min_weight is inf"),
        ({"sparse_min_weight": -0.5}, "sparse_min_weight must be >= 0"),
        ({"sparse_top_k": 2, "heads": ["dense", "colbert"]}, "no sparse head"),
    ],
)
def test_evaluate_heads_refuses_a_bad_cut(
    tiny_encoder: M3Encoder, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS, **options)  # type: ignore[arg-type]


def test_the_report_records_the_cut(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    cut = evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS, sparse_min_weight=0.1)
    dense = evaluate_heads(tiny_encoder, CORPUS, QUERIES, QRELS, heads=["dense"])
    paths = write_report({"before": dense, "after": cut}, tmp_path, extra={"n": 10})
    data = json.loads(paths["json"].read_text())
    assert data["meta"] == {"n": 10, "sparse_cut": {"after": {"top_k": None, "min_weight": 0.1}}}
    assert data["after"]["sparse"] == cut.metrics["sparse"]  # the metrics keep their keys
    table = paths["markdown"].read_text()
    assert "sparse vectors: after with sparse_top_k=None, sparse_min_weight=0.1" in table


def test_cli_eval_flags_reach_the_evaluation(tiny_m3_path: Path, tmp_path: Path) -> None:
    data = write_word_beir(tmp_path / "beir")
    out = tmp_path / "report"
    argv = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output", str(out)]
    assert run_cli([*argv, "--quiet", "--sparse-top-k", "1"]) == 0
    saved = json.loads((out / "report.json").read_text())
    encoder = M3Encoder.from_pretrained(tiny_m3_path)
    assert saved["model"]["sparse"] == _cut_sparse_metrics(encoder, 1)
    assert saved["meta"]["sparse_cut"] == {"model": {"top_k": 1, "min_weight": 0.0}}
    assert run_cli([*argv, "--quiet"]) == 0  # without the flags: uncut, and recorded as such
    saved = json.loads((out / "report.json").read_text())
    assert saved["meta"]["sparse_cut"] == {"model": {"top_k": None, "min_weight": 0.0}}


def test_cli_eval_cuts_a_sparse_model_against_a_dense_only_baseline(
    tiny_m3_path: Path,
    tiny_dense_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dense-only baseline (the model before sparse / ColBERT training) has no sparse
    vectors to cut: `m3kit eval --baseline` with a cut stopped on it, naming no model."""
    data = write_word_beir(tmp_path / "beir")
    out = tmp_path / "report"
    argv = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output", str(out)]
    argv += ["--quiet", "--sparse-top-k", "1"]
    assert run_cli([*argv, "--baseline", str(tiny_dense_path)]) == 0
    assert "baseline: evaluates no sparse head; sparse_top_k=1" in capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    assert saved["meta"]["sparse_cut"] == {"model": {"top_k": 1, "min_weight": 0.0}}
    assert set(saved["baseline"]) == {"dense"}
    encoder = M3Encoder.from_pretrained(tiny_m3_path)
    assert saved["model"]["sparse"] == _cut_sparse_metrics(encoder, 1)
    # the evaluated model itself without a sparse head: refused, naming it
    argv[2] = str(tiny_dense_path)
    named = re.escape(f"model {tiny_dense_path}: sparse_top_k=1, sparse_min_weight=0.0 was")
    with pytest.raises(ValueError, match=named):
        run_cli(argv)


@pytest.mark.parametrize("command", ["eval", "finetune", "calibrate"])
@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--sparse-top-k=0", "0"),
        ("--sparse-min-weight=-1", "-1 must be a number >= 0"),
        ("--sparse-min-weight=inf", "sparse_min_weight is inf"),
        ("--sparse-min-weight=nan", "sparse_min_weight is NaN"),
    ],
)
def test_cli_refuses_bad_cuts_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str, message: str
) -> None:
    argv = [command, "--model", str(tmp_path / "unread"), flag]
    argv += (
        ["--data", str(tmp_path)]
        if command in ("eval", "calibrate")
        else ["--train", str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exit_:
        run_cli(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --sparse-" in err and message in err


def _finetuned(tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``M3Finetuner.fit`` replaced by a copy of the tiny checkpoint (training is tested apart)."""
    model = Path(shutil.copytree(tiny_m3_path, tmp_path / "ft"))
    done = FinetuneResult(model, frozenset(ALL_HEADS), 0, 0, 0.0, ())
    monkeypatch.setattr(M3Finetuner, "fit", lambda self, examples, **kw: done)
    return model


def test_cli_finetune_validation_calibrates_with_the_cut(
    tiny_m3_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = _finetuned(tiny_m3_path, tmp_path, monkeypatch)
    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": []}) + "\n")
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(train)]
    argv += ["--output", str(model), "--quiet", "--sparse-top-k", "2"]
    with pytest.raises(ValueError, match="--sparse-top-k / --sparse-min-weight apply with"):
        run_cli(argv)  # without --validation there is nothing to measure with them
    data = write_word_beir(tmp_path / "beir")
    assert run_cli([*argv, "--sparse-min-weight", "0.1", "--validation", str(data)]) == 0
    assert "with sparse_top_k=2, sparse_min_weight=0.1; saved to" in capsys.readouterr().out
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.sparse_cut == SparseCut(2, 0.1)


def test_engine_validates_and_calibrates_with_the_cut(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine

    _finetuned(tiny_m3_path, tmp_path, monkeypatch)
    data = QADataset.from_examples(toy_examples)
    with pytest.raises(ValueError, match="sparse_min_weight is NaN"):  # before any training
        M3FinetuneEngine(data, model_id=str(tiny_m3_path), sparse_min_weight=float("nan"))
    with pytest.raises(ValueError, match="sparse_top_k must be a positive integer"):
        M3FinetuneEngine(data, model_id=str(tiny_m3_path), sparse_top_k=0)
    with pytest.raises(ValueError, match="without a val_dataset"):  # nothing it would cut
        M3FinetuneEngine(data, model_id=str(tiny_m3_path), sparse_top_k=1)
    engine = M3FinetuneEngine(
        data, model_id=str(tiny_m3_path), val_dataset=data, sparse_top_k=1, show_progress_bar=False
    )
    engine.finetune()
    assert engine.val_report is not None and engine.val_report.sparse_cut == SparseCut(1)
    assert engine.calibration is not None and engine.calibration.sparse_cut == SparseCut(1)
    uncut = M3FinetuneEngine(
        data, model_id=str(tiny_m3_path), val_dataset=data, show_progress_bar=False
    )
    uncut.finetune()
    assert uncut.val_report is not None and uncut.val_report.sparse_cut == SparseCut()
    assert uncut.val_report.metrics["sparse"] != engine.val_report.metrics["sparse"]


def test_a_max_length_past_the_encoders_is_not_cut_to_it_silently(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``m3kit eval --max-length 32`` on a checkpoint declaring 16 tokens scored texts cut at
    16 (``encode`` never goes past the encoder's length), and ``calibrate`` the same, with no
    word but a truncation warning naming 16. ``eval`` now loads the models at the length
    asked for; a scoring length past the encoder's is an error (library and ``calibrate``)."""
    short = tmp_path / "short"
    shutil.copytree(tiny_m3_path, short)
    cfg = json.loads((short / "m3kit.json").read_text())
    (short / "m3kit.json").write_text(json.dumps({**cfg, "max_length": 16}))
    encoder = M3Encoder.from_pretrained(short)
    assert encoder.max_length == 16
    with pytest.raises(ValueError, match="max_length=32 is longer than this encoder's 16"):
        evaluate_heads(encoder, CORPUS, QUERIES, QRELS, max_length=32)
    data = write_word_beir(tmp_path / "beir")
    loaded: list[int | None] = []
    load = M3Encoder.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type[M3Encoder], path: object, **options: object) -> M3Encoder:
        loaded.append(options.get("max_length"))  # type: ignore[arg-type]
        return load(cls, path, **options)  # type: ignore[no-any-return]

    monkeypatch.setattr(M3Encoder, "from_pretrained", classmethod(spy))
    argv = ["--model", str(short), "--data", str(data), "--quiet", "--max-length", "32"]
    assert run_cli(["eval", *argv, "--output", str(tmp_path / "report")]) == 0
    assert loaded == [32]
    with pytest.raises(ValueError, match="max_length=32 is longer than this encoder's 16"):
        run_cli(["calibrate", *argv])
    assert not (short / "m3kit_search.json").exists()
