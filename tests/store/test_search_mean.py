"""``M3Index.search_mean``: several query texts searched as one query, their mean."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from m3kit.store import M3Index

TEXTS = [
    "The river floods every spring.",
    "Bread is baked in a stone oven.",
    "A comet passed close to the sun.",
    "The orchestra tuned before the concert.",
]


@pytest.fixture()
def index(tiny_encoder: Any) -> Any:
    with M3Index.open(tiny_encoder, ":memory:") as opened:
        opened.add_texts(TEXTS)
        yield opened


@pytest.mark.parametrize("fusion", ["rrf", "m3"])
def test_one_text_is_a_search_and_a_repeated_text_scores_as_once(index: Any, fusion: str) -> None:
    one = index.search("spring floods", k=4, fusion=fusion)
    assert index.search_mean(["spring floods"], k=4, fusion=fusion) == one
    twice = index.search_mean(["spring floods", "spring floods"], k=4, fusion=fusion)
    assert [h.id for h in twice] == [h.id for h in one]
    np.testing.assert_allclose([h.score for h in twice], [h.score for h in one], rtol=1e-5)


def test_two_texts_search_their_mean_vectors(index: Any) -> None:
    """Dense alone: the score is the cosine with the normalised mean of the two queries."""
    enc = index.encoder
    texts = ["spring floods", "a stone oven"]
    q = enc.encode(texts, query=True, show_progress=False).dense.astype(np.float64)
    mean = q.mean(axis=0) / np.linalg.norm(q.mean(axis=0))
    docs = enc.encode(TEXTS, show_progress=False).dense.astype(np.float64)
    want = sorted(docs @ mean, reverse=True)
    hits = index.search_mean(texts, k=4, fusion="m3", weights=[1, 0, 0], rerank=False)
    np.testing.assert_allclose([h.score for h in hits], want, atol=1e-3)


def test_bad_queries(index: Any) -> None:
    with pytest.raises(TypeError, match="sequence of str"):
        index.search_mean("one text", k=2)
    with pytest.raises(ValueError, match="at least one query"):
        index.search_mean([], k=2)
