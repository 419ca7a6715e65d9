"""Search settings reach a search, and a checkpoint's fusion calibration round-trips."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.checkpoint import SEARCH_FILE
from m3kit.evaluation import ndcg_at_k
from m3kit.store import Fusion, FusionCalibration, M3Index, SearchSettings
from m3kit.store.calibration import (
    calibrate_fusion,
    evaluate_search,
    evaluate_searches,
    weight_grid,
)
from tests.store.calibration_data import (
    COARSE_STEP,
    CORPUS,
    QRELS,
    QUERIES,
    TEXTS,
    coarse_calibration,
)


def test_settings_validate_what_a_user_passes() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        SearchSettings(fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[dense, sparse, colbert\]; got 2"):
        SearchSettings(weights=(0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not all 0"):
        SearchSettings(weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="candidates must be"):
        SearchSettings(candidates=0)
    with pytest.raises(ValueError, match="unknown search settings"):
        SearchSettings.from_dict({"fusion": "rrf", "alpha": 0.5})
    assert weight_grid(0.25, 3)[0] == (0.0, 0.0, 1.0) and len(weight_grid(0.25, 3)) == 15
    with pytest.raises(ValueError, match="must divide 1"):
        weight_grid(0.3, 3)


@pytest.mark.parametrize("step", ["0", "-0.5", "0.3", "nan"])
def test_a_bad_grid_step_is_refused_before_the_model_loads(
    step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``m3kit calibrate --grid-step 0`` crashed with a ``ZeroDivisionError`` traceback, and a
    step that does not divide 1 (0.3) failed only after every passage was encoded. Both are an
    error naming the step now, before the model loads (this model folder does not exist)."""
    from m3kit.cli import main

    data = Path(__file__).resolve().parents[1] / "data" / "squad_en"
    argv = ["calibrate", "--model", str(tmp_path / "none"), "--data", str(data), "--quiet"]
    assert main([*argv, "--grid-step", step]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3kit calibrate: error: grid step must divide 1"), err
    assert "Traceback" not in err


def test_head_scores_rank_like_the_m3_query(encoder: M3Encoder) -> None:
    with M3Index.open(encoder, ":memory:") as index:
        index.add_texts(TEXTS, doc_ids=list(CORPUS))
        q = encoder.encode(["capital city of France"], query=True)
        rng = np.random.default_rng(0)
        # weights that do not sum to 1 too: a search divides them by their sum
        more = [(2.0, 1.0, 2.0), (0.2, 0.7, 0.1)]
        for w in [(0.4, 0.2, 0.4), *more, *(tuple(rng.dirichlet([1, 1, 1])) for _ in range(5))]:
            scores = index.store.head_scores(
                dense=q.dense[0], sparse=q.sparse[0], colbert=q.colbert[0], candidates=50
            )
            want = index.store.query(
                dense=q.dense[0],
                sparse=q.sparse[0],
                colbert=q.colbert[0],
                k=len(TEXTS),
                fusion="m3",
                weights=w,
            )
            assert scores.rank(w) == [(h.id, h.score) for h in want]  # scores to the last bit


def test_calibration_round_trips_and_is_the_default(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cal = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.25, min_gain=0.0, alpha=1.0)
    assert cal.all_heads is not None and cal.dense_sparse is not None
    assert cal.all_heads.rerank is True and cal.dense_sparse.rerank is False
    assert cal.queries == len(QUERIES)
    # min_gain=0, alpha=1 (no test): the chosen settings are the best measured (the first of
    # equals), per group
    for group, chosen in (("all heads", cal.all_heads), ("dense+sparse", cal.dense_sparse)):
        tried = {k: v for k, v in cal.scores.items() if k.endswith(f"[{group}]")}
        assert len(tried) == 2 + (15 if group == "all heads" else 5)  # RRF, DBSF + the grid
        assert tried[f"{chosen.describe()} [{group}]"] == max(tried.values())
        # what the calibration measured is what a search through the store gets
        again = evaluate_search(encoder, CORPUS, QUERIES, QRELS, chosen, ks=(10,))
        assert again["ndcg@10"] == pytest.approx(max(tried.values()), abs=1e-6)
    cal.save(model_dir)
    assert FusionCalibration.load(model_dir) == cal
    # a fresh load of the checkpoint searches with its calibration by default
    enc = M3Encoder.from_pretrained(model_dir, dtype="fp32")
    with M3Index.open(enc, ":memory:") as index:
        assert index.calibration == cal
        assert index.search_settings() == cal.all_heads
        assert index.search_settings(rerank=False) == cal.dense_sparse
        explicit = index.search_settings(fusion="dbsf", candidates=7)
        assert (explicit.fusion, explicit.candidates) == (Fusion.DBSF, 7)
        index.add_texts(TEXTS, doc_ids=list(CORPUS))
        calibrated = index.search(QUERIES["q1"], k=3)
        same = index.search(QUERIES["q1"], k=3, **_as_kwargs(cal.all_heads))
        assert [h.id for h in calibrated] == [h.id for h in same]
    # settings given at open win over the calibration
    mine = SearchSettings(fusion="m3", weights=(1.0, 0.0, 0.0), rerank=False)
    with M3Index.open(enc, ":memory:", search=mine) as index:
        assert index.search_settings() == mine
    # new weights saved into the folder remove the stale calibration
    enc.model.save(model_dir, enc.tokenizer)
    assert not (model_dir / SEARCH_FILE).exists()


def test_each_cut_off_scores_a_search_that_deep(encoder: M3Encoder) -> None:
    """A deeper cut-off fetches more candidates per retriever, which changes the fusion and
    the rerank pool; it must not change the @10 metrics of the same report."""
    rnd = random.Random(0)
    words = " ".join(TEXTS).split()
    corpus = {f"p{i:03d}": " ".join(rnd.sample(words, 8)) for i in range(160)}
    queries = {f"q{i}": " ".join(rnd.sample(words, 4)) for i in range(12)}
    qrels = {q: {rnd.choice(list(corpus)): 1.0 for _ in range(3)} for q in queries}
    for settings in (
        SearchSettings(fusion=Fusion.RRF, rerank=True),
        SearchSettings(fusion=Fusion.RRF, rerank=False),
        SearchSettings(fusion=Fusion.DBSF, rerank=False),
    ):
        alone = evaluate_search(encoder, corpus, queries, qrels, settings, ks=(10,))
        report = evaluate_search(encoder, corpus, queries, qrels, settings, ks=(1, 10, 100))
        for name in ("ndcg@10", "mrr@10", "hit@10", "recall@10"):
            assert report[name] == alone[name], (settings.describe(), name)
        assert list(report) == [
            f"{m}@{k}" for k in (1, 10, 100) for m in ("ndcg", "mrr", "hit", "recall")
        ] + ["queries"]


def _settings_tried(step: float, candidates: int | None) -> dict[str, SearchSettings]:
    """``{label: settings}`` of every setting calibrate_fusion tries for the tiny model (all
    three heads), labelled as in :attr:`FusionCalibration.scores`."""
    out: dict[str, SearchSettings] = {}
    for group, rerank in (("all heads", True), ("dense+sparse", False)):
        pairs = [(w[0], w[1], 0.0) for w in weight_grid(step, 2)]
        grid = [(w[0], w[1], w[2]) for w in weight_grid(step, 3)] if rerank else pairs
        tried = [
            SearchSettings(fusion=f, rerank=rerank, candidates=candidates)
            for f in (Fusion.RRF, Fusion.DBSF)
        ] + [
            SearchSettings(fusion=Fusion.M3, weights=w, rerank=rerank, candidates=candidates)
            for w in grid
            if any(w)
        ]
        out.update({f"{s.describe()} [{group}]": s for s in tried})
    return out


@pytest.mark.parametrize("candidates", [3, None])
def test_calibration_scores_each_setting_as_a_search_with_it_ranks(
    encoder: M3Encoder, candidates: int | None
) -> None:
    """Every score a calibration records is what searches with that setting get, also with
    fewer candidates than the 10 hits it ranks: a search then fetches 10 per retriever (at
    least ``k``), and the ``m3`` grid used to score only the given few, so its weights were
    chosen on rankings no search returns."""
    rnd = random.Random(1)
    words = " ".join(TEXTS).split()
    corpus = {f"p{i:02d}": " ".join(rnd.sample(words, 8)) for i in range(40)}
    queries = {f"q{i}": " ".join(rnd.sample(words, 4)) for i in range(8)}
    qrels = {q: {d: 1.0 for d in rnd.sample(sorted(corpus), 5)} for q in queries}
    cal = coarse_calibration(encoder, corpus, queries, qrels, candidates=candidates)
    tried = _settings_tried(COARSE_STEP, candidates)
    assert set(cal.scores) == set(tried)
    searched = evaluate_searches(encoder, corpus, queries, qrels, tried, ks=(10,))
    for label in tried:
        assert cal.scores[label] == pytest.approx(searched[label]["ndcg@10"], abs=1e-6), label
    # and through the index a user searches with: one m3 setting, query by query
    m3 = SearchSettings(
        fusion=Fusion.M3, weights=(0.5, 0.5, 0.0), rerank=True, candidates=candidates
    )
    with M3Index.open(encoder, ":memory:") as index:
        index.add_texts(list(corpus.values()), doc_ids=list(corpus))
        ndcg = []
        for q, text in queries.items():
            hits = index.search(
                text, fusion=m3.fusion, weights=m3.weights, rerank=True, candidates=candidates
            )
            ndcg.append(ndcg_at_k([h.doc_id for h in hits], qrels[q], 10))
    label = f"{m3.describe()} [all heads]"
    assert cal.scores[label] == pytest.approx(sum(ndcg) / len(ndcg), abs=1e-6)


def _as_kwargs(s: SearchSettings) -> dict[str, object]:
    return {
        "fusion": s.fusion,
        "weights": s.weights,
        "rerank": s.rerank,
        "candidates": s.candidates,
    }


def test_bge_m3_shaped_models_default_to_flagembeddings_published_weights(
    encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from m3kit.outputs import ALL_HEADS, Head
    from m3kit.store import fusion_calibration
    from m3kit.store.search_settings import BGE_M3_PUBLISHED, is_bge_m3_architecture

    def fake(heads: frozenset[Head], **config: object) -> SimpleNamespace:
        shape = {"model_type": "xlm-roberta", "num_hidden_layers": 24, "hidden_size": 1024}
        shape["vocab_size"] = 250_002
        cfg = SimpleNamespace(**{**shape, **config})
        return SimpleNamespace(
            available_heads=heads, model=SimpleNamespace(backbone=SimpleNamespace(config=cfg))
        )

    assert is_bge_m3_architecture(fake(ALL_HEADS))
    assert not is_bge_m3_architecture(fake(ALL_HEADS, num_hidden_layers=12))
    assert not is_bge_m3_architecture(fake(ALL_HEADS, vocab_size=30522))
    assert not is_bge_m3_architecture(fake(frozenset({Head.DENSE})))
    assert not is_bge_m3_architecture(encoder)  # the tiny model: built-in defaults
    with M3Index.open(encoder, ":memory:") as index:
        assert (index.search_source, index.search_settings()) == ("built-in", SearchSettings())
    assert BGE_M3_PUBLISHED.fusion is Fusion.M3 and BGE_M3_PUBLISHED.weights == (0.4, 0.2, 0.4)
    monkeypatch.setattr("m3kit.store.index_search.is_bge_m3_architecture", lambda enc: True)
    with M3Index.open(encoder, ":memory:") as index:
        assert index.search_source == "bge-m3"
        assert index.search_settings() == BGE_M3_PUBLISHED
        assert index.search_settings(fusion="rrf").fusion is Fusion.RRF  # explicit wins
    assert fusion_calibration.SEARCH_FILE == SEARCH_FILE


def test_a_bge_m3_shaped_model_keeps_the_published_weights_unless_beaten(
    encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The null setting of a BGE-M3-shaped model is what it ranks with uncalibrated,
    FlagEmbedding's published weights, not RRF: calibrating it used to replace them with RRF
    whenever nothing beat RRF significantly, even where the published weights ranked better."""
    from m3kit.store.search_settings import BGE_M3_PUBLISHED

    monkeypatch.setattr("m3kit.store.calibration.is_bge_m3_architecture", lambda enc: True)
    kept = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.5, min_gain=0.999)
    assert kept.all_heads == BGE_M3_PUBLISHED
    assert kept.dense_sparse == BGE_M3_PUBLISHED.merged(rerank=False)
    assert f"{BGE_M3_PUBLISHED.describe()} [all heads]" in kept.scores
    assert len(kept.scores) == (3 + 6) + (3 + 3)  # the published settings measured too
    tested = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.25, min_gain=0.0)
    for group, setting in (("all heads", tested.all_heads), ("dense+sparse", tested.dense_sparse)):
        if setting.fusion is not Fusion.M3 or setting.weights != BGE_M3_PUBLISHED.weights:
            # replaced only by a setting that ranked better than the published weights
            published = BGE_M3_PUBLISHED.merged(rerank=group == "all heads")
            assert (
                tested.scores[f"{setting.describe()} [{group}]"]
                > tested.scores[f"{published.describe()} [{group}]"]
            )


def test_a_gain_within_noise_keeps_rrf(encoder: M3Encoder) -> None:
    # RRF is tried first; nothing can beat it by a whole nDCG point on a scale of 0..1
    cal = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.5, min_gain=0.999)
    assert cal.all_heads == SearchSettings(fusion="rrf", rerank=True)
    assert cal.dense_sparse == SearchSettings(fusion="rrf", rerank=False)
    assert len(cal.scores) == (2 + 6) + (2 + 3)  # every setting was still measured and reported
    with pytest.raises(ValueError, match="min_gain"):
        calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, min_gain=-0.1)
    for alpha in (0.0, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, alpha=alpha)


def test_a_gain_of_the_best_of_many_by_chance_keeps_rrf(encoder: M3Encoder) -> None:
    """Five validation queries cannot show that the best of 23 settings beats RRF: it is
    measured (and reported) but RRF is kept, with the test's p-value recorded. The same
    calibration without the test (alpha=1) takes the best."""
    untested = calibrate_fusion(
        encoder, CORPUS, QUERIES, QRELS, grid_step=0.25, min_gain=0.0, alpha=1.0
    )
    tested = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.25, min_gain=0.0)
    assert tested.scores == untested.scores
    changed = 0
    for group, kept, best in (
        ("all heads", tested.all_heads, untested.all_heads),
        ("dense+sparse", tested.dense_sparse, untested.dense_sparse),
    ):
        rrf = SearchSettings(fusion="rrf", rerank=group == "all heads")
        assert kept == rrf
        if best != rrf:  # the best gained over RRF on these queries, by luck
            changed += 1
            assert (
                untested.scores[f"{best.describe()} [{group}]"]
                > tested.scores[f"{rrf.describe()} [{group}]"]
            )
            assert tested.p_values[group] > 0.05
    assert changed  # the data give at least one group a setting better than RRF


def test_too_few_queries_for_alpha_are_named(
    encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """Five queries give p >= 1/32: at alpha 0.01 no setting can replace RRF, and the log
    says so instead of only keeping RRF (at alpha 0.05 they can, and nothing is said)."""
    with caplog.at_level(logging.WARNING, logger="m3kit.store.calibration"):
        cal = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.5, alpha=0.01)
    assert "5 validation queries cannot show any setting better than the default" in caplog.text
    assert cal.all_heads == SearchSettings(fusion="rrf", rerank=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m3kit.store.calibration"):
        calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, grid_step=0.5)
    assert "cannot show" not in caplog.text


def test_a_gain_on_most_queries_replaces_rrf_and_luck_does_not() -> None:
    """The decision rule itself, on per-query nDCG@10 arrays: a gain on 60 of 80 queries
    passes; the same mean gain from 2 queries (with 60 other settings tried) does not."""
    from m3kit.store.calibration import _best

    rrf = SearchSettings(fusion="rrf", rerank=True)
    others = [
        SearchSettings(fusion="m3", weights=(0.1 * i, 0.0, 1.0), rerank=True) for i in range(60)
    ]
    base = np.full(80, 0.5)
    steady = base.copy()
    steady[:60] += 0.02
    measured = [(rrf, base), *((s, base.copy()) for s in others[1:]), (others[0], steady)]
    choice = _best(measured, 0.005, 0.05)
    assert choice.settings == others[0] and choice.p_value is not None
    assert choice.p_value < 0.001
    lucky = base.copy()
    lucky[:2] += 0.6  # the same mean gain (0.015), from two queries
    rng = np.random.default_rng(0)
    noisy = [(s, base + rng.normal(0, 0.05, 80)) for s in others[1:]]
    choice = _best([(rrf, base), *noisy, (others[0], lucky)], 0.005, 0.05)
    assert choice.settings == rrf and choice.p_value is not None and choice.p_value > 0.05
    # below min_gain nothing is tested
    assert _best([(rrf, base), (others[0], base + 0.001)], 0.005, 0.05).p_value is None


def test_query_ids_are_compared_as_strings_as_evaluate_heads_compares_them(
    encoder: M3Encoder,
) -> None:
    """Queries keyed by int and qrels by str (a BEIR file read by hand) calibrate and score
    as string keys do, as ``evaluate_heads`` and ``evaluate_rankings`` compare them (before:
    "no query has a relevant passage in qrels")."""
    int_queries = {int(q[1:]): text for q, text in QUERIES.items()}
    str_qrels = {q[1:]: rel for q, rel in QRELS.items()}
    renamed = {q[1:]: text for q, text in QUERIES.items()}
    expected = calibrate_fusion(encoder, CORPUS, renamed, str_qrels, grid_step=0.5)
    assert calibrate_fusion(encoder, CORPUS, int_queries, str_qrels, grid_step=0.5) == expected
    settings = SearchSettings(fusion="rrf", rerank=True)
    assert evaluate_search(encoder, CORPUS, int_queries, str_qrels, settings) == evaluate_search(
        encoder, CORPUS, renamed, str_qrels, settings
    )


def test_int_ids_score_as_their_text(encoder: M3Encoder) -> None:
    # ids are compared as strings by every metric; int corpus ids (MS MARCO passage ids)
    # failed as the calibration store's record ids, after the whole corpus was encoded
    as_int = {i: t for i, t in enumerate(TEXTS)}
    queries = {i: q for i, q in enumerate(QUERIES.values())}
    qrels = {i: {int(d[1:]): g for d, g in QRELS[q].items()} for i, q in enumerate(QUERIES)}
    settings = {"rrf": SearchSettings(fusion=Fusion.RRF), "m3": SearchSettings(fusion=Fusion.M3)}
    got = evaluate_searches(encoder, as_int, queries, qrels, settings, ks=(10,))
    want = evaluate_searches(
        encoder,
        {str(i): t for i, t in as_int.items()},
        {str(i): q for i, q in queries.items()},
        {str(q): {str(d): g for d, g in r.items()} for q, r in qrels.items()},
        settings,
        ks=(10,),
    )
    assert got == want
    with pytest.raises(ValueError, match=r"two ids of one text .*\['1'\]"):
        evaluate_searches(encoder, {1: "a", "1": "b"}, queries, qrels, settings)
