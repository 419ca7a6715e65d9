"""``calibrate_fusion(sparse_top_k=, sparse_min_weight=)``: calibrating under a sparse cut.

A calibration measured its settings in an uncut in-memory collection, so on a collection
indexed with a sparse cut (``M3Index.open(sparse_top_k=...)``) the fitted fusion was fitted to
other sparse scores than the searches have, and nothing said so. The calibration now takes the
cut, measures in a collection cut exactly as such an index cuts (stored passages and queries),
records it (``FusionCalibration.sparse_cut``, saved in ``m3kit_search.json``), and an index
whose cut differs from the calibrated one logs a warning naming both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.checkpoint import SEARCH_FILE
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Head
from m3kit.store import FusionCalibration, M3Index, SearchSettings
from m3kit.store.calibration import calibrate_fusion
from m3kit.store.calibration_task import calibration_task, run_task
from m3kit.store.fusion_calibration import calibrated_encoder_identity
from m3kit.store.query import QueryVectors
from m3kit.store.sparse_cut import SparseCut
from m3kit.testing import SAMPLE_TEXTS
from tests.reliability.killing import index_points

CORPUS = {f"d{i}": t for i, t in enumerate(SAMPLE_TEXTS)}
QUERIES = {f"q{i}": " ".join(t.split()[:5]) for i, t in enumerate(SAMPLE_TEXTS)}
QRELS = {f"q{i}": {f"d{i}": 1.0} for i in range(len(SAMPLE_TEXTS))}
SPARSE_ONLY = SearchSettings(fusion="m3", weights=(0.0, 1.0, 0.0), rerank=False)
CUTS: list[dict[str, Any]] = [
    {"sparse_top_k": 2},
    {"sparse_min_weight": 0.2},
    {"sparse_top_k": 3, "sparse_min_weight": 0.1},
]


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    """The tiny M3 encoder itself (the store tests' memoised one takes no ``max_length``)."""
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.fixture(scope="module")
def dense_only(minilm_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(minilm_path, dtype="fp32")


def _index_scores(encoder: Any, **cut: Any) -> dict[str, list[float]]:
    """Sparse-only scores of every query in an index with ``cut``, ``{qid: scores}``."""
    with M3Index.open(encoder, ":memory:", **cut) as index:
        index.add_texts([CORPUS[d] for d in CORPUS], doc_ids=list(CORPUS), show_progress=False)
        return {
            q: [h.score for h in index.search(QUERIES[q], k=len(CORPUS), **SPARSE_ONLY.to_dict())]
            for q in QUERIES
        }


def _task_scores(encoder: Any, cut: SparseCut | None) -> dict[str, list[float]]:
    """The same scores in the collection a calibration with ``cut`` measures in."""
    with calibration_task(encoder, CORPUS, QUERIES, QRELS, None, False, cut) as task:
        out: dict[str, list[float]] = {}
        for i, qid in enumerate(task.qids):
            q = task.queries
            hits = task.store.query(
                dense=q.dense[i], sparse=q.sparse[i], k=len(CORPUS), fusion="m3",
                weights=(0.0, 1.0, 0.0), rerank=False,
            )  # fmt: skip
            out[qid] = [h.score for h in hits]
        assert run_task(task, SPARSE_ONLY, 3, 10).keys() == out.keys()
        return out


@pytest.mark.parametrize("cut", CUTS)
def test_the_calibration_collection_is_cut_as_an_index_with_the_cut(
    encoder: M3Encoder, cut: dict[str, Any]
) -> None:
    given = SparseCut(cut.get("sparse_top_k"), cut.get("sparse_min_weight", 0.0))
    cut_scores = _task_scores(encoder, given)
    assert _close(cut_scores, _index_scores(encoder, **cut))
    # the setting matters: uncut sparse scores are others
    assert not _close(cut_scores, _task_scores(encoder, None))


def _searched_sparse(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], list[float]]]:
    """Every sparse vector a store searches with from now on (after its own cut)."""
    searched: list[tuple[list[int], list[float]]] = []
    check = QueryVectors.check

    def spy(schema: Any, dense: Any, sparse: Any, colbert: Any) -> QueryVectors:
        searched.append((sparse.indices.tolist(), sparse.values.tolist()))
        return check(schema, dense, sparse, colbert)

    monkeypatch.setattr(QueryVectors, "check", spy)
    return searched


def _stored_sparse(store: Any) -> dict[str, tuple[list[int], list[float]]]:
    """``{point id: (indices, values)}`` of the sparse vectors ``store`` holds."""
    points = index_points(type("Holder", (), {"store": store})())
    return {p: (list(v["sparse"][0]), list(v["sparse"][1])) for p, (_, v) in points.items()}


