"""Retrieval metrics (pure functions) and a BEIR-layout loader.

Metric definitions follow ``trec_eval`` / BEIR (``pytrec_eval``): relevance grades are the
qrels values, nDCG uses linear gains ``rel / log2(rank + 1)`` and the ideal ranking of the
judged documents; only grades ``> 0`` count as relevant for MRR, hit and recall. A ranking
that repeats an id (e.g. several chunks of one document mapped to their document) counts
the first occurrence only. Ids are compared as strings (``str(id)``) everywhere: ranked ids,
relevant ids, run and qrels query ids.
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from m3kit.jsonl import iter_json_rows, iter_text_lines

__all__ = [
    "BeirDataset",
    "check_identical_ids",
    "drop_identical_ids",
    "evaluate_rankings",
    "hit_at_k",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]

logger = logging.getLogger(__name__)

Relevance = Mapping[str, float] | set[str] | frozenset[str]


def _grades(relevant: Relevance) -> dict[str, float]:
    if isinstance(relevant, (set, frozenset)):
        return {str(doc_id): 1.0 for doc_id in relevant}
    return {str(doc_id): float(grade) for doc_id, grade in relevant.items()}


def _unusable_ranking(ranked_ids: object, whose: str) -> ValueError | None:
    """The error for a ranking given as one string (read as its characters), as a mapping
    (``{doc_id: score}``, read in insertion order, not by score) or as a set (no order), else
    ``None``."""
    if isinstance(ranked_ids, str):
        return ValueError(
            f"{whose} is the single string {ranked_ids[:60]!r}, which would be read as one "
            "document id per character: give a list of document ids, best first"
        )
    if isinstance(ranked_ids, Mapping):
        return ValueError(
            f"{whose} is a mapping ({{doc_id: score}}), which would be read in insertion "
            "order, not by score: give a list of document ids, best first (e.g. "
            "sorted(scores, key=scores.__getitem__, reverse=True))"
        )
    if isinstance(ranked_ids, (set, frozenset)):
        return ValueError(
            f"{whose} is a set, which has no order: give a list of document ids, best first"
        )
    return None


def _cutoff(k: object) -> int:
    """``k`` as an ``int``; anything but an int ``>= 1`` is an error, worded as a search's
    ``k`` (a float such as ``1.5`` scored the whole ranking; ``True`` would be read as 1)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1, not {k!r}")
    return int(k)


def checked_cutoffs(ks: Iterable[object]) -> list[int]:
    """The cut-offs ``ks``, each checked as :func:`ndcg_at_k` checks ``k``, sorted, once each.

    Raises:
        ValueError: No cut-off, or one that is not an integer ``>= 1``.

    >>> checked_cutoffs((10, 1, 10))
    [1, 10]
    """
    cutoffs = sorted({_cutoff(k) for k in ks})
    if not cutoffs:
        raise ValueError("give at least one cut-off k")
    return cutoffs


def _top_k(ranked_ids: Sequence[str], k: int) -> list[str]:
    k = _cutoff(k)
    error = _unusable_ranking(ranked_ids, "the ranking")
    if error is not None:
        raise error
    seen: set[str] = set()
    top: list[str] = []
    for raw_id in ranked_ids:
        doc_id = str(raw_id)
        if doc_id in seen:
            continue
        seen.add(doc_id)
        top.append(doc_id)
        if len(top) == k:
            break
    return top


