"""Is the best of several rankings really better than a default? A paired randomization test.

A fusion calibration scores dozens of settings on a few hundred validation queries and keeps
the best. The best of many is better than the default by chance alone (the winner's curse):
on squad_en's validation articles an ``m3`` weighting that beat RRF + ColBERT rerank by half
an nDCG point was 0.2 points below it on held-out articles
(``benchmarks/results/finetune_significance_zen4.md``). :func:`best_of_p_value` asks how
often a gain as large as the best one's appears when each query's differences could as well
have had the other sign: the sign-flip randomization test IR evaluation uses for paired
runs, with the maximum over all candidates of their standardised gains as its statistic, so
choosing the best of many is accounted for (Westfall and Young's single-step max-T).

Written with numpy because no dependency of the core offers the family-wise version (scipy's
``permutation_test`` tests one statistic and scipy is not a core dependency); the test is a
few lines of array arithmetic.
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_of_p_value"]


def best_of_p_value(
    candidates: np.ndarray,
    default: np.ndarray,
    *,
    rounds: int = 10_000,
    seed: int = 0,
    best: int | None = None,
) -> float:
    """One-sided p-value that the best candidate's mean gain over ``default`` is chance.

    Args:
        candidates: ``(settings, queries)`` per-query scores of every setting tried besides
            the default (e.g. nDCG@10).
        default: ``(queries,)`` per-query scores of the default.
        rounds: Random sign patterns drawn (the smallest p-value it can give is
            ``1 / (rounds + 1)``).
        seed: Seed of the sign patterns (the result is deterministic for a seed).
        best: Row of ``candidates`` whose gain is tested (default: the one with the largest
            mean difference, the first of exact equals). A caller that picked the best by its
            own rule (the first of means equal but for rounding) passes it, so that the
            p-value is that setting's.

    Raises:
        ValueError: The shapes do not match, there are no queries or no candidates, a score
            is NaN or infinite, ``rounds`` is below 1, or ``best`` is not a row.

    Returns:
        ``(1 + r) / (rounds + 1)``, where ``r`` counts the sign patterns under which some
        candidate's standardised sum of differences (divided by the square root of its
        sum of squares) reaches that of the candidate with the best mean (or ``best``). 1.0
        when that candidate does not beat the default on average.

    >>> default = np.zeros(40)
    >>> clear = np.ones((3, 40)) * 0.1              # every query gains
    >>> best_of_p_value(clear, default) < 0.001
    True
    >>> noise = np.array([[0.1, -0.1] * 20])        # gains and losses cancel
    >>> best_of_p_value(noise, default)
    1.0
    >>> lucky = np.zeros((50, 40)); lucky[:, 0] = 0.5  # one query, any setting
    >>> round(best_of_p_value(lucky, default), 1)  # half the sign patterns give it
    0.5
    """
    scores = np.asarray(candidates, dtype=np.float64)
    base = np.asarray(default, dtype=np.float64)
    if scores.ndim != 2 or base.ndim != 1 or scores.shape[1] != base.shape[0]:
        raise ValueError(
            f"candidates must be (settings, queries) and default (queries,), got "
            f"{scores.shape} and {base.shape}"
        )
    if base.shape[0] == 0 or scores.shape[0] == 0:
        raise ValueError("no queries or no candidates to test")
    if not (np.isfinite(scores).all() and np.isfinite(base).all()):
        # a NaN would be taken as the best candidate's mean and no sign pattern would reach
        # its NaN statistic: the smallest p-value, silently
        raise ValueError("candidates and default must be finite scores (NaN or inf found)")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if best is not None and not 0 <= best < scores.shape[0]:
        raise ValueError(f"best={best} is not a row of the {scores.shape[0]} candidates")
    diffs = scores - base  # (settings, queries)
    means = diffs.mean(axis=1)
    if best is None:
        best = int(np.argmax(means))
    if means[best] <= 0.0:
        return 1.0
    # Each setting's sum of differences is scaled by its spread under sign flips
    # (sqrt of the sum of squares, which no flip changes), so a setting that differs from the
    # default on many queries by a lot does not dominate the maximum over settings.
    spread = np.sqrt((diffs**2).sum(axis=1))
    varied = spread > 0.0
    scaled = diffs[varied] / spread[varied, None]
    observed = float(diffs[best].sum() / spread[best])
    rng = np.random.default_rng(seed)
    queries = base.shape[0]
    reached = 0
    # tolerance: the all-+1 sign pattern reproduces ``observed`` up to summation order
    tolerance = 1e-9 * max(1.0, abs(observed))
    for start in range(0, rounds, 1000):
        n = min(1000, rounds - start)
        signs = rng.choice((-1.0, 1.0), size=(n, queries))
        most = (signs @ scaled.T).max(axis=1)  # (n,) the largest scaled sum over settings
        reached += int(np.count_nonzero(most >= observed - tolerance))
    return (1 + reached) / (rounds + 1)
