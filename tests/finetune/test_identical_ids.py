"""A hit whose id is its query's id, left out as BEIR's evaluator leaves it.

In ArguAna and Quora the queries are corpus documents too: a query finds itself first, that
hit is not judged, and BEIR's ``EvaluateRetrieval.evaluate`` drops it by default
(``ignore_identical_ids=True``). ``m3kit eval`` scored it, so its numbers on those datasets
were below the published ones for the same model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.evaluation import drop_identical_ids, evaluate_rankings
from m3kit.finetune import M3Finetuner
from m3kit.finetune.evaluate import evaluate_heads
from m3kit.finetune.trainer import FinetuneResult
from m3kit.outputs import ALL_HEADS
from m3kit.store import FusionCalibration
from m3kit.store.calibration import calibrate_fusion
from tests.finetune.beir_folders import WORD_CORPUS, WORD_QRELS, WORD_QUERIES, write_word_beir
from tests.finetune.cli_runs import run_cli
from tests.store.calibration_data import coarse_calibration

PASSAGES, QUERIES, QRELS = WORD_CORPUS, WORD_QUERIES, WORD_QRELS
#: passages d0..d9 and queries q0..q9, each also a corpus document under its own id
WITH_SELF = {**PASSAGES, **QUERIES}


def test_evaluate_rankings_drops_the_query_itself_when_asked() -> None:
    run = {"q1": ["q1", "d1", "d2"], "q2": ["d3", "q2", "d2"]}
    qrels = {"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}
    kept = evaluate_rankings(run, qrels, (1, 2))
    dropped = evaluate_rankings(run, qrels, (1, 2), ignore_identical_ids=True)
    assert (kept["hit@1"], kept["mrr@2"]) == (0.0, 0.25)  # q1's self-hit took rank 1
    assert (dropped["hit@1"], dropped["mrr@2"]) == (0.5, 0.75)  # q1 hits at 1, q2 at 2
    assert dropped == evaluate_rankings(drop_identical_ids(run, qrels), qrels, (1, 2))


def test_a_query_judging_its_own_id_relevant_is_refused() -> None:
    """Then query and document ids are separate namespaces: dropping would hide a hit."""
    with pytest.raises(ValueError, match=r"query '3' judges the document with its own id"):
        evaluate_rankings({"3": ["3"]}, {3: {3: 1}}, (1,), ignore_identical_ids=True)
    assert evaluate_rankings({"3": ["3"]}, {3: {3: 1}}, (1,))["hit@1"] == 1.0


def test_evaluate_heads_ranks_each_query_as_if_it_were_not_in_the_corpus(
    tiny_encoder: M3Encoder,
) -> None:
    ks = (1, 5, 10)
    ignored = evaluate_heads(
        tiny_encoder, WITH_SELF, QUERIES, QRELS, ks=ks, ignore_identical_ids=True
    ).metrics
    # each query alone against the corpus without its own document: the same lists
    alone = [
        evaluate_heads(
            tiny_encoder,
            {d: t for d, t in WITH_SELF.items() if d != q},
            {q: QUERIES[q]},
            {q: QRELS[q]},
            ks=ks,
        ).metrics
        for q in QUERIES
    ]
    assert set(ignored) == {"dense", "sparse", "colbert", "fused", "rrf"}
    for row, metrics in ignored.items():
        for name, value in metrics.items():
            if name != "queries":
                expected = sum(one[row][name] for one in alone) / len(alone)
                assert value == pytest.approx(expected, abs=1e-12), (row, name)
    kept = evaluate_heads(tiny_encoder, WITH_SELF, QUERIES, QRELS, ks=ks).metrics
    assert kept["dense"]["hit@1"] == 0.0  # every query found itself first
    assert ignored["dense"]["hit@1"] > 0.0


def test_cli_eval_leaves_self_hits_out_by_default(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def report(corpus: dict[str, str], name: str, *flags: str) -> dict[str, dict[str, float]]:
        data = write_word_beir(tmp_path / name, corpus)
        out = tmp_path / f"{name}-report"
        argv = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output", str(out)]
        assert run_cli([*argv, "--quiet", *flags]) == 0
        saved: dict[str, dict[str, float]] = json.loads((out / "report.json").read_text())
        return saved["model"]

    report(PASSAGES, "plain")
    assert "own id in the corpus" not in capsys.readouterr().out
    ignored = report(WITH_SELF, "argu")
    assert "10 of 10 queries have their own id in the corpus" in capsys.readouterr().out
    kept = report(WITH_SELF, "argu-kept", "--keep-identical-ids")
    encoder = M3Encoder.from_pretrained(tiny_m3_path)  # as m3kit eval loads it
    for head in ("dense", "sparse", "colbert"):
        for flag, saved in ((True, ignored), (False, kept)):
            expected = evaluate_heads(
                encoder, WITH_SELF, QUERIES, QRELS, heads=[head], ignore_identical_ids=flag
            )
            assert saved[head] == pytest.approx(expected.metrics[head]), (head, flag)
    assert kept["dense"]["hit@1"] == 0.0 < ignored["dense"]["hit@1"]


def _m3(scores: dict[str, float]) -> dict[str, float]:
    """A calibration's scores of the ``m3`` settings: exact per-head scores, equal ones ranked
    by id. (RRF and DBSF fuse the engine's candidate lists, which order the tiny model's
    equal sparse scores differently from one collection to the next.)"""
    return {label: v for label, v in scores.items() if label.startswith("m3 ")}


def _calibrated(
    encoder: M3Encoder,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, float]],
    ignore: bool = False,
) -> dict[str, float]:
    """The nDCG@10 of every ``m3`` setting a calibration measures (a coarse grid)."""
    calibration = coarse_calibration(encoder, corpus, queries, qrels, ignore_identical_ids=ignore)
    return _m3(calibration.scores)


def test_calibration_can_rank_each_query_as_if_it_were_not_in_the_corpus(
    tiny_encoder: M3Encoder,
) -> None:
    """Self-hits rewarded or cost each fusion by how readily its heads find the query's own
    text, so the weights were fitted to what ``m3kit eval`` leaves out."""
    ignored = _calibrated(tiny_encoder, WITH_SELF, QUERIES, QRELS, ignore=True)
    # each query alone against the corpus without its own document: the same rankings
    alone = [
        _calibrated(
            tiny_encoder,
            {d: t for d, t in WITH_SELF.items() if d != q},
            {q: QUERIES[q]},
            {q: QRELS[q]},
        )
        for q in QUERIES
    ]
    assert len(ignored) > 2
    for label, score in ignored.items():
        expected = sum(one[label] for one in alone) / len(alone)
        assert score == pytest.approx(expected, abs=2e-6), label
    assert _calibrated(tiny_encoder, WITH_SELF, QUERIES, QRELS) != ignored
    with pytest.raises(ValueError, match="query 'q0' judges the document with its own id"):
        calibrate_fusion(
            tiny_encoder, WITH_SELF, QUERIES, {"q0": {"q0": 1.0}}, ignore_identical_ids=True
        )


def test_cli_calibrate_leaves_self_hits_out_by_default(
    tiny_m3_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``m3kit calibrate`` and ``m3kit finetune --validation`` measure as ``m3kit eval`` does
    (``--keep-identical-ids`` keeps the hits, as it does there)."""
    data = write_word_beir(tmp_path / "argu", WITH_SELF)
    model = Path(shutil.copytree(tiny_m3_path, tmp_path / "model"))
    encoder = M3Encoder.from_pretrained(model, dtype="fp32")  # as calibrate loads it
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--grid-step", "0.5"]
    measured = []
    for flags, ignore in (((), True), (("--keep-identical-ids",), False)):
        assert run_cli([*argv, "--quiet", *flags]) == 0
        saved = FusionCalibration.load(model)
        expected = calibrate_fusion(
            encoder, WITH_SELF, QUERIES, QRELS, grid_step=0.5, ignore_identical_ids=ignore
        )
        assert saved is not None and _m3(saved.scores) == _m3(expected.scores), flags
        measured.append(_m3(saved.scores))
        printed = capsys.readouterr().out
        assert ("10 of 10 queries have their own id in the corpus" in printed) is ignore
    assert measured[0] != measured[1]
    # finetune --validation calibrates the same way (training replaced: tested apart)
    done = FinetuneResult(model, frozenset(ALL_HEADS), 0, 0, 0.0, ())
    monkeypatch.setattr(M3Finetuner, "fit", lambda self, examples: done)
    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": []}) + "\n")
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(train)]
    argv += ["--output", str(model)]
    with pytest.raises(ValueError, match="--keep-identical-ids applies with --validation"):
        run_cli([*argv, "--quiet", "--keep-identical-ids"])
    for flags, ignore in (((), True), (("--keep-identical-ids",), False)):
        assert run_cli([*argv, "--quiet", "--validation", str(data), *flags]) == 0
        saved = FusionCalibration.load(model)
        expected = calibrate_fusion(encoder, WITH_SELF, QUERIES, QRELS, ignore_identical_ids=ignore)
        assert saved is not None and _m3(saved.scores) == _m3(expected.scores), flags
