"""Fit a model's fusion on a validation set, through the store's own query plans.

:func:`calibrate_fusion` writes the validation passages into an in-memory collection, runs
every candidate ranking the store offers — RRF and DBSF (with and without ColBERT rerank)
and the ``m3`` weighted sum over a grid of weights — for every validation query, and keeps
the one with the best nDCG@10: once for a collection with ColBERT vectors and once for dense
+ sparse alone. Measuring through the store (not a re-implementation of its plans) means the
chosen settings rank exactly as they will in use: given a sparse cut (``sparse_top_k`` /
``sparse_min_weight``, as ``M3Index.open`` takes it), the collection is cut with it, and the
calibration records it (:attr:`FusionCalibration.sparse_cut`). The ``m3`` grid re-weights
one set of exact per-head scores per query (:func:`m3kit.store.query.m3_head_scores`), so a
fine grid costs little; it ranks them with the ``m3`` search's own code
(:meth:`HeadScores.rank <m3kit.store.query.HeadScores.rank>`), so to the last bit.

:func:`evaluate_search` (:func:`evaluate_searches`) scores one (several)
:class:`SearchSettings` on a retrieval task the same way
(for reports: the calibrated fusion on held-out data).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from m3kit.evaluation import (
    check_identical_ids,
    checked_cutoffs,
    evaluate_rankings,
    judged_queries,
    ndcg_at_k,
)
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Head
from m3kit.significance import best_of_p_value
from m3kit.store.calibration_task import (
    CalibrationTask,
    K,
    calibration_task,
    per_query_ndcg,
    query_vectors,
    run_task,
)
from m3kit.store.fusion_calibration import FusionCalibration, calibrated_encoder_identity
from m3kit.store.query import QueryOptions
from m3kit.store.records import Fusion
from m3kit.store.search_settings import BGE_M3_PUBLISHED, SearchSettings, is_bge_m3_architecture
from m3kit.store.sparse_cut import SparseCut, nothing_to_cut, sparse_cut_of

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder

__all__ = [
    "calibrate_checkpoint",
    "calibrate_fusion",
    "evaluate_search",
    "evaluate_searches",
    "weight_grid",
]

logger = logging.getLogger(__name__)


def weight_grid(step: float, heads: int) -> list[tuple[float, ...]]:
    """Weights on the simplex (non-negative, summing to 1) in steps of ``step``.

    >>> weight_grid(0.5, 2)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    >>> len(weight_grid(0.1, 3))
    66

    Raises:
        ValueError: ``step`` does not divide 1 (0, a negative step, NaN included).
    """
    n = round(1 / step) if math.isfinite(step) and 0 < step <= 1 else 0
    if n < 1 or not math.isclose(n * step, 1.0):
        raise ValueError(f"grid step must divide 1 (e.g. 0.1, 0.05), got {step}")
    out: list[tuple[float, ...]] = []

    def fill(prefix: tuple[int, ...], left: int) -> None:
        if len(prefix) == heads - 1:
            out.append(tuple(round(x / n, 6) for x in (*prefix, left)))
            return
        for i in range(left + 1):
            fill((*prefix, i), left - i)

    fill((), n)
    return out


@dataclass(frozen=True)
class _Choice:
    settings: SearchSettings
    p_value: float | None  # None: not tested (gain below min_gain, or alpha 1.0)


def _best(
    scored: Sequence[tuple[SearchSettings, np.ndarray]], min_gain: float, alpha: float
) -> _Choice:
    """The best setting (first of equals) by mean nDCG@10, unless it beats the first one (the
    model's uncalibrated default) by less than ``min_gain``, or by a gain the sign-flip test
    over every setting tried (:func:`m3kit.significance.best_of_p_value`) finds more likely
    than ``alpha`` by chance: then the first. A small validation set ranks many settings within
    noise of each other, and the best of dozens beats the default by luck alone; keeping the
    default there avoids fitting the noise.
    """
    if not scored:
        raise ValueError("no setting was measured")
    means = [float(per_query.mean()) for _, per_query in scored]
    best = 0
    for i, value in enumerate(means[1:], start=1):
        if value > means[best] + 1e-12:
            best = i
    if best == 0 or means[best] - means[0] < min_gain:
        return _Choice(scored[0][0], None)
    if alpha >= 1.0:  # the test is off: the best measured is kept
        return _Choice(scored[best][0], None)
    # the setting chosen (the first of means equal up to rounding) is the one tested
    p_value = best_of_p_value(np.stack([q for _, q in scored[1:]]), scored[0][1], best=best - 1)
    if p_value > alpha:
        logger.info(
            "kept %s: %s gained %.4f nDCG@10 on the validation queries, but a gain that "
            "large is chance with p = %.3f > alpha = %g",
            scored[0][0].describe(),
            scored[best][0].describe(),
            means[best] - means[0],
            p_value,
            alpha,
        )
        return _Choice(scored[0][0], p_value)
    return _Choice(scored[best][0], p_value)


def calibrate_fusion(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    grid_step: float = 0.1,
    min_gain: float = 0.005,
    alpha: float = 0.05,
    candidates: int | None = None,
    max_length: int | None = None,
    show_progress: bool = False,
    sparse_top_k: int | None = None,
    sparse_min_weight: float | None = None,
    ignore_identical_ids: bool = False,
) -> FusionCalibration:
    """Measure which search settings rank a validation set best for ``encoder``.

    Tried, for a collection with ColBERT vectors: RRF and DBSF each followed by ColBERT
    rerank, and the ``m3`` weighted sum of all three heads over a grid of weights; for dense
    + sparse alone: RRF, DBSF and the weighted sum of the two. Each setting is scored by mean
    nDCG@10 over the judged queries; the best (the first of equals, in that order) is kept if
    it beats the model's uncalibrated default (tried first: RRF, or for a BGE-M3-shaped model
    FlagEmbedding's published ``m3`` weights 0.4 / 0.2 / 0.4,
    :func:`~m3kit.store.search_settings.is_bge_m3_architecture`) by at least ``min_gain`` and
    the gain passes a paired sign-flip test over the queries at level ``alpha``, taking into
    account that it is the best of every setting tried
    (:func:`m3kit.significance.best_of_p_value`); else that default is.

    Args:
        encoder: The model (every head it has is used). Its weights and the settings that
            decide its scores (pooling, ``max_length``, query instruction... as loaded) are
            recorded: the calibration serves this model loaded the same way only.
        corpus: ``{doc_id: text}`` validation passages (not the evaluation set).
        queries: ``{query_id: text}`` validation queries.
        qrels: ``{query_id: {doc_id: grade}}``.
        grid_step: Step of the weight grid (weights sum to 1; 0.1: 66 triples).
        min_gain: nDCG@10 a setting must gain over the default to replace it (default half a point:
            on 400 validation queries over 85 passages the top settings of a MiniLM-based
            model lay within 0.05 points of each other and their order did not hold on
            held-out articles, ``benchmarks/results/finetune_heldout.md``).
        alpha: Largest p-value at which the best setting replaces the default (default 0.05; 1.0
            turns the test off). Measured on squad_en: the ``m3`` weightings that beat RRF +
            ColBERT rerank by more than ``min_gain`` on 400 validation queries (p = 0.64 and
            0.55 by this test) ranked 0.2 nDCG@10 points below it on held-out articles; the
            dense + sparse weightings passed (p <= 0.006)
            (``benchmarks/results/finetune_significance_zen4.md``).
        candidates: Candidates per retriever (default: the store's ``max(4 * 10, 50)``);
            recorded in the settings when given. Below 10 every setting is scored with 10, as
            a search for 10 hits fetches at least that many.
        max_length: Truncation of passages and queries (recorded as ``measured_max_length``:
            the encoder loaded at this length uses the calibration too).
        show_progress: Progress bars.
        sparse_top_k: Sparse cut of the collection measured in, as ``M3Index.open`` takes it
            (:mod:`m3kit.store.sparse_cut`): keep only the ``k`` highest weights of every
            passage and query. A cut changes the sparse scores, so the weights fitted
            without one are not those for a cut collection: give the cut your collections
            are indexed with. Recorded as :attr:`FusionCalibration.sparse_cut`; an index
            with another cut warns that its searches use settings fitted to other scores.
        sparse_min_weight: Likewise, drop weights at or below this value (giving either
            setting sets the whole cut; neither: every weight kept).
        ignore_identical_ids: Search for a query whose id is a passage's id as if that
            passage were not in the collection, as ``evaluate_heads(...,
            ignore_identical_ids=True)`` and ``m3kit eval`` (by default) leave such hits out,
            as BEIR's evaluator does: in ArguAna-like data (the queries are corpus documents
            too) each query finds its own text first, an unjudged hit, and the settings would
            be fitted to how readily each head finds it. ``m3kit calibrate`` sets it unless
            ``--keep-identical-ids``.

    Returns:
        The calibration (save it beside the weights with :meth:`FusionCalibration.save`).

    Raises:
        ValueError: A bad setting (``grid_step``, ``min_gain``, ``alpha``, a sparse cut
            :class:`~m3kit.store.sparse_cut.SparseCut` refuses), a sparse cut for an encoder
            without a sparse head, a validation set with nothing to measure, or
            (``ignore_identical_ids``) a query that judges its own id relevant.
    """
    if not 0.0 <= min_gain < 1.0:
        raise ValueError(f"min_gain is an nDCG@10 difference in [0, 1), got {min_gain}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is a p-value threshold in (0, 1], got {alpha}")
    weight_grid(grid_step, 2)  # a bad step fails before anything is encoded
    heads = encoder.available_heads
    sparse, colbert = Head.SPARSE in heads, Head.COLBERT in heads
    cut = _sparse_cut(sparse_top_k, sparse_min_weight, sparse=sparse)
    # What a search for K hits with these settings fetches per retriever (``candidates``
    # below K: K); the m3 grid scores exactly that many, as the m3 plan would.
    budget = QueryOptions().per_retriever(K, candidates)
    scores: dict[str, float] = {}
    p_values: dict[str, float] = {}

    def measure(task: CalibrationTask, settings: SearchSettings, label: str) -> np.ndarray:
        per_query = per_query_ndcg(task, run_task(task, settings, K, budget))
        scores[label] = round(float(per_query.mean()), 6)
        return per_query

    def choose(measured: list[tuple[SearchSettings, np.ndarray]], group: str) -> SearchSettings:
        choice = _best(measured, min_gain, alpha)
        if choice.p_value is not None:
            p_values[group] = round(choice.p_value, 6)
        return choice.settings

    with calibration_task(
        encoder, corpus, queries, qrels, max_length, show_progress, cut, ignore_identical_ids
    ) as task:
        # the smallest p-value n queries can give is about 2**-n (every query gains)
        if alpha < 1.0 and 2.0 ** -len(task.qids) > alpha:
            logger.warning(
                "%d validation queries cannot show any setting better than the default at "
                "alpha = %g (the smallest p-value they can give is about %.3f): the model's "
                "uncalibrated default (RRF; FlagEmbedding's published weights for a "
                "BGE-M3-shaped model) is kept; give more "
                "validation queries, or alpha=1.0 to take the best measured",
                len(task.qids),
                alpha,
                2.0 ** -len(task.qids),
            )
        # the null setting (tried first, kept unless beaten): what the model ranks with
        # uncalibrated, FlagEmbedding's published weights for a BGE-M3-shaped model
        published = is_bge_m3_architecture(encoder)
        all_heads: SearchSettings | None = None
        if colbert:
            fusions = (Fusion.RRF, Fusion.DBSF) if sparse else (Fusion.RRF,)
            tried = [SearchSettings(fusion=f, rerank=True, candidates=candidates) for f in fusions]
            if published:
                tried.insert(0, BGE_M3_PUBLISHED.merged(candidates=candidates))
            measured = [(s, measure(task, s, f"{s.describe()} [all heads]")) for s in tried]
            grid = [
                (w[0], w[1] if sparse else 0.0, w[-1])
                for w in weight_grid(grid_step, 3 if sparse else 2)
            ]
            measured += _grid(
                task, grid, True, budget, candidates, scores, "all heads", show_progress
            )
            all_heads = choose(measured, "all heads")
        dense_sparse: SearchSettings | None = None
        if sparse:
            tried = [
                SearchSettings(fusion=f, rerank=False, candidates=candidates)
                for f in (Fusion.RRF, Fusion.DBSF)
            ]
            if published:
                tried.insert(0, BGE_M3_PUBLISHED.merged(rerank=False, candidates=candidates))
            measured = [(s, measure(task, s, f"{s.describe()} [dense+sparse]")) for s in tried]
            grid = [(w[0], w[1], 0.0) for w in weight_grid(grid_step, 2)]
            measured += _grid(
                task, grid, False, budget, candidates, scores, "dense+sparse", show_progress
            )
            dense_sparse = choose(measured, "dense+sparse")
        elif not colbert:  # dense only: nothing to fuse or rerank
            dense_sparse = SearchSettings(rerank=False, candidates=candidates)
        fingerprint = encoder_fingerprint(encoder)
        calibration = FusionCalibration(
            all_heads=all_heads,
            dense_sparse=dense_sparse,
            weights_digest=fingerprint.weights,
            queries=len(task.qids),
            scores=scores,
            encoder_identity=calibrated_encoder_identity(fingerprint),
            p_values=p_values,
            sparse_cut=cut,
            # the encoder loaded at this length gets it too (it was measured so)
            measured_max_length=(
                max_length if max_length is not None and max_length < encoder.max_length else None
            ),
        )
    logger.info(
        "calibrated on %d queries (%s): all heads %s; dense+sparse %s",
        calibration.queries,
        cut.describe(),
        all_heads.describe() if all_heads else "-",
        dense_sparse.describe() if dense_sparse else "-",
    )
    return calibration


def _sparse_cut(top_k: int | None, min_weight: float | None, *, sparse: bool) -> SparseCut:
    """The sparse cut a calibration measures with (``SparseCut()``: none).

    Raises:
        ValueError: A value :class:`SparseCut` refuses, or a cut without a sparse head.
    """
    cut = sparse_cut_of(top_k, min_weight)
    if cut is None:
        return SparseCut()
    if not sparse:
        raise nothing_to_cut(cut, "the encoder has no sparse head (a dense-only model)")
    return cut


def calibrate_checkpoint(
    folder: str | os.PathLike[str],
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    grid_step: float = 0.1,
    min_gain: float = 0.005,
    alpha: float = 0.05,
    candidates: int | None = None,
    max_length: int | None = None,
    device: str | None = None,
    show_progress: bool = False,
    sparse_top_k: int | None = None,
    sparse_min_weight: float | None = None,
    ignore_identical_ids: bool = False,
) -> FusionCalibration:
    """Calibrate the checkpoint in ``folder`` and save it there (``m3kit_search.json``).

    The model is loaded as it loads by default (the pooling, ``max_length`` and query
    instruction the checkpoint records), and from then on ``M3Index`` (so both retrievers, both
    vector stores and ``m3kit search``) ranks with the calibration whenever the checkpoint is
    loaded that way, unless told otherwise. Arguments as :func:`calibrate_fusion`
    (``max_length`` truncates the validation texts: the calibration is then also used by the
    model loaded at that length, recorded as ``measured_max_length``; ``sparse_top_k`` /
    ``sparse_min_weight``: the sparse cut of the collections it will search, recorded).

    Raises:
        ValueError: ``folder`` is not a local checkpoint folder.
    """
    from m3kit.encoder import M3Encoder

    sparse_cut_of(sparse_top_k, sparse_min_weight)  # its values checked before the model loads
    weight_grid(grid_step, 2)  # likewise
    if ignore_identical_ids:  # likewise
        check_identical_ids(judged_queries(qrels, among=queries))
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{path} is not a local checkpoint folder (a calibration is saved in it)")
    encoder = M3Encoder.from_pretrained(path, dtype="fp32", device=device)
    calibration = calibrate_fusion(
        encoder,
        corpus,
        queries,
        qrels,
        grid_step=grid_step,
        min_gain=min_gain,
        alpha=alpha,
        candidates=candidates,
        max_length=max_length,
        show_progress=show_progress,
        sparse_top_k=sparse_top_k,
        sparse_min_weight=sparse_min_weight,
        ignore_identical_ids=ignore_identical_ids,
    )
    saved = calibration.save(path)
    logger.info("search calibration written to %s", saved)
    return calibration


def _grid(
    task: CalibrationTask,
    grid: Sequence[tuple[float, float, float]],
    colbert: bool,
    budget: int,
    candidates: int | None,
    scores: dict[str, float],
    label: str,
    show_progress: bool,
) -> list[tuple[SearchSettings, np.ndarray]]:
    """Every weight triple of ``grid`` under the ``m3`` plan: one exact scoring per query;
    each setting with its per-query nDCG@10."""
    grid = [w for w in grid if any(w)]
    per_query = np.zeros((len(grid), len(task.qids)))
    for i, qid in enumerate(tqdm(task.qids, desc=f"m3 grid [{label}]", disable=not show_progress)):
        per_head = task.store.head_scores(
            **query_vectors(task, i, colbert),  # type: ignore[arg-type]
            candidates=budget,
        )
        for j, w in enumerate(grid):
            ranked = [task.doc_of[pid] for pid, _ in per_head.rank(w)[:K]]
            per_query[j, i] = ndcg_at_k(ranked, task.qrels[qid], K)
    out = []
    for w, row in zip(grid, per_query, strict=True):
        s = SearchSettings(fusion=Fusion.M3, weights=w, rerank=colbert, candidates=candidates)
        scores[f"{s.describe()} [{label}]"] = round(float(row.mean()), 6)
        out.append((s, row))
    return out


def evaluate_search(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    settings: SearchSettings,
    *,
    ks: Iterable[int] = (1, 5, 10, 100),
    max_length: int | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Retrieval metrics of one ranking through the store (what a search returns).

    Each cut-off ``k`` scores what a search ``k`` deep returns, with the candidate budget of
    a ``k=10`` search (unless ``settings.candidates`` says otherwise; at least ``k``
    candidates per retriever): the cut-offs within the budget share one search, each deeper
    one gets its own (fetching more candidates changes the fusion and the rerank pool, so a
    deeper search's top 10 is not a ``k=10`` search's). ``rerank=None`` means ColBERT rerank
    when the encoder has a ColBERT head.
    """
    return evaluate_searches(
        encoder,
        corpus,
        queries,
        qrels,
        {"": settings},
        ks=ks,
        max_length=max_length,
        show_progress=show_progress,
    )[""]


