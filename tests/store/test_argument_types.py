"""``k`` / ``candidates`` of the wrong type are refused by name.

``k=2.5`` reached the backend (its own error, naming no argument) and ``k=True`` searched for
one hit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

BAD_COUNTS = [2.5, True, False, 0, -1, "3", None]


@pytest.mark.parametrize("value", BAD_COUNTS)
def test_search_refuses_a_k_that_is_not_a_positive_int(
    open_index: Any, tiny_encoder: Any, value: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(["Berlin is the capital of Germany.", "Paris is in France."])
    message = rf"k must be an int >= 1, not {value!r}"
    for call in (
        lambda: index.search("capital", k=value),
        lambda: asyncio.run(index.asearch("capital", k=value)),
        lambda: index.search_mean(["capital", "city"], k=value),
        lambda: index.store.query(dense=np.ones(tiny_encoder.dense_dim), k=value),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    assert len(index.search("capital", k=1)) == 1


@pytest.mark.parametrize("value", [2.5, True, 0, "3"])
def test_candidates_that_are_not_a_positive_int_are_refused(
    open_index: Any, tiny_encoder: Any, value: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(["Berlin is the capital of Germany."])
    message = rf"candidates must be an int >= 1 or None, not {value!r}"
    for call in (
        lambda: index.search("capital", candidates=value),
        lambda: asyncio.run(index.asearch("capital", candidates=value)),
        lambda: index.search_mean(["capital"], candidates=value),
        lambda: index.store.query(dense=np.ones(tiny_encoder.dense_dim), candidates=value),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=rf"candidates must be an int >= 1, not {value!r}"):
        index.store.head_scores(dense=np.ones(tiny_encoder.dense_dim), candidates=value)
