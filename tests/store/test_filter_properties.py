"""Filters select exactly what a plain-Python reading of them selects, on every backend.

Hypothesis writes random metadata (strings, ints, floats, bools, ``null``, lists of strings,
missing keys) to a store on each backend (embedded edge, qdrant-client in memory and in a
folder), queries it with random nested filters (LlamaIndex ``MetadataFilters`` through
``llamaindex_m3.filters``, and the LangChain / core ``{key: value}`` mapping form), and
compares the returned ids with :func:`_matches` / :func:`_mapping_matches` below; and the
same LlamaIndex filters through ``to_flat_payload_filter`` (``M3QdrantVectorStore``) on
LlamaIndex's own Qdrant payload layout (metadata keys at the top level).

The evaluator is written from the documented semantics (:mod:`m3kit.store.conditions`),
not from the translation code:

* the *values* of a key: none for a missing key or ``null``, the elements of a list, else
  the value itself;
* equality: strings equal strings, bools equal bools, numbers compare by value (``1 == 1.0``);
* ``EQ`` / ``CONTAINS``: some value equals; ``NE``: not ``EQ`` (a missing key matches, a list
  matches only when no element equals); ``IN`` / ``ANY``: some value equals some listed one;
  ``NIN``: not ``IN``; ``ALL``: every listed value equals some value; ranges: some number (not
  bool) value compares; ``TEXT_MATCH``: some string value contains the text; ``IS_EMPTY``: no
  values;
* ``AND``: all; ``OR``: any; ``NOT``: none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from llamaindex_m3.filters import to_flat_payload_filter, to_store_filter
from m3kit.outputs import Head, M3Output
from m3kit.store import ChunkRecord, M3Store
from tests.store.conftest import BACKENDS

_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_MAX_DOCS = 8
_DOC_IDS = [f"d{i}" for i in range(_MAX_DOCS)]

KEYS = ("a", "b", "c")
strings = st.sampled_from(["", "x", "y", "xy", "Xy", "y x"])
ints = st.integers(-3, 3)
floats = st.sampled_from([-1.5, 0.0, 1.0, 2.0, 2.5])  # some equal an int
numbers = st.one_of(ints, floats)
stored_value = st.one_of(
    strings, ints, floats, st.booleans(), st.none(), st.lists(strings, max_size=3)
)
metadata = st.dictionaries(st.sampled_from(KEYS), stored_value, max_size=3)
payloads = st.lists(metadata, min_size=1, max_size=_MAX_DOCS)

_VALUE: dict[FilterOperator, st.SearchStrategy[Any]] = {
    FilterOperator.EQ: st.one_of(strings, numbers),
    FilterOperator.NE: st.one_of(strings, numbers),
    FilterOperator.CONTAINS: st.one_of(strings, numbers),
    FilterOperator.GT: numbers,
    FilterOperator.GTE: numbers,
    FilterOperator.LT: numbers,
    FilterOperator.LTE: numbers,
    FilterOperator.TEXT_MATCH: strings,
    FilterOperator.IS_EMPTY: st.none(),
    **{
        op: st.one_of(
            st.lists(strings, min_size=1, max_size=3),
            st.lists(ints, min_size=1, max_size=3),
            st.lists(floats, min_size=1, max_size=3),
        )
        for op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL)
    },
}
leaf = st.sampled_from(sorted(_VALUE, key=lambda o: o.name)).flatmap(
    lambda op: st.builds(
        MetadataFilter, key=st.sampled_from(KEYS), value=_VALUE[op], operator=st.just(op)
    )
)
conditions = st.sampled_from(list(FilterCondition))


def _group(children: st.SearchStrategy[Any]) -> st.SearchStrategy[MetadataFilters]:
    return st.builds(
        MetadataFilters, filters=st.lists(children, min_size=1, max_size=3), condition=conditions
    )


llama_filters = _group(st.recursive(leaf, _group, max_leaves=6))

mapping_value = st.one_of(strings, numbers, st.booleans())
mappings = st.dictionaries(
    st.sampled_from(KEYS),
    st.one_of(mapping_value, st.lists(mapping_value, min_size=1, max_size=3)),
    min_size=1,
    max_size=3,
)


# -- the reference evaluator ------------------------------------------------------------------
def _values(meta: Mapping[str, Any], key: str) -> list[Any]:
    v = meta.get(key)
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if _is_number(x) and _is_number(y):
        return bool(x == y)
    return isinstance(x, str) and isinstance(y, str) and x == y


def _leaf_matches(f: MetadataFilter, meta: Mapping[str, Any]) -> bool:
    vs, v, op = _values(meta, f.key), f.value, f.operator
    has = lambda y: any(_same(x, y) for x in vs)  # noqa: E731
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):
        return has(v)
    if op is FilterOperator.NE:
        return not has(v)
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return any(has(y) for y in v)  # type: ignore[union-attr]
    if op is FilterOperator.NIN:
        return not any(has(y) for y in v)  # type: ignore[union-attr]
    if op is FilterOperator.ALL:
        return all(has(y) for y in v)  # type: ignore[union-attr]
    if op is FilterOperator.TEXT_MATCH:
        return any(isinstance(x, str) and v in x for x in vs)  # type: ignore[operator]
    if op is FilterOperator.IS_EMPTY:
        return not vs
    compare = {
        FilterOperator.GT: lambda x: x > v,
        FilterOperator.GTE: lambda x: x >= v,
        FilterOperator.LT: lambda x: x < v,
        FilterOperator.LTE: lambda x: x <= v,
    }[op]
    return any(_is_number(x) and compare(x) for x in vs)


def _matches(filters: MetadataFilters, meta: Mapping[str, Any]) -> bool:
    results = [
        _matches(f, meta) if isinstance(f, MetadataFilters) else _leaf_matches(f, meta)
        for f in filters.filters
    ]
    if filters.condition is FilterCondition.OR:
        return any(results)
    if filters.condition is FilterCondition.NOT:
        return not any(results)
    return all(results)


def _mapping_matches(mapping: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    def one(key: str, want: Any) -> bool:
        options = want if isinstance(want, list) else [want]
        return any(_same(x, y) for x in _values(meta, key) for y in options)

    return all(one(k, v) for k, v in mapping.items())


# -- the stores -------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=list(BACKENDS))
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[M3Store]:
    kind, on_disk = BACKENDS[str(request.param)]
    location: Path | None = tmp_path_factory.mktemp("filters") if on_disk else None
    s = M3Store.open(
        location, collection="filters", dense_dim=4, colbert_dim=None, sparse=False, backend=kind
    )
    yield s
    s.close()


_DENSE = np.full((1, 4), 0.5, dtype=np.float32)


def _write(store: M3Store, metas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Replace the store's contents with one single-chunk document per metadata."""
    store.delete_documents(_DOC_IDS)
    vectors = M3Output(heads=frozenset({Head.DENSE}), token_counts=(1,), _dense=_DENSE)
    docs = dict(zip(_DOC_IDS, metas, strict=False))
    store.upsert(
        ChunkRecord(doc_id=d, chunk_index=0, text=d, metadata=m, vectors=vectors)
        for d, m in docs.items()
    )
    assert store.count() == len(docs)
    return docs


