"""``k`` / ``candidates`` and document ids of the wrong type are refused by name; int ids are text.

``k=2.5`` reached the backend (its own error, naming no argument) and ``k=True`` searched for
one hit; ``add_texts(doc_ids=[1])`` stored ``"1"`` while ``delete([1])`` raised ``TypeError``,
and an id of another type (``1.5``, ``True``, ``{"a": 1}``) was stored as its Python repr.
"""

from __future__ import annotations

import asyncio
import re
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


def test_int_document_ids_are_text_in_every_call(open_index: Any, tiny_encoder: Any) -> None:
    from m3kit.store.filters import documents_filter

    index = open_index(tiny_encoder)
    assert index.add_texts(["one.", "two."], doc_ids=[1, "2"]) == ["1", "2"]
    assert set(index.store.document_metadata([1, 2])) == {"1", "2"}
    (payload,) = index.store.points(filter=documents_filter(["1"])).values()
    assert index.store.complete_documents({1: payload["doc_hash"]}) == {"1"}
    assert index.add_texts(["one.", "two."], doc_ids=["1", 2]) == ["1", "2"]  # unchanged
    assert index.count() == 2
    index.delete([1])
    assert set(index.store.document_metadata()) == {"2"}
    index.delete(["2"])
    assert index.count() == 0


@pytest.mark.parametrize("bad", [1.5, True, {"a": 1}, ["x"], b"x"])
def test_document_ids_of_other_types_are_refused_everywhere(
    open_index: Any, tiny_encoder: Any, bad: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(["one."], doc_ids=["a"])
    message = re.escape(
        f"doc_ids[1]: a document id is a str or an int, not {type(bad).__name__} {bad!r}"
    )
    for call in (
        lambda: index.add_texts(["two.", "three."], doc_ids=["b", bad]),
        lambda: index.delete(["a", bad]),
        lambda: index.store.document_metadata(["a", bad]),
    ):
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(TypeError, match=r"versions: a document id is a str or an int, not flo"):
        index.store.complete_documents({1.5: "hash"})
    assert index.count() == 1


def test_numpy_integers_are_counts_and_ids(open_index: Any, tiny_encoder: Any) -> None:
    # a k or an id computed with numpy (np.int64) is an integer like any other
    index = open_index(tiny_encoder)
    assert index.add_texts(["one.", "two."], doc_ids=[np.int64(1), "2"]) == ["1", "2"]
    assert len(index.search("one", k=np.int64(1), candidates=np.int32(5))) == 1
    index.delete([np.int64(1)])
    assert set(index.store.document_metadata()) == {"2"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.5", [0.5]])
def test_a_score_threshold_that_is_not_a_finite_number_is_refused(
    open_index: Any, tiny_encoder: Any, value: Any
) -> None:
    # NaN dropped every hit silently (no score is >= NaN), True was read as 1.0, and "0.5"
    # failed with a bare TypeError after the search ran
    index = open_index(tiny_encoder)
    index.add_texts(["Berlin is the capital of Germany.", "Paris is in France."])
    message = rf"score_threshold must be a finite number or None, not {re.escape(repr(value))}"
    for call in (
        lambda: index.search("capital", score_threshold=value),
        lambda: asyncio.run(index.asearch("capital", score_threshold=value)),
        lambda: index.search_mean(["capital", "city"], score_threshold=value),
        lambda: index.store.query(dense=np.ones(tiny_encoder.dense_dim), score_threshold=value),
        lambda: index.search("capital", fusion="m3", score_threshold=value),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    assert len(index.search("capital", k=2, score_threshold=-1)) == 2
    assert len(index.search("capital", k=2, score_threshold=np.float32(-1))) == 2


@pytest.mark.parametrize("value", [1.5, True, "4", None])
def test_a_candidate_budget_that_is_not_an_int_is_refused_when_set(value: Any) -> None:
    """``QueryOptions(oversample=1.5)`` was accepted, then every search failed inside the
    engine in its own words (a TypeError on the embedded one, a pydantic ValidationError on
    qdrant-client); ``True`` read as 1."""
    from m3kit.store import QueryOptions

    for name in ("oversample", "min_candidates"):
        with pytest.raises(TypeError, match=f"{name} must be an int"):
            QueryOptions(**{name: value})
    assert QueryOptions(oversample=np.int64(2)).candidates(5) == 50  # numpy ints still work
    assert type(QueryOptions(oversample=np.int64(2)).oversample) is int
