"""``m3kit.significance.best_of_p_value``: the paired sign-flip max-T test the fusion
calibration uses to keep RRF unless the best setting's gain is unlikely by chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3kit.significance import best_of_p_value


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad: float) -> None:
    """A NaN or infinite score has no sign to flip: it is an error, not a p-value. (A NaN
    candidate used to be taken as the best, left out of the null, and its NaN statistic
    reached by no sign pattern: p = 1 / (rounds + 1), the most significant result.)"""
    rng = np.random.default_rng(0)
    default = rng.random(20)
    candidates = default + rng.normal(0.0, 0.05, (5, 20))
    candidates[2, 3] = bad
    with pytest.raises(ValueError, match="finite"):
        best_of_p_value(candidates, default)
    base = default.copy()
    base[0] = bad
    with pytest.raises(ValueError, match="finite"):
        best_of_p_value(default + rng.normal(0.0, 0.05, (5, 20)), base)


def _steady_gain() -> tuple[np.ndarray, np.ndarray]:
    """A default and a candidate gaining 0.1 on 9 of 30 queries and losing 0.05 on 3."""
    default = np.full(30, 0.5)
    gain = default.copy()
    gain[:9] += 0.1
    gain[9:12] -= 0.05
    return gain, default


def test_the_best_of_many_is_tested_against_all_of_them() -> None:
    """Family-wise (max-T): a gain the sign-flip test passes for one setting alone
    (p ~ 0.01) is likely by chance when it is the best of 61, the 60 others differing from the
    default by zero-mean noise. A test of the best setting alone would pass it."""
    gain, default = _steady_gain()
    alone = best_of_p_value(gain[None], default)
    assert alone < 0.05
    noise = np.random.default_rng(3).normal(0.0, 0.05, (60, 30))
    others = default + (noise - noise.mean(axis=1, keepdims=True))  # mean gain 0 each
    among = best_of_p_value(np.vstack([others, gain[None]]), default)
    assert among > 0.2
    # where the best sits among the candidates does not matter
    assert best_of_p_value(np.vstack([gain[None], others]), default) == among


def test_the_p_value_is_deterministic_per_seed_and_stable_across_seeds() -> None:
    gain, default = _steady_gain()
    p = best_of_p_value(gain[None], default)
    assert best_of_p_value(gain[None], default) == p
    other_seed = best_of_p_value(gain[None], default, seed=1)
    assert abs(other_seed - p) < 0.01  # Monte Carlo error of 10 000 rounds


def test_candidates_equal_to_the_default_change_nothing() -> None:
    """A setting whose every difference is zero (the same ranking as the default) has no
    spread to scale by: it is left out of the null, not divided by zero."""
    gain, default = _steady_gain()
    same = np.vstack([gain[None], np.tile(default, (5, 1))])
    assert best_of_p_value(same, default) == best_of_p_value(gain[None], default)
    assert best_of_p_value(np.tile(default, (3, 1)), default) == 1.0


def test_the_size_is_at_most_alpha_under_the_null() -> None:
    """Under the null (each query's differences symmetric around 0, correlated over ten
    settings) p <= 0.1 happens at most about 10% of the time."""
    rng = np.random.default_rng(7)
    p_values = []
    for trial in range(200):
        default = rng.random(25)
        shared = rng.normal(0.0, 0.05, 25)
        candidates = default + shared + rng.normal(0.0, 0.03, (10, 25))
        p_values.append(best_of_p_value(candidates, default, rounds=499, seed=trial))
    assert np.mean(np.array(p_values) <= 0.1) <= 0.1 + 0.05  # ~2.4 standard errors of slack


def test_calibration_tests_the_setting_it_chooses_among_equal_means() -> None:
    """Two settings with the same per-query nDCG@10 values on other queries tie in mean up to
    rounding: the calibration keeps the first of equals, and the p-value it decides with and
    records is that setting's (its gain has another standardised sum than the second's). It
    used to be the p-value of whichever had the larger mean of differences by one ulp."""
    from m3kit.store.calibration import _best
    from m3kit.store.search_settings import SearchSettings

    default = np.array(
        [
            0.6309297535714575,
            0.31546487678572877,
            0.2890648263178879,
            0.31546487678572877,
            0.2890648263178879,
            0.0,
            0.3333333333333333,
            0.3010299956639812,
            0.6309297535714575,
            0.38685280723454163,
            0.5,
            1.0,
        ]
    )
    first = np.array(
        [
            0.3562071871080222,
            0.31546487678572877,
            0.31546487678572877,
            1.0,
            0.43067655807339306,
            1.0,
            0.43067655807339306,
            1.0,
            0.0,
            0.3333333333333333,
            0.5,
            0.3010299956639812,
        ]
    )
    second = np.array(
        [
            0.3562071871080222,
            0.5,
            0.3010299956639812,
            0.31546487678572877,
            1.0,
            0.43067655807339306,
            1.0,
            0.43067655807339306,
            1.0,
            0.31546487678572877,
            0.0,
            0.3333333333333333,
        ]
    )
    assert sorted(first) == sorted(second)  # the same values: equal means but for rounding
    assert abs(first.mean() - second.mean()) < 1e-12
    assert (second - default).mean() > (first - default).mean()  # by rounding alone
    rrf = SearchSettings(fusion="rrf", rerank=True)
    dbsf = SearchSettings(fusion="dbsf", rerank=True)
    m3 = SearchSettings(fusion="m3", weights=(0.5, 0.0, 0.5), rerank=True)
    choice = _best([(rrf, default), (dbsf, first), (m3, second)], 0.0, 0.99)
    assert choice.settings == dbsf  # the first of equals
    # the same test with the other setting lowered by far less than any nDCG@10 difference,
    # so that the one meant is the best mean without a doubt
    of_first = best_of_p_value(np.stack([first, second - 1e-12]), default)
    of_second = best_of_p_value(np.stack([first - 1e-12, second]), default)
    assert abs(of_first - of_second) > 0.02  # the two settings' p-values differ
    assert choice.p_value == pytest.approx(of_first, abs=1e-6)
    assert best_of_p_value(np.stack([first, second]), default, best=0) == of_first
    with pytest.raises(ValueError, match="best"):
        best_of_p_value(np.stack([first, second]), default, best=2)


def test_a_calibration_file_without_p_values_still_loads(tmp_path: Path) -> None:
    """``m3kit_search.json`` written before the test existed has no ``p_values``: it loads
    with none; a new file keeps them."""
    import json

    from m3kit.store.fusion_calibration import SEARCH_FILE, FusionCalibration
    from m3kit.store.search_settings import SearchSettings

    cal = FusionCalibration(
        all_heads=SearchSettings(fusion="rrf", rerank=True),
        dense_sparse=SearchSettings(fusion="m3", weights=(0.3, 0.7, 0.0), rerank=False),
        weights_digest="files-sha256:abc",
        queries=400,
        scores={"rrf, rerank on [all heads]": 0.9},
        p_values={"all heads": 0.636, "dense+sparse": 0.003},
    )
    path = cal.save(tmp_path)
    assert path.name == SEARCH_FILE
    assert FusionCalibration.load(tmp_path) == cal
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["p_values"]
    path.write_text(json.dumps(data), encoding="utf-8")
    old = FusionCalibration.load(tmp_path)
    assert old is not None and dict(old.p_values) == {}
    assert old.dense_sparse == cal.dense_sparse
