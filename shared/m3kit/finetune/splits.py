"""Leak-free train / evaluation splits of a BEIR folder with FlagEmbedding training rows.

The shared data sets (``squad_en``, ``cmrc2018_zh``) ask the same questions in
``queries.jsonl`` and ``train.jsonl.gz``, so rows must be split by **article**: train on
the rows of one part of the articles, evaluate on the queries and passages of the rest.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from m3kit.evaluation import load_beir
from m3kit.finetune.data import TrainingExample, iter_jsonl, text_key

__all__ = ["ArticleSplit", "RetrievalTask", "split_by_article", "warn_validation_overlap"]

logger = logging.getLogger(__name__)

#: Files :func:`split_by_article` reads (qrels are found by :func:`~m3kit.evaluation.load_beir`).
_SPLIT_FILES = (
    "articles.json",
    "corpus.jsonl",
    "queries.jsonl",
    "train.jsonl.gz",
    "train_ids.jsonl",
)


@dataclass(frozen=True)
class RetrievalTask:
    """Passages, queries and relevance judgements of some articles.

    Attributes:
        articles: The article ids the task was drawn from.
        corpus: ``{doc_id: text}``.
        queries: ``{query_id: text}``.
        qrels: ``{query_id: {doc_id: grade}}``.
    """

    articles: tuple[str, ...]
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]


@dataclass(frozen=True)
class ArticleSplit:
    """Training rows of some articles and the retrieval task of the others.

    Attributes:
        train_articles: Article ids whose rows are in ``train``.
        eval_articles: Article ids whose queries and passages are in the evaluation task.
        train: Training examples (positives and negatives all from training articles).
        corpus: ``{doc_id: text}`` passages of the evaluation articles.
        queries: ``{query_id: text}`` queries of the evaluation articles.
        qrels: ``{query_id: {doc_id: grade}}``.
        validation: The retrieval task of training articles whose rows were held out of
            ``train`` (for tuning settings and calibrating fusion without touching the
            evaluation articles); ``None`` unless ``validation_fraction`` was given.
    """

    train_articles: tuple[str, ...]
    eval_articles: tuple[str, ...]
    train: tuple[TrainingExample, ...]
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    validation: RetrievalTask | None = None


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _doc_articles(folder: Path, articles: list[dict[str, object]]) -> dict[str, str]:
    """``{doc_id: article}``: from ``paragraph_id`` (cmrc) or the ``<article>_p<i>`` ids (squad)."""
    by_paragraph = {str(a["paragraph_id"]): str(a["_id"]) for a in articles if "paragraph_id" in a}
    out: dict[str, str] = {}
    for row in _jsonl(folder / "corpus.jsonl"):
        doc_id = str(row["_id"])
        if doc_id in by_paragraph:
            out[doc_id] = by_paragraph[doc_id]
        elif "_p" in doc_id:
            out[doc_id] = doc_id.rsplit("_p", 1)[0]
        else:
            raise ValueError(f"cannot tell the article of corpus id {doc_id!r} in {folder}")
    return out


def _doc_forms(folder: Path) -> dict[str, frozenset[str]]:
    """``{doc_id: the forms its text is written in}``: ``text`` and ``"<title> <text>"``,
    whitespace collapsed (:func:`~m3kit.finetune.data.text_key`), as training rows hold it."""
    out: dict[str, frozenset[str]] = {}
    for row in _jsonl(folder / "corpus.jsonl"):
        text, title = str(row.get("text") or ""), str(row.get("title") or "")
        out[str(row["_id"])] = frozenset({text_key(text), text_key(f"{title} {text}")})
    return out


def _check_row_ids(
    meta: dict[str, object], example: TrainingExample, forms: dict[str, frozenset[str]]
) -> None:
    """The row of ``train.jsonl.gz`` must hold the passages ``train_ids.jsonl`` names for it
    (the split places rows by those ids: a file out of step puts them on the wrong side)."""
    pos_ids = [str(d) for d in meta["pos_ids"]]  # type: ignore[attr-defined]
    neg_ids = [str(d) for d in meta["neg_ids"]]  # type: ignore[attr-defined]
    for kind, ids, texts in (
        ("positive", pos_ids, example.pos),
        ("negative", neg_ids, example.neg),
    ):
        if len(ids) != len(texts):
            raise ValueError(
                f"train_ids.jsonl and train.jsonl.gz disagree for {meta.get('query_id')!r}: "
                f"{len(ids)} {kind} ids, {len(texts)} {kind}s"
            )
        for doc_id, text in zip(ids, texts, strict=True):
            if doc_id in forms and text_key(text) not in forms[doc_id]:
                raise ValueError(
                    f"train_ids.jsonl and train.jsonl.gz disagree for {meta.get('query_id')!r} "
                    f"(query {example.query[:60]!r}): {kind} {text[:60]!r} is not the text of "
                    f"corpus passage {doc_id!r}; the two files must list the same rows in the "
                    "same order"
                )


def split_by_article(
    folder: str | Path,
    *,
    seed: int = 0,
    train_fraction: float = 0.5,
    max_train_rows: int | None = None,
    max_eval_queries: int | None = None,
    max_eval_articles: int | None = None,
    validation_fraction: float = 0.0,
    max_validation_queries: int | None = None,
    drop_foreign_negatives: bool = False,
) -> ArticleSplit:
    """Split a shared-data folder by article (seeded).

    Args:
        folder: A folder with ``articles.json``, ``corpus.jsonl``, ``queries.jsonl``,
            ``qrels.tsv``, ``train.jsonl.gz`` and ``train_ids.jsonl``. An article may be
            listed in ``articles.json`` more than once (e.g. once per ``paragraph_id``).
        seed: Seeds the article shuffle and the row / query sub-sampling. Each sample has
            its own random stream (``random.Random(f"{seed}:train")``, ``"{seed}:eval"``,
            ``"{seed}:validation"``), so the held-out queries do not change with
            ``max_train_rows``.
        train_fraction: Share of the articles used for training.
        max_train_rows: Keep a seeded sample of at most this many training rows.
        max_eval_queries: Keep a seeded sample of at most this many evaluation queries (the
            corpus stays every passage of the evaluation articles).
        max_eval_articles: Evaluate on only the first this many held-out articles (a
            smaller corpus; the training side is unchanged).
        validation_fraction: Share of the *training* articles whose rows are held out of
            ``train`` and whose passages and queries form ``validation`` (seeded; the
            evaluation articles are untouched, so tuning on it does not leak).
        max_validation_queries: Keep a seeded sample of at most this many validation queries.
        drop_foreign_negatives: Keep a training row whose negatives come from other articles
            and drop only those negatives (default: drop the row). For data whose articles
            are single passages (CMRC 2018), every hard negative comes from another article,
            so the strict rule keeps almost no rows.

    Returns:
        An :class:`ArticleSplit`. No training row has a positive or a negative outside the
        training articles (rows that would are dropped, or with ``drop_foreign_negatives``
        lose those negatives), nor a query, positive or negative whose text (whitespace
        collapsed, with or without its title) is a question or passage of the evaluation or
        validation articles: a text repeated in another article is treated as that
        article's (the rows dropped for it are counted in a warning).

    Raises:
        FileNotFoundError: A data file is missing (the message names it).
        ValueError: ``train_ids.jsonl`` and ``train.jsonl.gz`` disagree (a row's texts are
            not those of the passages its ids name).
    """
    root = Path(folder)
    missing = [root / name for name in _SPLIT_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]} is missing (a split reads {', '.join(_SPLIT_FILES)})"
        )
    articles = json.loads((root / "articles.json").read_text(encoding="utf-8"))
    # one id per article: an article listed once per paragraph ("paragraph_id" entries) or
    # as 7 and "7" is one article, on one side of the split
    ids = sorted({str(a["_id"]) for a in articles})
    random.Random(seed).shuffle(ids)
    cut = round(len(ids) * train_fraction)
    if not 0 < cut < len(ids):
        raise ValueError(f"train_fraction {train_fraction} leaves one side without articles")
    train_set, eval_set = set(ids[:cut]), set(ids[cut:])
    val_set: set[str] = set()
    if validation_fraction:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        n_val = max(1, round(cut * validation_fraction))
        if n_val >= cut:
            raise ValueError(
                f"validation_fraction {validation_fraction} leaves no training articles "
                f"({cut} training articles)"
            )
        val_set = set(ids[cut - n_val : cut])
        train_set -= val_set
    if max_eval_articles is not None:
        eval_set = set(ids[cut : cut + max_eval_articles])
    doc_article = _doc_articles(root, articles)
    forms = _doc_forms(root)
    corpus, queries, qrels = load_beir(root)
    query_article = {str(r["_id"]): str(r["article"]) for r in _jsonl(root / "queries.jsonl")}
    # texts of the held-out articles: a training row repeating one would train on it
    held_out = eval_set | val_set
    held_texts = set().union(*(forms[d] for d, a in doc_article.items() if a in held_out))
    held_queries = {text_key(queries[q]) for q in queries if query_article[q] in held_out}

    train: list[TrainingExample] = []
    shared = 0  # rows dropped for a text of the held-out articles
    rows = zip(_jsonl(root / "train_ids.jsonl"), iter_jsonl(root / "train.jsonl.gz"), strict=True)
    for meta, example in rows:
        _check_row_ids(meta, example, forms)
        if str(meta["article"]) not in train_set:
            continue
        pos_ids = [str(d) for d in meta["pos_ids"]]  # type: ignore[attr-defined]
        neg_ids = [str(d) for d in meta["neg_ids"]]  # type: ignore[attr-defined]
        if any(doc_article.get(d) not in train_set for d in pos_ids):
            continue
        if text_key(example.query) in held_queries or any(
            text_key(p) in held_texts for p in example.pos
        ):
            shared += 1
            continue
        foreign = [
            doc_article.get(d) not in train_set or text_key(t) in held_texts
            for d, t in zip(neg_ids, example.neg, strict=True)
        ]
        # a negative of a training article whose text is a held-out one drops the row too
        shared += not drop_foreign_negatives and any(
            doc_article.get(d) in train_set for d, out in zip(neg_ids, foreign, strict=True) if out
        )
        if any(foreign):
            if not drop_foreign_negatives:
                continue
            kept = tuple(t for t, out in zip(example.neg, foreign, strict=True) if not out)
            example = TrainingExample(example.query, example.pos, kept)
        train.append(example)
    if shared:
        logger.warning(
            "%d training row(s) dropped for a query or passage text shared with held-out "
            "articles (evaluation or validation): training on it would leak into them",
            shared,
        )
    if max_train_rows is not None and len(train) > max_train_rows:
        train = random.Random(f"{seed}:train").sample(train, max_train_rows)

    def task(articles: set[str], max_queries: int | None, purpose: str) -> RetrievalTask:
        qids = sorted(q for q in queries if query_article[q] in articles)
        if max_queries is not None and len(qids) > max_queries:
            qids = sorted(random.Random(f"{seed}:{purpose}").sample(qids, max_queries))
        return RetrievalTask(
            articles=tuple(sorted(articles)),
            corpus={d: t for d, t in corpus.items() if doc_article[d] in articles},
            queries={q: queries[q] for q in qids},
            qrels={q: qrels[q] for q in qids},
        )

    evaluation = task(eval_set, max_eval_queries, "eval")
    return ArticleSplit(
        train_articles=tuple(sorted(train_set)),
        eval_articles=evaluation.articles,
        train=tuple(train),
        corpus=evaluation.corpus,
        queries=evaluation.queries,
        qrels=evaluation.qrels,
        validation=task(val_set, max_validation_queries, "validation") if val_set else None,
    )


def warn_validation_overlap(training: Iterable[str], validation: Iterable[str]) -> int:
    """Warn when validation queries are training queries (the same text, whitespace collapsed:
    :func:`~m3kit.finetune.data.text_key`): the evaluation after training and the fusion
    calibrated on it, which the checkpoint then uses by default, would measure what training
    saw. :func:`split_by_article` holds queries out by article.

    Returns:
        How many distinct validation queries are training queries.

    >>> warn_validation_overlap(["Who wrote it?"], ["who wrote it?", "Who  wrote it?"])
    1
    """
    seen = {text_key(q) for q in training}
    asked = {text_key(q) for q in validation}
    shared = len(asked & seen)
    if shared:
        logger.warning(
            "%d of %d validation queries are training queries: the evaluation and the fusion "
            "calibrated on them (saved with the checkpoint, the default of its searches) measure "
            "what training saw; hold out other queries (m3kit.finetune.splits.split_by_article)",
            shared,
            len(asked),
        )
    return shared