def evaluate_searches(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    settings: Mapping[str, SearchSettings],
    *,
    ks: Iterable[int] = (1, 5, 10, 100),
    max_length: int | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_search` of several rankings, ``{label: metrics}``; the corpus and the
    queries are encoded and stored once for all of them."""
    cutoffs = checked_cutoffs(ks)
    out: dict[str, dict[str, float]] = {}
    with calibration_task(encoder, corpus, queries, qrels, max_length, show_progress) as task:
        for label, one in settings.items():
            budget = one.candidates or QueryOptions().candidates(K)
            metrics: dict[str, float] = {}
            for depth, group in _search_depths(cutoffs, budget).items():
                run = run_task(task, one, depth, budget)
                metrics.update(evaluate_rankings(run, task.qrels, group))
            metrics["queries"] = metrics.pop("queries")  # last, as evaluate_rankings has it
            out[label] = metrics
    return out


def _search_depths(cutoffs: Sequence[int], budget: int) -> dict[int, list[int]]:
    """``{search depth: cut-offs it scores}``: one search for the cut-offs within the
    candidate ``budget`` (their top ``k`` is a ``k``-deep search's), one per deeper cut-off.

    >>> _search_depths([1, 5, 10, 100], 50)
    {10: [1, 5, 10], 100: [100]}
    >>> _search_depths([60, 200], 50)
    {60: [60], 200: [200]}
    """
    within = [k for k in cutoffs if k <= budget]
    depths: dict[int, list[int]] = {max(within): within} if within else {}
    depths.update({k: [k] for k in cutoffs if k > budget})
    return depths
