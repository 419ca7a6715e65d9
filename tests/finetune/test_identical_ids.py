"""A hit whose id is its query's id, left out as BEIR's evaluator leaves it.

In ArguAna and Quora the queries are corpus documents too: a query finds itself first, that
hit is not judged, and BEIR's ``EvaluateRetrieval.evaluate`` drops it by default
(``ignore_identical_ids=True``). ``m3kit eval`` scored it, so its numbers on those datasets
were below the published ones for the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.evaluation import drop_identical_ids, evaluate_rankings
from m3kit.finetune.evaluate import evaluate_heads
from tests.finetune.beir_folders import WORD_CORPUS, WORD_QRELS, WORD_QUERIES, write_word_beir
from tests.finetune.cli_runs import run_cli

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