@pytest.mark.parametrize("cut", CUTS)
def test_the_calibration_stores_and_searches_the_sparse_vectors_an_index_would(
    encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch, cut: dict[str, Any]
) -> None:
    """Vector for vector, not only in scores: every stored passage and every query."""
    searched = _searched_sparse(monkeypatch)
    with M3Index.open(encoder, ":memory:", **cut) as index:
        index.add_texts([CORPUS[d] for d in CORPUS], doc_ids=list(CORPUS), show_progress=False)
        for q in QUERIES:
            index.search(QUERIES[q], k=3, **SPARSE_ONLY.to_dict())
        index_stored = _stored_sparse(index.store)
    index_searched = list(searched)
    searched.clear()
    given = SparseCut(cut.get("sparse_top_k"), cut.get("sparse_min_weight", 0.0))
    with calibration_task(encoder, CORPUS, QUERIES, QRELS, None, False, given) as task:
        run_task(task, SPARSE_ONLY, 3, 10)
        task_stored = _stored_sparse(task.store)
    assert task_stored.keys() == index_stored.keys()
    for p, (indices, values) in task_stored.items():
        assert indices == index_stored[p][0]
        assert values == pytest.approx(index_stored[p][1], rel=1e-5)
    assert len(searched) == len(index_searched) == len(QUERIES)
    for (indices, values), want in zip(searched, index_searched, strict=True):
        assert indices == want[0]
        assert values == pytest.approx(want[1], rel=1e-5)
    # the cut matters: stored passages and queries both lost weights to it
    docs = encoder.encode(list(CORPUS.values()), heads=[Head.SPARSE], show_progress=False)
    qs = encoder.encode(list(QUERIES.values()), heads=[Head.SPARSE], query=True)
    assert sum(len(v.indices) for v in docs.sparse) > sum(len(i) for i, _ in task_stored.values())
    assert sum(len(v.indices) for v in qs.sparse) > sum(len(i) for i, _ in searched)


def _close(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return a.keys() == b.keys() and all(a[q] == pytest.approx(b[q], rel=1e-5, abs=1e-6) for q in a)


def test_the_cut_is_recorded_and_saved(encoder: M3Encoder, tmp_path: Path) -> None:
    options: dict[str, Any] = {"grid_step": 0.5, "min_gain": 0.0, "alpha": 1.0}
    uncut = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, **options)
    assert uncut.sparse_cut == SparseCut()
    cut = calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, sparse_top_k=2, **options)
    assert cut.sparse_cut == SparseCut(2)
    assert cut.scores != uncut.scores  # measured on the cut collection's scores
    cut.save(tmp_path)
    saved = json.loads((tmp_path / SEARCH_FILE).read_text())
    assert saved["sparse_cut"] == {"top_k": 2, "min_weight": 0.0}
    assert FusionCalibration.load(tmp_path) == cut
    # a file written before the cut was recorded: calibrated uncut, as every one then was
    del saved["sparse_cut"]
    (tmp_path / SEARCH_FILE).write_text(json.dumps(saved))
    old = FusionCalibration.load(tmp_path)
    assert old is not None and old.sparse_cut == SparseCut()


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ({"sparse_top_k": 0}, "sparse_top_k must be a positive integer"),
        ({"sparse_min_weight": -0.5}, "sparse_min_weight must be >= 0"),
        ({"sparse_min_weight": float("inf")}, "sparse_min_weight is inf"),
        ({"sparse_min_weight": float("nan")}, "sparse_min_weight is NaN"),
    ],
)
def test_bad_cuts_are_refused(encoder: M3Encoder, cut: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate_fusion(encoder, CORPUS, QUERIES, QRELS, **cut)


def test_a_cut_for_a_dense_only_encoder_is_refused(dense_only: M3Encoder) -> None:
    with pytest.raises(ValueError, match="encoder has no sparse head"):
        calibrate_fusion(dense_only, CORPUS, QUERIES, QRELS, sparse_top_k=4)


@pytest.fixture(scope="module")
def cut_calibrated_path(
    tmp_path_factory: pytest.TempPathFactory, tiny_m3_path: Path, tiny_calibration: Any
) -> Path:
    """The tiny checkpoint with ``tiny_calibration`` saved as measured with ``top_k=2``."""
    path = Path(shutil.copytree(tiny_m3_path, tmp_path_factory.mktemp("cut") / "model"))
    fingerprint = encoder_fingerprint(M3Encoder.from_pretrained(path, dtype="fp32"))
    dataclasses.replace(
        tiny_calibration,
        weights_digest=fingerprint.weights,
        encoder_identity=calibrated_encoder_identity(fingerprint),
        sparse_cut=SparseCut(2),
    ).save(path)
    return path


@pytest.mark.parametrize(
    ("cut", "warned"),
    [
        ({"sparse_top_k": 2}, False),
        ({}, True),
        ({"sparse_top_k": 3}, True),
        ({"sparse_top_k": 2, "sparse_min_weight": 0.1}, True),
    ],
)
def test_an_index_with_another_cut_than_the_calibrations_warns(
    cut_calibrated_path: Path,
    caplog: pytest.LogCaptureFixture,
    cut: dict[str, Any],
    warned: bool,
) -> None:
    encoder = M3Encoder.from_pretrained(cut_calibrated_path, dtype="fp32")
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.index"),
        M3Index.open(encoder, ":memory:", **cut) as index,
    ):
        assert index.search_source == "calibrated"  # still used: a warning, not a refusal
    warnings = [r.getMessage() for r in caplog.records if "calibration" in r.getMessage()]
    if warned:
        assert len(warnings) == 1, warnings
        assert "measured with sparse_top_k=2, sparse_min_weight=0.0" in warnings[0]
        assert f"this collection has {index.sparse_cut.describe()}" in warnings[0]
    else:
        assert warnings == []


def test_given_search_settings_do_not_warn(
    cut_calibrated_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The calibration is not used then: nothing to warn about."""
    encoder = M3Encoder.from_pretrained(cut_calibrated_path, dtype="fp32")
    with caplog.at_level(logging.WARNING, logger="m3kit.store.index"):
        M3Index.open(encoder, ":memory:", search=SearchSettings()).close()
    assert not [r for r in caplog.records if "calibration" in r.getMessage()]
