"""A query's positives, masked out of its negatives, and runs with nothing to contrast.

A query with several relevant passages is often written as one row per passage (FlagEmbedding's
rows, ``M3FinetuneEngine``'s (query, relevant doc) pairs), or trained on its first relevant
passage only (``use_all_docs=False``): each relevant passage is a positive of every row asking
that query, never its negative, in-batch or hard (:func:`query_positives`,
:func:`without_query_positives`). A run whose queries have nothing to contrast their positive
with trains nothing: it is refused (:func:`refuse_lone_positives`), and rows short of hard
negatives are warned of (:func:`warn_negative_shortfall`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from m3kit.finetune.data import TrainingExample, text_key

__all__ = [
    "query_positives",
    "refuse_lone_positives",
    "warn_negative_shortfall",
    "without_query_positives",
]

logger = logging.getLogger(__name__)


def query_positives(
    examples: Iterable[TrainingExample],
    also: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, frozenset[str]]:
    """Every positive of each query over all its rows, keyed and valued by :func:`text_key`.

    A query with several relevant passages may be written as one row per passage
    (FlagEmbedding's rows, ``M3FinetuneEngine``'s (query, relevant doc) pairs): each of
    those passages is relevant to every row of that query.

    Args:
        examples: The training rows.
        also: More relevant passages by query text, beyond those its rows carry (a query
            trained on its first relevant passage only: ``M3FinetuneEngine``'s
            ``use_all_docs=False``).

    >>> rows = [TrainingExample("q", ("a",)), TrainingExample("q ", ("b",))]
    >>> sorted(query_positives(rows)["q"])
    ['a', 'b']
    >>> sorted(query_positives(rows[:1], also={"q": ["c "]})["q"])
    ['a', 'c']

    Raises:
        TypeError: ``also`` maps a query to a single string or holds a non-string.
    """
    positives: dict[str, set[str]] = {}
    for ex in examples:
        positives.setdefault(text_key(ex.query), set()).update(map(text_key, ex.pos))
    for query, given in (also or {}).items():
        texts = [given] if isinstance(given, str) else list(given)  # (an iterator read once)
        if isinstance(given, str) or not all(isinstance(t, str) for t in (query, *texts)):
            raise TypeError(
                "positives must map each query text to a list of its relevant passage texts; "
                f"got {query!r}: {given!r}"
            )
        positives.setdefault(text_key(query), set()).update(map(text_key, texts))
    return {query: frozenset(texts) for query, texts in positives.items()}


def without_query_positives(
    examples: Sequence[TrainingExample],
    positives: Mapping[str, frozenset[str]] | None = None,
) -> list[TrainingExample]:
    """The examples without the negatives that are a positive of a row asking the same query.

    A query with several relevant passages is often written as one row per passage, with
    negatives mined per row (FlagEmbedding's ``hn_mine`` keeps out only the row's own
    positive): one row's negative can be another row's positive. The trainer masks such a
    passage only when both rows share a batch; dropping it here keeps it out of every batch.
    Queries and passages compare with their whitespace collapsed (:func:`text_key`), as
    :class:`TrainingExample` compares ``pos`` and ``neg``. The number of negatives dropped
    is logged as a warning.

    Args:
        examples: The training rows.
        positives: Every relevant passage of each query (:func:`query_positives`, its
            ``also`` included); default: those the rows carry.

    >>> rows = [TrainingExample("q", ("a",), ("b ", "c")), TrainingExample("q ", ("b",))]
    >>> [ex.neg for ex in without_query_positives(rows)]
    [('c',), ()]
    """
    if positives is None:
        positives = query_positives(examples)
    out: list[TrainingExample] = []
    dropped = 0
    for ex in examples:
        own = positives[text_key(ex.query)]
        kept = tuple(n for n in ex.neg if text_key(n) not in own)
        dropped += len(ex.neg) - len(kept)
        out.append(ex if len(kept) == len(ex.neg) else TrainingExample(ex.query, ex.pos, kept))
    if dropped:
        logger.warning(
            "dropped %d negative(s) that are a positive of the same query (another row's, or "
            "one given as relevant)",
            dropped,
        )
    return out


def refuse_lone_positives(
    examples: Sequence[TrainingExample],
    batch_size: int,
    num_negatives: int,
    *,
    mask_shared_positives: bool = True,
    positives: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """Refuse a run in which no query has anything to contrast its positive with.

    A query is scored against the batch's distinct passages (texts compared with their
    whitespace collapsed, :func:`text_key`) and its sampled hard negatives; its other
    positives are masked (``mask_shared_positives``). When every query's only candidate is
    its positive, every contrastive loss is 0: the run would train nothing and save the
    start model (LlamaIndex's ``MultipleNegativesRankingLoss`` does the same, silently).
    That is so with one row per batch (``batch_size`` 1, or a single row), and also with
    many rows when they ask one query (one query with 3 relevant passages) or share one
    passage (3 queries of one passage): distinct texts count, not rows.

    Args:
        examples: The training rows (with ``mask_shared_positives``, after
            :func:`without_query_positives`).
        batch_size: Rows per batch.
        num_negatives: Hard negatives sampled per row.
        mask_shared_positives: Whether a query's other positives are masked out of its
            candidates (:attr:`~m3kit.finetune.FinetuneConfig.mask_shared_positives`).
        positives: Every relevant passage of each query, masked with
            ``mask_shared_positives`` (:func:`query_positives`); default: those the rows carry.

    >>> rows = [TrainingExample("q1", ["p1"]), TrainingExample("q2", ["p2"])]
    >>> refuse_lone_positives(rows, batch_size=2, num_negatives=0)  # in-batch: fine
    >>> refuse_lone_positives(rows[:1], batch_size=16, num_negatives=1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size=16 with 1 training row(s) and no hard negatives: ...
    >>> refuse_lone_positives([TrainingExample("q", [p]) for p in "abc"], 16, 0)
    Traceback (most recent call last):
    ...
    ValueError: no query has anything to contrast its positive with: ...

    Raises:
        ValueError: Nothing to contrast any positive with (the message says why).
    """
    if num_negatives and any(ex.neg for ex in examples):
        return
    if min(batch_size, len(examples)) <= 1:
        raise ValueError(
            f"batch_size={batch_size} with {len(examples)} training row(s) and no hard "
            "negatives: each query's only candidate is its positive, so every loss is 0 and "
            "nothing would train; use batch_size >= 2 (in-batch negatives) or rows with hard "
            "negatives (num_negatives >= 1)"
        )
    if positives is None:
        positives = query_positives(examples)
    # the passages batches hold: the rows' positives (their negatives are not sampled here)
    passages = frozenset(text_key(p) for ex in examples for p in ex.pos)
    queries = {text_key(ex.query) for ex in examples}
    if mask_shared_positives:
        contrasted = any(passages - positives[query] for query in queries)
    else:  # a query's other positives are its negatives too; copies of a passage are one
        contrasted = len(passages) > 1
    if contrasted:
        return
    asked = f"{len(queries)} distinct quer{'y' if len(queries) == 1 else 'ies'}"
    masked = " (a query's own positives are never its negatives)" if mask_shared_positives else ""
    unsampled = "num_negatives=0" if not num_negatives else "no row carries one"
    raise ValueError(
        f"no query has anything to contrast its positive with: the {len(examples)} training "
        f"rows hold {asked} and {len(passages)} distinct passage(s) (texts compared with "
        f"whitespace collapsed), every passage is a positive of every query{masked}, and no "
        f"hard negative is sampled ({unsampled}), so every loss is 0 and nothing would train; "
        "add queries about other passages, or rows with hard negatives (num_negatives >= 1)"
    )


def warn_negative_shortfall(examples: Sequence[TrainingExample], num_negatives: int) -> None:
    """Log a warning counting the rows with fewer hard negatives than ``num_negatives``.

    Such rows train with the negatives they carry and the batch's other passages. Rows
    without any (``neg`` empty or missing) are valid FlagEmbedding and QA data, so even a set
    where no row carries one is a warning, saying the run uses in-batch negatives only.

    Args:
        examples: The training rows.
        num_negatives: Hard negatives asked for per row (:attr:`FinetuneConfig.num_negatives`).
    """
    short = Counter(len(ex.neg) for ex in examples if len(ex.neg) < num_negatives)
    if not short:
        return
    if short[0] == len(examples):
        logger.warning(
            "num_negatives=%d but none of the %d training rows carries a hard negative: the run "
            "trains on in-batch negatives only (mine some with mine_hard_negatives or m3kit "
            "mine-negatives, or set num_negatives=0)",
            num_negatives,
            len(examples),
        )
        return
    counts = ", ".join(
        f"{rows} row{'s' if rows > 1 else ''} with {have}" for have, rows in sorted(short.items())
    )
    logger.warning(
        "%d of %d training rows carry fewer hard negatives than num_negatives=%d (%s): they "
        "train with those and the batch's other passages",
        sum(short.values()),
        len(examples),
        num_negatives,
        counts,
    )
