"""Hard-negative mining with the current model (dense, sparse or fused ranking).

For each query the corpus is ranked by the model being fine-tuned; negatives are sampled
(seeded) from a window of ranks, by default 10-100 as in FlagEmbedding's ``hn_mine``
(the top ranks are skipped because they often hold unlabelled positives). A negative is
never one of the query's positives and never repeated.

"The query's positives" are those of every row asking that query (the same question can
have rows with different positives), and texts are compared with their whitespace
collapsed; a corpus passage with a title (``corpus_titles``) is also recognised by its text
alone, and a positive written with its title (``"<title> <text>"``) by that text under any
title. A row whose positive is not in the corpus is counted in a warning: another form of it
there (other words, another title) cannot be recognised.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Sequence

import numpy as np

from m3kit.encoder import M3Encoder
from m3kit.errors import HeadNotAvailableError
from m3kit.finetune.data import TrainingExample, text_key
from m3kit.finetune.evaluate import score_matrix
from m3kit.outputs import Head
from m3kit.scoring import reciprocal_rank_fusion

__all__ = ["MiningScore", "mine_hard_negatives"]

logger = logging.getLogger(__name__)


class MiningScore(str, enum.Enum):
    """How the corpus is ranked for mining."""

    DENSE = "dense"
    SPARSE = "sparse"
    FUSED = "fused"  # reciprocal rank fusion of the dense and sparse rankings


def _heads(encoder: M3Encoder, score: MiningScore) -> list[Head]:
    heads = {
        MiningScore.DENSE: [Head.DENSE],
        MiningScore.SPARSE: [Head.SPARSE],
        MiningScore.FUSED: [Head.DENSE, Head.SPARSE],
    }[score]
    if any(h not in encoder.available_heads for h in heads):
        raise HeadNotAvailableError(
            f"mining with score {score.value!r} needs the sparse head, which this checkpoint "
            "lacks (dense-only): mine with score='dense' (m3kit mine-negatives --score dense)"
        )
    return heads


def _rankings(
    encoder: M3Encoder,
    queries: list[str],
    corpus: list[str],
    heads: list[Head],
    depth: int,
    show_progress: bool | None = None,
) -> list[list[int]]:
    docs = encoder.encode(corpus, heads=heads, show_progress=show_progress)
    qs = encoder.encode(queries, heads=heads, query=True, show_progress=show_progress)
    per_head = []
    for head in heads:
        matrix = score_matrix(qs, docs, head)
        per_head.append(np.argsort(-matrix, axis=1, kind="stable")[:, :depth])
    if len(per_head) == 1:
        return [row.tolist() for row in per_head[0]]
    fused = []
    for i in range(len(queries)):
        runs = [[str(j) for j in ranking[i]] for ranking in per_head]
        scores = reciprocal_rank_fusion(runs)
        fused.append([int(d) for d in sorted(scores, key=lambda d: -scores[d])[:depth]])
    return fused


def mine_hard_negatives(
    encoder: M3Encoder,
    examples: Sequence[TrainingExample],
    corpus: Sequence[str] | None = None,
    *,
    corpus_titles: Sequence[str | None] | None = None,
    num_negatives: int = 7,
    rank_range: tuple[int, int] = (10, 100),
    score: MiningScore | str = MiningScore.DENSE,
    seed: int = 0,
    show_progress: bool | None = None,
) -> list[TrainingExample]:
    """Replace each example's negatives with ones mined from the model's own ranking.

    Args:
        encoder: The model to mine with (usually the start checkpoint of fine-tuning).
        examples: Queries with their positives (existing negatives are replaced).
        corpus: Candidate passages (default: every positive and negative of ``examples``).
        corpus_titles: A title per ``corpus`` passage (BEIR's ``title``; ``None`` or ``""``:
            none). A passage is then ranked and written as ``"<title> <text>"`` and recognised
            as a positive in either form; a positive in the titled form also makes every
            passage with its text (under another title) a positive.
        num_negatives: Negatives per query.
        rank_range: ``(start, end)`` 0-based ranks to sample from, end excluded.
        score: Ranking used: dense, sparse or fused (RRF of both).
        seed: Seeds the sampling.
        show_progress: The encoding's progress bars (default: the encoder's, on for more than
            one batch; ``m3kit mine-negatives --quiet``: off).

    Returns:
        New examples, in order. A query whose window holds fewer than ``num_negatives``
        usable passages gets fewer (counted in a warning).

    Raises:
        HeadNotAvailableError: ``score`` needs the sparse head of a dense-only checkpoint.
        ValueError: Bad arguments, or an empty corpus.
    """
    start, end = rank_range
    if not 0 <= start < end:
        raise ValueError(f"rank_range must be (start, end) with 0 <= start < end, got {rank_range}")
    if num_negatives < 1:
        raise ValueError("num_negatives must be >= 1")
    heads = _heads(encoder, MiningScore(score))
    if not examples:
        return []
    if corpus is None:
        if corpus_titles is not None:
            raise ValueError("corpus_titles are the titles of a corpus: give the corpus too")
        corpus = list(dict.fromkeys(t for ex in examples for t in (*ex.pos, *ex.neg)))
    titles = [None] * len(corpus) if corpus_titles is None else list(corpus_titles)
    if len(titles) != len(corpus):
        raise ValueError(f"{len(titles)} corpus_titles for {len(corpus)} corpus passages")
    # each passage's text as ranked and written, and the forms it is recognised by
    passages: dict[str, set[str]] = {}
    for text, title in zip(corpus, titles, strict=True):
        full = f"{title or ''} {text}".strip()
        passages.setdefault(full, set()).update({text_key(full), text_key(text)})
    texts = list(passages)
    if not texts:
        raise ValueError("the corpus to mine from is empty")
    forms = [passages[t] for t in texts]
    aliases = _aliases(forms)
    positives: dict[str, set[str]] = {}  # normalised query -> forms of its positives, all rows
    for ex in examples:
        own = positives.setdefault(text_key(ex.query), set())
        for pos in map(text_key, ex.pos):
            own.update(aliases.get(pos, {pos}))
    _warn_missing_positives(examples, set().union(*forms))
    queries = [ex.query for ex in examples]
    rankings = _rankings(encoder, queries, texts, heads, min(end, len(texts)), show_progress)
    rng = random.Random(seed)
    out: list[TrainingExample] = []
    short = 0
    for ex, ranking in zip(examples, rankings, strict=True):
        own = positives[text_key(ex.query)]
        window: dict[str, str] = {}  # normalised -> text: a passage repeated is offered once
        for j in ranking[start:end]:
            if own.isdisjoint(forms[j]):
                window.setdefault(text_key(texts[j]), texts[j])
        negs = rng.sample(list(window.values()), min(num_negatives, len(window)))
        short += len(negs) < num_negatives
        out.append(TrainingExample(ex.query, ex.pos, tuple(negs)))
    if short:
        logger.warning(
            "%d of %d queries got fewer than %d negatives (ranks %d-%d of a %d-passage corpus)",
            short,
            len(examples),
            num_negatives,
            start,
            end,
            len(texts),
        )
    return out


def _aliases(forms: Sequence[set[str]]) -> dict[str, set[str]]:
    """``{form: every form of the passages known by it}``: a positive written with its
    title (``"<title> <text>"``) is also its text alone, and so every other passage with
    that text (under another title) is the positive too."""
    out: dict[str, set[str]] = {}
    for known in forms:
        for form in known:
            out.setdefault(form, {form}).update(known)
    return out


def _warn_missing_positives(examples: Sequence[TrainingExample], known: set[str]) -> None:
    """Warn about rows with a positive no corpus passage is (in any form it is known by)."""
    missing = [i for i, ex in enumerate(examples) if any(text_key(p) not in known for p in ex.pos)]
    if missing:
        first = examples[missing[0]]
        logger.warning(
            "%d of %d rows have a positive that is not in the corpus (e.g. row %d, query %r): "
            "another form of it there (other words, another title) may be mined as a negative",
            len(missing),
            len(examples),
            missing[0] + 1,
            first.query[:80],
        )