def ndcg_at_k(ranked_ids: Sequence[str], relevant: Relevance, k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` results.

    Args:
        ranked_ids: Document ids, best first.
        relevant: ``{doc_id: grade}`` or a set of relevant ids (grade 1).
        k: Cut-off.

    Returns:
        nDCG@k in ``[0, 1]``; 0.0 when nothing is relevant.

    >>> ndcg_at_k(["a", "b", "c"], {"a"}, 10)
    1.0
    >>> round(ndcg_at_k(["x", "a"], {"a"}, 10), 4)  # 1 / log2(3)
    0.6309
    >>> round(ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 2), 4)
    0.8597
    >>> ndcg_at_k(["x", "a"], {"a"}, 1)
    0.0
    >>> ndcg_at_k([1, 2], {1: 1}, 10)  # ids compare as strings
    1.0
    """
    grades = _grades(relevant)
    dcg = sum(
        grades.get(doc_id, 0.0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(_top_k(ranked_ids, k), start=1)
        if grades.get(doc_id, 0.0) > 0
    )
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked_ids: Sequence[str], relevant: Relevance, k: int) -> float:
    """Reciprocal rank of the first relevant result within the first ``k`` (0.0 if none).

    >>> mrr_at_k(["x", "y", "a"], {"a"}, 10)
    0.3333333333333333
    >>> mrr_at_k(["x", "y", "a"], {"a"}, 2)
    0.0
    """
    grades = _grades(relevant)
    for rank, doc_id in enumerate(_top_k(ranked_ids, k), start=1):
        if grades.get(doc_id, 0.0) > 0:
            return 1.0 / rank
    return 0.0


def hit_at_k(ranked_ids: Sequence[str], relevant: Relevance, k: int) -> float:
    """1.0 if any relevant document is among the first ``k`` results, else 0.0.

    >>> hit_at_k(["x", "a"], {"a"}, 2), hit_at_k(["x", "a"], {"a"}, 1)
    (1.0, 0.0)
    """
    grades = _grades(relevant)
    return float(any(grades.get(doc_id, 0.0) > 0 for doc_id in _top_k(ranked_ids, k)))


def recall_at_k(ranked_ids: Sequence[str], relevant: Relevance, k: int) -> float:
    """Share of the relevant documents found among the first ``k`` results.

    >>> recall_at_k(["a", "x", "b"], {"a", "b", "c", "d"}, 3)
    0.5
    >>> recall_at_k(["a"], set(), 3)
    0.0
    """
    grades = _grades(relevant)
    positives = {doc_id for doc_id, g in grades.items() if g > 0}
    if not positives:
        return 0.0
    return len(positives.intersection(_top_k(ranked_ids, k))) / len(positives)


def judged_queries(
    qrels: Mapping[str, Mapping[str, float]], among: Iterable[object] | None = None
) -> dict[str, Mapping[str, float]]:
    """The judgements of the queries with a relevant document (a grade ``> 0``), keyed by
    ``str(query id)``; with ``among``, of those queries only (ids compared as strings). Every
    scorer of a query set (:func:`evaluate_rankings`, ``evaluate_heads``, the fusion
    calibration) picks its queries with it.

    >>> judged_queries({"q1": {"a": 1}, "q2": {"b": 0}, 3: {"c": 2}}, among=["q1", 3, "q9"])
    {'q1': {'a': 1}, '3': {'c': 2}}
    """
    wanted = None if among is None else {str(q) for q in among}
    return {
        str(q): rel
        for q, rel in qrels.items()
        if (wanted is None or str(q) in wanted) and any(float(g) > 0 for g in rel.values())
    }


def drop_identical_ids(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]]
) -> dict[str, list[str]]:
    """``run`` without the hits whose id is their query's id, as BEIR's evaluator drops them
    (``EvaluateRetrieval.evaluate(ignore_identical_ids=True)``, its default).

    In BEIR datasets whose queries are also corpus documents (ArguAna, Quora) a query finds
    itself first, and that hit is not judged; BEIR's published scores leave it out.

    Raises:
        ValueError: A query judges its own id relevant (grade > 0): then the query and
            document ids are separate namespaces that happen to meet, and dropping the hit
            would hide a relevant document.

    >>> drop_identical_ids({"q1": ["q1", "d2"], "q2": ["d2"]}, {"q1": {"d2": 1}})
    {'q1': ['d2'], 'q2': ['d2']}
    """
    check_identical_ids(qrels)
    return {str(q): [d for d in ranked if str(d) != str(q)] for q, ranked in run.items()}


def check_identical_ids(qrels: Mapping[str, Mapping[str, float]]) -> None:
    """Refuse qrels in which a query judges its own id relevant (grade > 0): hits with the
    query's id cannot be dropped from them (:func:`drop_identical_ids`, which checks this
    first; a scorer that drops them from many runs of one qrels checks once).

    Raises:
        ValueError: Such a query, named.

    >>> check_identical_ids({"q1": {"d2": 1, "q1": 0}})  # grade 0: not relevant
    """
    for qid, rel in qrels.items():
        if any(str(d) == str(qid) and float(g) > 0 for d, g in rel.items()):
            raise ValueError(
                f"query {qid!r} judges the document with its own id relevant: the query and "
                "document ids are separate namespaces here, so hits with the query's id "
                "must be kept (BEIR's ignore_identical_ids=False; m3kit eval "
                "--keep-identical-ids)"
            )


def evaluate_rankings(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = (1, 5, 10, 100),
    *,
    ignore_identical_ids: bool = False,
) -> dict[str, float]:
    """Mean nDCG, MRR, hit rate and recall at each cut-off over the judged queries.

    Every query of ``qrels`` with at least one relevant document is scored; a query missing
    from ``run`` scores 0 (as in ``trec_eval -c``). Queries of ``run`` without judgements
    are ignored. Query ids are compared as strings; a warning is logged when fewer than half
    of the scored queries are in ``run`` (usually ids that do not match).

    Args:
        run: ``{query_id: [doc_id, ...]}`` best first.
        qrels: ``{query_id: {doc_id: grade}}``.
        ks: Cut-offs.
        ignore_identical_ids: Drop every hit whose id is its query's id before scoring
            (:func:`drop_identical_ids`, BEIR's default); rank one deeper than the largest
            cut-off so that a dropped hit leaves the list full.

    Returns:
        ``{"ndcg@10": ..., "mrr@10": ..., "hit@10": ..., "recall@10": ..., ...}`` for each k,
        plus ``"queries"`` (the number of queries averaged).

    Raises:
        ValueError: If no query in ``qrels`` has a relevant document, a ranking is a
            single string, a mapping or a set (not a list of ids, best first), a cut-off is
            not an int ``>= 1``, or (``ignore_identical_ids``) a query judges its own id
            relevant.

    >>> m = evaluate_rankings({"q1": ["a", "b"], "q2": ["c", "d"]},
    ...                       {"q1": {"a": 1}, "q2": {"d": 1}}, ks=(1, 2))
    >>> m["hit@1"], m["mrr@2"], m["recall@2"], m["queries"]
    (0.5, 0.75, 1.0, 2.0)
    """
    cutoffs = checked_cutoffs(ks)
    judged = judged_queries(qrels)
    if not judged:
        raise ValueError("qrels hold no query with a relevant document")
    ranked_runs: Mapping[str, Sequence[str]] = {str(qid): r for qid, r in run.items()}
    for qid, ranked in ranked_runs.items():
        error = _unusable_ranking(ranked, f"the ranking of query {qid!r}")
        if error is not None:
            raise error
    if ignore_identical_ids:
        ranked_runs = drop_identical_ids(ranked_runs, judged)
    found = sum(qid in ranked_runs for qid in judged)
    if found < len(judged) / 2:
        logger.warning(
            "only %d of the %d judged queries are in the run (they score 0): do the run's "
            "query ids match the qrels' (e.g. %r)?",
            found,
            len(judged),
            next(iter(judged)),
        )
    metrics = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "hit": hit_at_k, "recall": recall_at_k}
    totals = {f"{name}@{k}": 0.0 for k in cutoffs for name in metrics}
    for qid, rel in judged.items():
        ranked = list(ranked_runs.get(qid, ()))
        for k in cutoffs:
            for name, fn in metrics.items():
                totals[f"{name}@{k}"] += fn(ranked, rel, k)
    n = float(len(judged))
    result = {key: value / n for key, value in totals.items()}
    result["queries"] = n
    return result


class BeirDataset(NamedTuple):
    """What :func:`load_beir` returns (unpacks as ``corpus, queries, qrels``)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]


def _row_id(row: Mapping[str, object], where: str) -> str:
    value = row.get("_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'{where}: "_id" must be a string (or an integer), got {value!r}')
    return str(value)


def _row_text(row: Mapping[str, object], key: str, where: str, *, optional: bool = False) -> str:
    value = row.get(key)
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f'{where}: "{key}" must be a string, got {value!r}')
    return value


def _read_texts(path: Path, *, with_title: bool = False) -> dict[str, str]:
    """``{_id: text}`` of a BEIR ``corpus.jsonl`` / ``queries.jsonl``; a repeated ``_id``
    or a ``text`` (``title``) that is not a string is an error naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing (BEIR layout needs corpus.jsonl, queries.jsonl)"
        )
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line_no, row in iter_json_rows(path):
        where = f"{path}:{line_no}"
        if "_id" not in row or "text" not in row:
            raise ValueError(f'{where}: a row needs "_id" and "text"')
        row_id = _row_id(row, where)
        if row_id in texts:
            raise ValueError(f"{where}: _id {row_id!r} repeats line {first_line[row_id]}")
        text = _row_text(row, "text", where)
        title = _row_text(row, "title", where, optional=True) if with_title else ""
        texts[row_id] = f"{title} {text}".strip()
        first_line[row_id] = line_no
    return texts


def _qrels_path(root: Path, split: str | None) -> Path:
    """The qrels file :func:`load_beir` reads (its docstring gives the rules)."""
    top = root / "qrels.tsv"
    folder = root / "qrels"
    splits = sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []
    if top.is_file() and splits:
        named = splits[0] if len(splits) == 1 else "{" + ",".join(splits) + "}"
        raise ValueError(
            f"{root} holds both qrels.tsv and qrels/{named}.tsv: it is not clear which "
            "judgements to use; remove one"
        )
    if split is not None:
        if split in splits:
            return folder / f"{split}.tsv"
        if top.is_file():
            raise FileNotFoundError(
                f"no qrels/{split}.tsv in {root}: its qrels.tsv names no split; leave the "
                "split unset (no --split / --validation-split) to read it"
            )
        found = f"splits found: {', '.join(splits)}" if splits else "no qrels/ files found"
        raise FileNotFoundError(f"no qrels/{split}.tsv in {root} ({found})")
    if top.is_file():
        return top
    if len(splits) == 1:
        return folder / f"{splits[0]}.tsv"
    if splits:
        raise ValueError(
            f"{root}/qrels holds several splits ({', '.join(splits)}): name the one to use "
            "(split=...; m3kit eval / calibrate: --split, m3kit finetune: --validation-split)"
        )
    raise FileNotFoundError(f"no qrels in {root}: expected qrels.tsv or qrels/<split>.tsv")


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_no, fields)`` of a tab-separated file, read literally: BEIR qrels quote
    nothing, and a stray ``"`` must not join the lines after it into one field."""
    reader = csv.reader(iter_text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    for fields in reader:
        yield reader.line_num, [f.rstrip("\n") for f in fields]


def load_beir(
    folder: str | Path, *, split: str | None = None, with_title: bool = True
) -> BeirDataset:
    """Read a BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl`` and qrels.

    Qrels (a header line ``query-id corpus-id score`` is skipped) come from one file:

    * ``split`` unset: the top-level ``qrels.tsv``, or BEIR's ``qrels/<split>.tsv`` when
      ``qrels/`` holds exactly one split; several splits (e.g. ``dev`` and ``test``) are an
      error naming them, so that no run calibrates on the test split by default.
    * ``split`` given: ``qrels/<split>.tsv``; an error when it is missing (naming the
      splits found; a top-level ``qrels.tsv`` has no split name: leave ``split`` unset).
    * A folder holding both ``qrels.tsv`` and ``qrels/*.tsv`` files is an error.

    Only queries that have qrels are returned.

    Args:
        folder: The dataset folder (e.g. ``shared/data/squad_en``).
        split: Qrels split of a ``qrels/`` directory (``"dev"``, ``"test"``, ...).
        with_title: Passage text is ``(title + " " + text).strip()`` (the usual reading of a
            BEIR entry, and the text of the ``train.jsonl.gz`` rows); else ``text`` only.

    Returns:
        ``BeirDataset(corpus={doc_id: text}, queries={qid: text}, qrels={qid: {doc_id: grade}})``.

    Raises:
        FileNotFoundError: A file is missing (or the named split).
        ValueError: The qrels file is ambiguous (see above); a malformed line, an ``_id``
            or a (query, corpus id) judgement given twice, a ``text`` or ``title`` that is not
            a string (a null ``title`` is empty), or a score that is not a finite number (the
            message names file and line).
    """
    root = Path(folder)
    qrels_path = _qrels_path(root, split)
    corpus = _read_texts(root / "corpus.jsonl", with_title=with_title)
    all_queries = _read_texts(root / "queries.jsonl")
    qrels: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for line_no, fields in _tsv_rows(qrels_path):
        if not fields or (line_no == 1 and fields[0] == "query-id"):
            continue
        if len(fields) != 3:
            raise ValueError(f"{qrels_path}:{line_no}: expected query-id, corpus-id, score")
        qid, doc_id, score = fields
        try:
            grade = float(score)
        except ValueError as e:
            raise ValueError(f"{qrels_path}:{line_no}: score {score!r} is not a number") from e
        if not math.isfinite(grade):
            raise ValueError(f"{qrels_path}:{line_no}: score {score!r} is not a finite number")
        if doc_id not in corpus:
            raise ValueError(f"{qrels_path}:{line_no}: corpus id {doc_id!r} is not in the corpus")
        if qid not in all_queries:
            raise ValueError(f"{qrels_path}:{line_no}: query id {qid!r} is not in the queries")
        if (qid, doc_id) in first_line:
            raise ValueError(
                f"{qrels_path}:{line_no}: query {qid!r} and corpus id {doc_id!r} are judged "
                f"again (first on line {first_line[qid, doc_id]})"
            )
        first_line[qid, doc_id] = line_no
        qrels.setdefault(qid, {})[doc_id] = grade
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)
