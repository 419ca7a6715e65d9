"""Retrieval evaluation of each M3 head (dense, sparse, ColBERT) and their fusion.

Exhaustive scoring of a small corpus (no index): the score matrices are the vectorised
forms of :mod:`m3kit.scoring` (``dense_score``, ``sparse_score``, ``maxsim``, ``m3_score``,
``reciprocal_rank_fusion``), checked against them in the tests. Reports go to JSON, a
markdown table and a PNG bar chart (matplotlib, imported late with the Agg backend).

Rankings do not depend on the cut-offs asked for: equal scores are ordered by document id,
and ``rrf`` fuses each head's first :data:`RRF_DEPTH` documents (``rrf_depth``) whatever
the cut-offs, so a metric at one cut-off is the same whichever others are computed.

How these rankings relate to a search in the store (:meth:`m3kit.store.M3Index.search`):

* Each head scores as the store does (dense dot product of normalised vectors, sparse
  lexical matching, ColBERT MaxSim averaged over query tokens), but over every passage: a
  store search ranks only its dense and sparse candidates (``max(4 * k, 50)`` per
  retriever), so it can miss a passage no candidate list holds.
* ``fused`` ranks as an ``m3`` search with the same ``weights`` (the store divides the
  weights by their sum, which does not change the order), on every passage. Its weights are
  FlagEmbedding's published 0.4 / 0.2 / 0.4 unless given, not a checkpoint's calibration.
* ``rrf`` is *not* the store's ``rrf`` search: it fuses the rankings of all evaluated heads,
  ColBERT's included; the store fuses dense and sparse candidates with RRF and then, with
  ColBERT vectors in the collection (the default), reranks them by ColBERT alone.
* Passages are encoded whole, truncated at ``max_length``; an index truncates at the
  encoder's own window, or, given a ``chunker``, splits each document into chunks.
* Sparse vectors keep every weight unless given the index's sparse cut (``sparse_top_k`` /
  ``sparse_min_weight``, :mod:`m3kit.store.sparse_cut`), which cuts passages and queries as
  that index cuts what it stores and searches with; the report records it
  (:attr:`RetrievalReport.sparse_cut`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from m3kit.encode_sets import encode_corpus_and_queries
from m3kit.encoder import M3Encoder
from m3kit.evaluation import check_identical_ids, evaluate_rankings, judged_queries
from m3kit.outputs import Head, M3Output
from m3kit.scoring import DEFAULT_M3_WEIGHTS, dense_score, reciprocal_rank_fusion

if TYPE_CHECKING:
    from m3kit.store.sparse_cut import SparseCut

__all__ = [
    "RRF_DEPTH",
    "RetrievalReport",
    "comparison_table",
    "evaluate_heads",
    "score_matrix",
    "sparse_cut_line",
    "write_report",
]

FUSED = "fused"  # weighted M3 score (m3_score) of the heads
RRF = "rrf"  # reciprocal rank fusion of the heads' rankings
DEFAULT_METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@10", "recall@100")
#: Documents of each head's ranking that ``rrf`` fuses (fixed, so a metric does not depend on
#: the other cut-offs asked for; the store's retrievers default to ``max(4·k, 50)`` candidates).
RRF_DEPTH = 100


@dataclass(frozen=True)
class RetrievalReport:
    """Metrics per ranking method (``dense``, ``sparse``, ``colbert``, ``fused``, ``rrf``).

    Attributes:
        metrics: ``{method: {metric: value}}``.
        sparse_cut: The sparse cut of the sparse vectors scored (``SparseCut()``: every
            weight kept); ``None`` when no sparse head was scored (or not recorded).
    """

    metrics: dict[str, dict[str, float]]
    sparse_cut: SparseCut | None = None

    def to_dict(self) -> dict[str, dict[str, float]]:
        """The metrics (the cut goes to the report's ``meta``, :func:`write_report`)."""
        return {k: dict(v) for k, v in self.metrics.items()}


def score_matrix(queries: M3Output, docs: M3Output, head: Head) -> npt.NDArray[np.float32]:
    """All query x document scores ``[nq, nd]`` of one head."""
    if head is Head.DENSE:
        return np.stack([dense_score(q, docs.dense) for q in queries.dense]).astype(np.float32)
    if head is Head.SPARSE:
        return _sparse_matrix(queries, docs)
    return _colbert_matrix(queries, docs)


def _sparse_csr(out: M3Output, vocab: int) -> torch.Tensor:
    rows = np.concatenate([np.full(v.indices.size, i) for i, v in enumerate(out.sparse)] + [[]])
    cols = np.concatenate([v.indices for v in out.sparse] + [np.zeros(0, np.int64)])
    vals = np.concatenate([v.values for v in out.sparse] + [np.zeros(0, np.float32)])
    index = torch.from_numpy(np.stack([rows.astype(np.int64), cols.astype(np.int64)]))
    return torch.sparse_coo_tensor(
        index,
        torch.from_numpy(vals.astype(np.float64)),
        (len(out.sparse), vocab),
        check_invariants=True,
    ).coalesce()


def _sparse_matrix(queries: M3Output, docs: M3Output) -> npt.NDArray[np.float32]:
    """``sparse_score`` for every pair, as one sparse-sparse product (float64 sums)."""
    vocab = 1 + max(
        [int(v.indices.max()) for v in (*queries.sparse, *docs.sparse) if v.indices.size] or [0]
    )
    q = _sparse_csr(queries, vocab)
    d = _sparse_csr(docs, vocab)
    with warnings.catch_warnings():  # torch calls its sparse-CSR path "beta"; results are exact
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        product = torch.sparse.mm(q, d.t().coalesce())
    return product.to_dense().numpy().astype(np.float32)


def _colbert_matrix(queries: M3Output, docs: M3Output) -> npt.NDArray[np.float32]:
    """``maxsim`` for every pair: one product with all document tokens, max per document."""
    lengths = [d.shape[0] for d in docs.colbert]
    out = np.zeros((len(queries.colbert), len(lengths)), dtype=np.float32)
    nonempty = [i for i, n in enumerate(lengths) if n > 0]
    if not nonempty:
        return out
    tokens = np.concatenate([docs.colbert[i] for i in nonempty])
    starts = np.cumsum([0] + [lengths[i] for i in nonempty])[:-1]
    for qi, q in enumerate(queries.colbert):
        if q.shape[0] == 0:
            continue
        best = np.maximum.reduceat(q @ tokens.T, starts, axis=1)  # [tq, docs]
        out[qi, nonempty] = best.mean(axis=0)
    return out


def _rank(scores: npt.NDArray[np.float32], doc_ids: Sequence[str], top_k: int) -> list[list[str]]:
    """The first ``top_k`` document ids of each row, by score descending, then by id.

    The order does not depend on ``top_k``: every document tied with the ``top_k``-th score
    is sorted before the list is cut, so a shorter list is a prefix of a longer one.
    """
    n_docs = scores.shape[1]
    k = min(top_k, n_docs)
    id_rank = np.empty(n_docs, dtype=np.int64)
    id_rank[sorted(range(n_docs), key=doc_ids.__getitem__)] = np.arange(n_docs)
    out = []
    for row in np.nan_to_num(scores, nan=-np.inf):  # a NaN score ranks last, drops nothing
        kth = np.partition(row, n_docs - k)[n_docs - k]  # the k-th largest score
        candidates = np.flatnonzero(row >= kth)
        order = np.lexsort((id_rank[candidates], -row[candidates]))[:k]
        out.append([doc_ids[j] for j in candidates[order]])
    return out


def _rrf(rankings: Sequence[Sequence[str]], depth: int, top_k: int) -> list[str]:
    """Reciprocal rank fusion of each ranking's first ``depth`` ids; ties by id."""
    scores = reciprocal_rank_fusion([ranking[:depth] for ranking in rankings])
    return sorted(scores, key=lambda d: (-scores[d], d))[:top_k]


def _fused_weights(weights: Sequence[float], order: Sequence[Head]) -> dict[Head, float]:
    """``{head: weight}`` of the ``fused`` score, checked as an ``m3`` search checks them.

    Raises:
        ValueError: Not three finite numbers ``>= 0`` (or all 0), or (two heads or more)
            every evaluated head weighted 0: the fused scores would all be 0, a ranking by
            document id.
    """
    from m3kit.store.search_settings import check_m3_weights

    values = check_m3_weights(weights)  # as an m3 search checks them
    w = dict(zip((Head.DENSE, Head.SPARSE, Head.COLBERT), values, strict=True))
    if len(order) > 1 and not any(w[h] > 0 for h in order):
        raise ValueError(
            f"weights {values} give every evaluated head ({', '.join(h.value for h in order)}) "
            "weight 0, so every fused score would be 0: give one of them a positive weight"
        )
    return w


def evaluate_heads(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    heads: Iterable[Head | str] | None = None,
    weights: Sequence[float] = DEFAULT_M3_WEIGHTS,
    ks: Iterable[int] = (1, 5, 10, 100),
    max_length: int | None = None,
    rrf_depth: int = RRF_DEPTH,
    show_progress: bool = False,
    sparse_top_k: int | None = None,
    sparse_min_weight: float = 0.0,
    ignore_identical_ids: bool = False,
) -> RetrievalReport:
    """Rank the whole corpus for every query with each head and with their fusion.

    Args:
        encoder: The model to evaluate.
        corpus: ``{doc_id: text}``.
        queries: ``{query_id: text}`` (encoded with the encoder's query instruction).
        qrels: ``{query_id: {doc_id: grade}}``; the metrics average the judged queries of
            ``queries`` (judgements of other queries are left out, as the fusion calibration
            leaves them).
        heads: Heads to evaluate (default: all the encoder has).
        weights: ``[dense, sparse, colbert]`` weights of the ``fused`` score (``m3_score``);
            heads not evaluated count 0.
        ks: Metric cut-offs (they do not change the rankings: see the module docstring).
        max_length: Truncation of passages and queries.
        rrf_depth: Documents of each head's ranking that ``rrf`` fuses; a cut-off above it
            sees at most the fused union of those lists.
        show_progress: Progress bars while encoding.
        sparse_top_k: The sparse cut of the collections the numbers are for, as
            ``M3Index.open`` takes it (:mod:`m3kit.store.sparse_cut`): keep only the ``k``
            highest sparse weights of every passage and query. It changes the ``sparse``,
            ``fused`` and ``rrf`` rows; recorded as :attr:`RetrievalReport.sparse_cut`.
        sparse_min_weight: Likewise, drop sparse weights at or below this value.
        ignore_identical_ids: Leave out of every ranking the passage whose id is the query's
            id, as BEIR's evaluator does by default (ArguAna and Quora queries are corpus
            documents too, and would find themselves first);
            :func:`~m3kit.evaluation.drop_identical_ids`.

    Returns:
        Metrics for each head, ``fused`` and ``rrf`` (the last two with two or more heads).

    Raises:
        ValueError: No query of ``queries`` has a relevant passage in ``qrels``; bad
            ``weights`` or ``rrf_depth``, a sparse cut an index refuses
            (``sparse_top_k`` not a positive int, ``sparse_min_weight`` negative, NaN or
            infinite), or a cut without the sparse head among the evaluated heads; with
            ``ignore_identical_ids``, a query that judges its own id relevant.
    """
    wanted = encoder.available_heads if heads is None else Head.parse(heads)
    order = [h for h in (Head.DENSE, Head.SPARSE, Head.COLBERT) if h in wanted]
    w = _fused_weights(weights, order)
    cut = _sparse_cut(sparse_top_k, sparse_min_weight, order)
    doc_ids = list(corpus)
    qids = list(queries)
    qrels = _judgements_of(qids, qrels)
    if ignore_identical_ids:
        check_identical_ids(qrels)  # once, before anything is encoded or ranked
    docs, qs = encode_corpus_and_queries(
        encoder,
        [corpus[d] for d in doc_ids],
        [queries[q] for q in qids],
        heads=order,
        max_length=max_length,
        show_progress=show_progress,
        sparse_top_k=sparse_top_k,
        sparse_min_weight=sparse_min_weight,
    )
    cutoffs = tuple(ks)
    if rrf_depth < 1:
        raise ValueError(f"rrf_depth must be >= 1, got {rrf_depth}")
    depth = max(cutoffs)
    head_depth = max(depth, rrf_depth) if len(order) > 1 else depth
    # one deeper, then the query's own id dropped: lists as full as without the drop
    extra = 1 if ignore_identical_ids else 0

    def ranked(scores: npt.NDArray[np.float32], top_k: int) -> list[list[str]]:
        lists = _rank(scores, doc_ids, top_k + extra)
        if not ignore_identical_ids:
            return lists
        # drop_identical_ids without its check of the qrels, done once above
        return [
            [d for d in ids if str(d) != str(q)][:top_k] for q, ids in zip(qids, lists, strict=True)
        ]

    metrics: dict[str, dict[str, float]] = {}
    matrices = {h: score_matrix(qs, docs, h) for h in order}
    rankings: dict[str, list[list[str]]] = {}
    for head, matrix in matrices.items():
        rankings[head.value] = ranked(matrix, head_depth)
        metrics[head.value] = evaluate_rankings(
            dict(zip(qids, rankings[head.value], strict=True)), qrels, cutoffs
        )
    if len(order) > 1:
        fused = sum(float(w[h]) * matrices[h] for h in order)
        assert isinstance(fused, np.ndarray)
        run = dict(zip(qids, ranked(fused.astype(np.float32), depth), strict=True))
        metrics[FUSED] = evaluate_rankings(run, qrels, cutoffs)
        rrf_run = {
            qid: _rrf([rankings[h.value][i] for h in order], rrf_depth, depth)
            for i, qid in enumerate(qids)
        }
        metrics[RRF] = evaluate_rankings(rrf_run, qrels, cutoffs)
    return RetrievalReport(metrics, cut)


def _judgements_of(
    qids: Sequence[str], qrels: Mapping[str, Mapping[str, float]]
) -> dict[str, Mapping[str, float]]:
    """The judgements of the queries given (ids compared as strings), as
    :func:`~m3kit.store.calibration.calibrate_fusion` takes them: a judged query that is not
    among them cannot be ranked, and would score 0 in every metric.

    Raises:
        ValueError: None of the queries has a relevant passage (grade > 0) in ``qrels``.
    """
    judged = judged_queries(qrels, among=qids)
    if not judged:
        example = next(iter(qrels), None)
        raise ValueError(
            f"none of the queries given has a relevant passage in qrels (query ids such as "
            f"{qids[0] if qids else None!r}; qrels ids such as {example!r}): do the ids match?"
        )
    return judged


def _sparse_cut(top_k: int | None, min_weight: float, order: Sequence[Head]) -> SparseCut | None:
    """The cut of the sparse vectors scored (``None``: no sparse head evaluated).

    Raises:
        ValueError: A value an index's :class:`~m3kit.store.sparse_cut.SparseCut` refuses
            (the core's :func:`~m3kit.sparse_options.check_sparse_options` messages), or a
            cut given without the sparse head among ``order``.
    """
    from m3kit.store.sparse_cut import nothing_to_cut, sparse_cut_of

    cut = sparse_cut_of(top_k, min_weight)  # (``min_weight`` is a number: always a cut)
    assert cut is not None
    if Head.SPARSE in order:
        return cut
    if cut.cuts:  # (the defaults, every weight kept, are no cut to refuse)
        raise nothing_to_cut(
            cut,
            f"the evaluated heads ({', '.join(h.value for h in order)}) include no sparse head",
            "leave the sparse cut out or evaluate the sparse head",
        )
    return None


def comparison_table(
    reports: Mapping[str, RetrievalReport], metrics: Sequence[str] = DEFAULT_METRICS
) -> str:
    """Markdown table: one row per (model, method), one column per metric.

    >>> r = RetrievalReport({"dense": {"ndcg@10": 0.5, "mrr@10": 0.25}})
    >>> print(comparison_table({"before": r}, ["ndcg@10", "mrr@10"]))
    | model | method | ndcg@10 | mrr@10 |
    |---|---|---:|---:|
    | before | dense | 0.5000 | 0.2500 |
    """
    lines = [
        "| model | method | " + " | ".join(metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for name, report in reports.items():
        for method, values in report.metrics.items():
            cells = " | ".join(f"{values[m]:.4f}" if m in values else "-" for m in metrics)
            lines.append(f"| {name} | {method} | {cells} |")
    return "\n".join(lines)


def sparse_cut_line(reports: Mapping[str, RetrievalReport]) -> str | None:
    """The sparse cut each report's sparse vectors were scored with, in a line (``None``:
    no report scored sparse vectors).

    >>> from m3kit.store.sparse_cut import SparseCut
    >>> print(sparse_cut_line({"model": RetrievalReport({}, SparseCut(64))}))
    sparse vectors: model with sparse_top_k=64, sparse_min_weight=0.0
    """
    described = [
        f"{name} with {r.sparse_cut.describe()}"
        for name, r in reports.items()
        if r.sparse_cut is not None
    ]
    return f"sparse vectors: {'; '.join(described)}" if described else None


def write_report(
    reports: Mapping[str, RetrievalReport],
    folder: str | Path,
    *,
    metric: str = "ndcg@10",
    extra: Mapping[str, object] | None = None,
    caption: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.png`` (``metric`` per method/model).

    Args:
        reports: ``{model name: report}``.
        folder: Where the three files go (created if needed).
        metric: The metric the chart shows.
        extra: Stored under ``"meta"`` in ``report.json``.
        caption: A line written under the markdown table (e.g. the number of queries).

    The sparse cut of each report that scored sparse vectors
    (:attr:`RetrievalReport.sparse_cut`) goes to ``meta["sparse_cut"]``, ``{model name:
    {"top_k": ..., "min_weight": ...}}`` (``{"top_k": null, "min_weight": 0.0}``: every
    weight kept), and to a line under the markdown table.

    Returns:
        ``{"json": path, "markdown": path, "png": path}``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, object] = {name: r.to_dict() for name, r in reports.items()}
    cuts = {name: r.sparse_cut for name, r in reports.items() if r.sparse_cut is not None}
    meta = dict(extra or {})
    if cuts:
        meta["sparse_cut"] = {name: cut.to_dict() for name, cut in cuts.items()}
    if meta:
        payload["meta"] = meta
    paths = {"json": out / "report.json", "markdown": out / "report.md", "png": out / "report.png"}
    paths["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    lines = [comparison_table(reports)]
    cut_line = sparse_cut_line(reports)
    if cut_line:
        lines.append(cut_line)
    if caption:
        lines.append(caption)
    paths["markdown"].write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    _bar_chart(reports, metric, paths["png"])
    return paths


def _bar_chart(reports: Mapping[str, RetrievalReport], metric: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        from m3kit.errors import missing_extra

        raise missing_extra("matplotlib", "finetune", e) from e
    methods = list(dict.fromkeys(m for r in reports.values() for m in r.metrics))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3.6))
    width = 0.8 / max(1, len(reports))
    for i, (name, report) in enumerate(reports.items()):
        xs = [j + i * width for j in range(len(methods))]
        ys = [report.metrics.get(m, {}).get(metric, 0.0) for m in methods]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(reports) - 1) / 2 for j in range(len(methods))], methods)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