def _selected(store: M3Store, flt: Any) -> set[str]:
    hits = store.query(dense=_DENSE[0], k=100, filter=flt)
    got = {h.doc_id for h in hits}
    assert len(got) == len(hits) == store.count(flt)
    return got


# -- properties -------------------------------------------------------------------------------
@_SETTINGS
@given(metas=payloads, filters=st.lists(llama_filters, min_size=1, max_size=6))
def test_llamaindex_filters_select_what_python_selects(
    store: M3Store, metas: list[dict[str, Any]], filters: list[MetadataFilters]
) -> None:
    docs = _write(store, metas)
    for f in filters:
        want = {d for d, meta in docs.items() if _matches(f, meta)}
        assert _selected(store, to_store_filter(f)) == want, (f, docs)


@pytest.fixture(scope="module")
def flat_collection() -> Iterator[Any]:
    """A qdrant-client in-memory collection written as LlamaIndex's ``QdrantVectorStore``
    lays out a node's payload: its metadata keys at the top level."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(
        "flat", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    yield client
    client.close()


@_SETTINGS
@given(metas=payloads, filters=st.lists(llama_filters, min_size=1, max_size=6))
def test_llamaindex_filters_on_the_flat_payload_select_what_python_selects(
    flat_collection: Any, metas: list[dict[str, Any]], filters: list[MetadataFilters]
) -> None:
    from qdrant_client import models

    flat_collection.delete("flat", points_selector=models.FilterSelector(filter=models.Filter()))
    docs = dict(zip(_DOC_IDS, metas, strict=False))
    flat_collection.upsert(
        "flat",
        [
            models.PointStruct(id=i, vector=[0.5] * 4, payload={**meta, "doc": d})
            for i, (d, meta) in enumerate(docs.items())
        ],
    )
    for f in filters:
        want = {d for d, meta in docs.items() if _matches(f, meta)}
        flt = to_flat_payload_filter(f)
        points, _ = flat_collection.scroll("flat", scroll_filter=flt, limit=100)
        assert {p.payload["doc"] for p in points} == want, (f, docs)


@_SETTINGS
@given(metas=payloads, maps=st.lists(mappings, min_size=1, max_size=6))
def test_mapping_filters_select_what_python_selects(
    store: M3Store, metas: list[dict[str, Any]], maps: list[dict[str, Any]]
) -> None:
    docs = _write(store, metas)
    for m in maps:
        want = {d for d, meta in docs.items() if _mapping_matches(m, meta)}
        assert _selected(store, m) == want, (m, docs)


# -- the cases of the issue, spelled out --------------------------------------------------------
_ISSUE_DOCS = [
    {"tags": ["a", "b"], "lang": "de"},  # both tags
    {"tags": ["a"], "lang": "de"},  # one tag
    {"tags": "b", "lang": "en"},  # English, one tag (a scalar)
    {"lang": "fr"},  # no tags
    {"tags": [], "lang": None},  # empty tags, null lang
]


def _all_ab() -> MetadataFilter:
    return MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ALL)


@pytest.mark.parametrize(
    ("filters", "want"),
    [
        (
            MetadataFilters(
                filters=[_all_ab(), MetadataFilter(key="lang", value="en")], condition="or"
            ),
            {"d0", "d2"},
        ),
        (MetadataFilters(filters=[_all_ab()], condition="not"), {"d1", "d2", "d3", "d4"}),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="tags", value="a", operator=FilterOperator.NE)]
            ),
            {"d2", "d3", "d4"},
        ),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="lang", value=["de", "en"], operator="nin")]
            ),
            {"d3", "d4"},
        ),
        (
            MetadataFilters(filters=[MetadataFilter(key="tags", value=None, operator="is_empty")]),
            {"d3", "d4"},
        ),
    ],
    ids=["or-all", "not-all", "ne-list", "nin-missing", "is-empty"],
)
def test_issue_cases(store: M3Store, filters: MetadataFilters, want: set[str]) -> None:
    docs = _write(store, _ISSUE_DOCS)
    assert {d for d, meta in docs.items() if _matches(filters, meta)} == want
    assert _selected(store, to_store_filter(filters)) == want


def test_numbers_compare_by_value_and_bools_are_not_numbers(store: M3Store) -> None:
    _write(store, [{"n": 1}, {"n": 1.0}, {"n": True}, {"n": "1"}, {"n": [1.0]}])
    assert _selected(store, {"n": 1}) == {"d0", "d1", "d4"}
    assert _selected(store, {"n": 1.0}) == {"d0", "d1", "d4"}
    assert _selected(store, {"n": True}) == {"d2"}
    assert _selected(store, {"n": "1"}) == {"d3"}
    assert _selected(store, {"n": [True, "1"]}) == {"d2", "d3"}
