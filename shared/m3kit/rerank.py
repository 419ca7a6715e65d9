"""``M3Reranker``: score (query, candidate) pairs with BGE-M3's dense, sparse and ColBERT heads.

The scores are those of FlagEmbedding's ``BGEM3FlagModel.compute_score``:

- dense: dot product of the normalised CLS vectors;
- sparse: lexical matching, the sum over shared token ids of the product of their weights;
- ColBERT: for each query token (CLS dropped, end token kept) the best candidate token's dot
  product, averaged over the query tokens;
- ``sparse+dense``: ``(w_s * sparse + w_d * dense) / (w_s + w_d)``;
- ``colbert+sparse+dense`` (the M3 score): ``(w_d * dense + w_s * sparse + w_c * colbert) /
  (w_d + w_s + w_c)``, weights ``[dense, sparse, colbert]`` default ``[0.4, 0.2, 0.4]``
  (BGE-M3's published weights, from its model card; ``compute_score`` given no weights
  weighs the three equally, ``[1, 1, 1]``).

As in ``compute_score``, queries are truncated to ``max_query_length`` (512, or the encoder's
``max_length`` if shorter) tokens and no
query instruction is added unless :attr:`RerankConfig.query_instruction` asks for it.
Unlike ``compute_score``, which runs a forward pass per pair, each distinct query and each
distinct candidate text is encoded once (batched by the encoder), so reranking ``n``
candidates for one query costs ``n + 1`` encodings, and a candidate shared by several queries
is encoded once. FlagEmbedding's batched ColBERT score lets a candidate's padding positions
take part in the max (a zero vector scores 0): when every real token of a padded candidate
scores below 0 for some query token, FlagEmbedding's ColBERT score is higher than the MaxSim
it means to compute. m3kit computes MaxSim over the real tokens only (FlagEmbedding's own
``colbert_score``); the two agree whenever FlagEmbedding pads nothing or no such token occurs.

Example:
    >>> import tempfile
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> reranker = M3Reranker(enc)
    >>> query = "Oxygen has atomic number 8."
    >>> ranked = reranker.rerank(query, ["Bees dance.", query])
    >>> [r.index for r in ranked]
    [1, 0]
    >>> round(ranked[0].scores.colbert, 4)
    1.0
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from m3kit.encoder_inputs import check_query, whole_number
from m3kit.outputs import Head
from m3kit.scoring import DEFAULT_M3_WEIGHTS, dense_score, maxsim, sparse_score

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder

__all__ = ["M3Reranker", "PairScores", "RankedCandidate", "RerankConfig", "RerankMode"]

logger = logging.getLogger(__name__)

#: FlagEmbedding's ``BGEM3FlagModel`` default ``query_max_length``.
DEFAULT_MAX_QUERY_LENGTH = 512


class RerankMode(str, enum.Enum):
    """Which score orders the candidates (values are ``compute_score``'s result keys)."""

    DENSE = "dense"
    SPARSE = "sparse"
    COLBERT = "colbert"
    SPARSE_DENSE = "sparse+dense"
    M3 = "colbert+sparse+dense"

    @property
    def heads(self) -> frozenset[Head]:
        """The heads this score needs."""
        return {
            RerankMode.DENSE: frozenset({Head.DENSE}),
            RerankMode.SPARSE: frozenset({Head.SPARSE}),
            RerankMode.COLBERT: frozenset({Head.COLBERT}),
            RerankMode.SPARSE_DENSE: frozenset({Head.DENSE, Head.SPARSE}),
            RerankMode.M3: frozenset(Head),
        }[self]


@dataclass(frozen=True)
class RerankConfig:
    """How :class:`M3Reranker` scores pairs.

    Attributes:
        mode: The score that orders candidates in :meth:`M3Reranker.rerank`.
        weights: ``[dense, sparse, colbert]`` weights of the combined scores (non-negative,
            normalised by their sum as FlagEmbedding does; mode ``sparse+dense`` needs a
            dense or sparse weight above 0).
        max_query_length: Longest query in tokens; default: FlagEmbedding's 512, or the
            encoder's ``max_length`` if shorter.
        max_passage_length: Longest candidate in tokens; default: the encoder's
            ``max_length`` (FlagEmbedding defaults to 512: pass 512 to truncate as it does).
            An explicit length may not exceed the encoder's ``max_length`` (it truncates every
            text there): :class:`M3Reranker` refuses one that does.
        query_instruction: Prefix queries with the encoder's query instruction, as retrieval
            does (``compute_score`` never adds one; BGE-M3 declares none).
    """

    mode: RerankMode = RerankMode.M3
    weights: tuple[float, float, float] = DEFAULT_M3_WEIGHTS
    max_query_length: int | None = None
    max_passage_length: int | None = None
    query_instruction: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", RerankMode(self.mode))
        weights = tuple(float(w) for w in self.weights)
        if len(weights) != 3:
            raise ValueError(f"weights are [dense, sparse, colbert]; got {len(weights)} values")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0; got {list(weights)}")
        if self.mode is RerankMode.SPARSE_DENSE and weights[0] + weights[1] <= 0:
            raise ValueError(
                f"mode 'sparse+dense' weighs the dense and sparse scores, and weights "
                f"{list(weights)} give both 0: give one of them a weight, or use mode 'colbert'"
            )
        object.__setattr__(self, "weights", weights)
        for name in ("max_query_length", "max_passage_length"):
            value = getattr(self, name)
            if value is None:
                continue
            try:  # (a numpy integer is its value, as everywhere else)
                number = whole_number(name, value, "tokens")
            except ValueError:
                number = None
            if number is None or number < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
            object.__setattr__(self, name, number)


@dataclass(frozen=True)
class PairScores:
    """Every score of one (query, candidate) pair; ``None`` for a head the encoder lacks.

    Attributes:
        dense: Dense dot product.
        sparse: Lexical matching score.
        colbert: ColBERT MaxSim (mean over query tokens).
        sparse_dense: Weighted mean of sparse and dense.
        m3: Weighted mean of dense, sparse and ColBERT (``colbert+sparse+dense``).
    """

    dense: float
    sparse: float | None
    colbert: float | None
    sparse_dense: float | None
    m3: float | None

    def get(self, mode: RerankMode | str) -> float:
        """The score named by ``mode``.

        Raises:
            ValueError: The encoder has no head for that score (e.g. a dense-only checkpoint).
        """
        mode = RerankMode(mode)
        value = {
            RerankMode.DENSE: self.dense,
            RerankMode.SPARSE: self.sparse,
            RerankMode.COLBERT: self.colbert,
            RerankMode.SPARSE_DENSE: self.sparse_dense,
            RerankMode.M3: self.m3,
        }[mode]
        if value is None:
            raise ValueError(
                f"no {mode.value!r} score: the encoder lacks a head it needs, or its weights "
                "are all 0"
            )
        return value


@dataclass(frozen=True)
class RankedCandidate:
    """One candidate after :meth:`M3Reranker.rerank`.

    Attributes:
        index: Position of the candidate in the input.
        score: The score of the configured mode.
        scores: All scores of the pair.
    """

    index: int
    score: float
    scores: PairScores


class M3Reranker:
    """Score (query, candidate) pairs with an :class:`~m3kit.M3Encoder`, as a reranker.

    Thread-safe (the encoder is; the reranker holds no mutable state).
    """

    def __init__(self, encoder: M3Encoder, config: RerankConfig | None = None) -> None:
        """Wrap an encoder.

        Raises:
            ValueError: ``config.mode`` needs a head the encoder does not have, or a
                ``max_query_length`` / ``max_passage_length`` exceeds the encoder's
                ``max_length`` (the encoder would truncate there instead).
        """
        self.encoder = encoder
        self.config = config if config is not None else RerankConfig()
        for name in ("max_query_length", "max_passage_length"):
            length = getattr(self.config, name)
            if length is not None and length > encoder.max_length:
                raise ValueError(
                    f"{name}={length} is longer than the encoder's max_length "
                    f"{encoder.max_length}, which truncates every text: texts would be cut at "
                    f"{encoder.max_length} tokens, not {length}; load the encoder with "
                    f"max_length={length} or ask for at most {encoder.max_length}"
                )
        missing = self.config.mode.heads - encoder.available_heads
        if missing:
            raise ValueError(
                f"rerank mode {self.config.mode.value!r} needs the "
                f"{sorted(h.value for h in missing)} head(s); this checkpoint has "
                f"{sorted(h.value for h in encoder.available_heads)} (use mode='dense')"
            )

    def __repr__(self) -> str:
        return f"M3Reranker(encoder={self.encoder!r}, config={self.config!r})"

    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], *, show_progress: bool | None = None
    ) -> list[PairScores]:
        """Scores of each ``(query, candidate)`` pair, in input order.

        Args:
            pairs: ``(query, candidate)`` string pairs.
            show_progress: tqdm bar while encoding candidates.

        Raises:
            TypeError: ``pairs`` is not a sequence of two-string pairs.
            ValueError: A pair's query is empty or whitespace-only.
        """
        if isinstance(pairs, (str, tuple)) and len(pairs) == 2 and isinstance(pairs[0], str):
            raise TypeError("score_pairs takes a list of (query, candidate) pairs; wrap one pair")
        checked: list[tuple[str, str]] = []
        for i, pair in enumerate(pairs):
            if (
                not isinstance(pair, (tuple, list))
                or len(pair) != 2
                or not all(isinstance(t, str) for t in pair)
            ):
                raise TypeError(f"pairs[{i}] is not a (query: str, candidate: str) pair: {pair!r}")
            check_query(pair[0], f"the query of pairs[{i}]")  # (as score / rerank refuse it)
            checked.append((pair[0], pair[1]))
        if not checked:
            return []
        queries = list(dict.fromkeys(q for q, _ in checked))
        candidates = list(dict.fromkeys(c for _, c in checked))
        cfg = self.config
        heads = sorted(self.encoder.available_heads)
        q_out = self.encoder.encode(
            queries,
            heads=heads,
            query=cfg.query_instruction,
            max_length=cfg.max_query_length
            or min(DEFAULT_MAX_QUERY_LENGTH, self.encoder.max_length),
            show_progress=False,
        )
        c_out = self.encoder.encode(
            candidates,
            heads=heads,
            max_length=cfg.max_passage_length,
            show_progress=show_progress,
        )
        q_row = {q: i for i, q in enumerate(queries)}
        c_row = {c: i for i, c in enumerate(candidates)}
        has_sparse = Head.SPARSE in self.encoder.available_heads
        has_colbert = Head.COLBERT in self.encoder.available_heads
        wd, ws, wc = cfg.weights
        out = []
        for q, c in checked:
            qi, ci = q_row[q], c_row[c]
            dense = float(dense_score(q_out.dense[qi], c_out.dense[ci])[0])
            sparse = sparse_score(q_out.sparse[qi], c_out.sparse[ci]) if has_sparse else None
            colbert = maxsim(q_out.colbert[qi], c_out.colbert[ci]) if has_colbert else None
            sparse_dense = (
                _weighted([(dense, wd), (sparse, ws)])
                if sparse is not None and wd + ws > 0
                else None
            )
            m3 = (
                _weighted([(dense, wd), (sparse, ws), (colbert, wc)])
                if sparse is not None and colbert is not None
                else None
            )
            out.append(PairScores(dense, sparse, colbert, sparse_dense, m3))
        return out

    def score(
        self, query: str, candidates: Sequence[str], *, show_progress: bool | None = None
    ) -> list[PairScores]:
        """Scores of ``query`` against each candidate, in input order.

        Args:
            query: The query.
            candidates: Candidate texts.
            show_progress: tqdm bar while encoding candidates (``None``: for more than one
                batch).

        Raises:
            TypeError: ``query`` is not a str, or ``candidates`` is one.
            ValueError: ``query`` is empty or whitespace-only (its sparse vector would be
                empty and its dense one say nothing: the order would be noise).
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_query(query)
        if isinstance(candidates, str):
            raise TypeError("candidates is a list of texts; wrap a single text as [text]")
        return self.score_pairs([(query, c) for c in candidates], show_progress=show_progress)

    def rerank(
        self,
        query: str,
        candidates: Sequence[str],
        *,
        top_n: int | None = None,
        show_progress: bool | None = None,
    ) -> list[RankedCandidate]:
        """Candidates ordered by the configured score, best first (ties keep input order).

        Args:
            query: The query.
            candidates: Candidate texts.
            top_n: Keep this many (default: all).
            show_progress: tqdm bar while encoding candidates (``None``: for more than one
                batch).

        Raises:
            ValueError: ``query`` is empty or whitespace-only, or a bad ``top_n``.
        """
        if top_n is not None and (
            not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1
        ):
            raise ValueError(f"top_n must be a positive integer or None, got {top_n!r}")
        scores = self.score(query, candidates, show_progress=show_progress)
        mode = self.config.mode
        ranked = sorted(
            (RankedCandidate(i, s.get(mode), s) for i, s in enumerate(scores)),
            key=lambda r: -r.score,
        )
        return ranked if top_n is None else ranked[:top_n]


def _weighted(terms: Sequence[tuple[float | None, float]]) -> float:
    """``sum(w * s) / sum(w)`` (FlagEmbedding normalises its combined scores by the weights)."""
    total = sum(w for _, w in terms)
    if total <= 0:
        raise ValueError("the weights of a combined score sum to 0")
    return sum(float(s) * w for s, w in terms if s is not None) / total
