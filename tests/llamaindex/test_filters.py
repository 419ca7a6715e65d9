"""MetadataFilters -> m3kit store filters: mapping for the simple cases, qdrant Filter beyond."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from qdrant_client import models

from llamaindex_m3.filters import to_store_filter


def _f(*filters: MetadataFilter | MetadataFilters, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=FilterCondition(condition))


def test_none_and_empty() -> None:
    assert to_store_filter(None) is None
    assert to_store_filter(MetadataFilters(filters=[])) is None


def test_equality_and_in_become_a_mapping() -> None:
    got = to_store_filter(
        _f(
            MetadataFilter(key="lang", value="en"),
            MetadataFilter(key="year", value=[2023, 2024], operator=FilterOperator.IN),
            MetadataFilter(key="score", value=0.5),
        )
    )
    assert got == {"lang": "en", "year": [2023, 2024], "score": 0.5}


def test_exact_match_filter_alias() -> None:
    from llama_index.core.vector_stores import ExactMatchFilter

    assert to_store_filter(_f(ExactMatchFilter(key="topic", value="geo"))) == {"topic": "geo"}


def test_rich_filters_become_qdrant_filters() -> None:
    got = to_store_filter(
        _f(
            MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
            _f(
                MetadataFilter(key="lang", value="en"),
                MetadataFilter(key="lang", value="de"),
                condition="or",
            ),
            MetadataFilter(key="doc_id", value="d1", operator=FilterOperator.NE),
        )
    )
    assert isinstance(got, models.Filter)
    year, either, not_doc = got.must  # type: ignore[misc]
    assert year.key == "metadata.year" and year.range == models.Range(gte=2020.0)
    assert isinstance(either, models.Filter)
    assert [c.key for c in either.should] == ["metadata.lang", "metadata.lang"]  # type: ignore[union-attr]
    assert not_doc.key == "doc_id"  # the store's own field, not metadata.doc_id
    assert not_doc.match == models.MatchExcept(**{"except": ["d1"]})


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.LT, 3, models.FieldCondition(key="metadata.k", range=models.Range(lt=3))),
        (FilterOperator.LTE, 3, models.FieldCondition(key="metadata.k", range=models.Range(lte=3))),
        (FilterOperator.GT, 3, models.FieldCondition(key="metadata.k", range=models.Range(gt=3))),
        (
            FilterOperator.NIN,
            ["a", "b"],
            models.FieldCondition(
                key="metadata.k", match=models.MatchExcept(**{"except": ["a", "b"]})
            ),
        ),
        (
            FilterOperator.ANY,
            ["a"],
            models.FieldCondition(key="metadata.k", match=models.MatchAny(any=["a"])),
        ),
        (
            FilterOperator.CONTAINS,
            "a",
            models.FieldCondition(key="metadata.k", match=models.MatchValue(value="a")),
        ),
        (
            FilterOperator.TEXT_MATCH,
            "word",
            models.FieldCondition(key="metadata.k", match=models.MatchText(text="word")),
        ),
        (
            FilterOperator.IS_EMPTY,
            None,
            models.IsEmptyCondition(is_empty=models.PayloadField(key="metadata.k")),
        ),
    ],
)
def test_each_operator(operator: FilterOperator, value: object, expected: object) -> None:
    got = to_store_filter(_f(MetadataFilter(key="k", value=value, operator=operator)))  # type: ignore[arg-type]
    assert isinstance(got, models.Filter)
    assert got.must == [expected]


def test_all_means_every_value() -> None:
    got = to_store_filter(
        _f(MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ALL))
    )
    assert isinstance(got, models.Filter)
    assert [c.match.value for c in got.must] == ["a", "b"]  # type: ignore[union-attr]


def test_not_condition() -> None:
    got = to_store_filter(_f(MetadataFilter(key="lang", value="en"), condition="not"))
    assert isinstance(got, models.Filter) and got.must_not and not got.must


def test_unsupported_operator_is_named() -> None:
    bad = _f(MetadataFilter(key="t", value="Word", operator=FilterOperator.TEXT_MATCH_INSENSITIVE))
    with pytest.raises(NotImplementedError, match="TEXT_MATCH_INSENSITIVE.*supported"):
        to_store_filter(bad)


@pytest.mark.parametrize(
    ("operator", "value", "message"),
    [
        (FilterOperator.GT, "x", "compares numbers"),
        (FilterOperator.IN, [], "empty"),
        (FilterOperator.IN, [1.5, 2.5], "strings or integers"),
        (FilterOperator.EQ, None, "takes one value"),
        (FilterOperator.TEXT_MATCH, 3, "needs a string"),
    ],
)
def test_bad_values(operator: FilterOperator, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_store_filter(_f(MetadataFilter(key="k", value=value, operator=operator)))  # type: ignore[arg-type]
