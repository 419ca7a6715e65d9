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
from llamaindex_m3.sourceless import sourceless_filter


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

    # NE is "no value equals": a nested must_not, which a missing key also satisfies; doc_id
    # names the node's document: the store's own field, as in LlamaIndex's stores, and "None"
    # for a node without a source, which NE "d1" also takes (llamaindex_m3.sourceless)
    of_documents = models.Filter(
        must=[
            models.Filter(
                must_not=[models.FieldCondition(key="doc_id", match=models.MatchValue(value="d1"))]
            )
        ],
        must_not=[sourceless_filter()],
    )
    assert not_doc == models.Filter(should=[of_documents, sourceless_filter()])


def _key(**kw: object) -> models.FieldCondition:
    return models.FieldCondition(key="metadata.k", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.EQ, "a", _key(match=models.MatchValue(value="a"))),
        # numbers compare by value: a closed range also matches 3.0 (MatchValue would not)
        (FilterOperator.EQ, 3, _key(range=models.Range(gte=3, lte=3))),
        (FilterOperator.EQ, 0.5, _key(range=models.Range(gte=0.5, lte=0.5))),
        (FilterOperator.LT, 3, _key(range=models.Range(lt=3))),
        (FilterOperator.LTE, 3, _key(range=models.Range(lte=3))),
        (FilterOperator.GT, 3, _key(range=models.Range(gt=3))),
        (FilterOperator.GTE, 2.5, _key(range=models.Range(gte=2.5))),
        (
            FilterOperator.NE,
            "a",
            models.Filter(must_not=[_key(match=models.MatchValue(value="a"))]),
        ),
        (
            FilterOperator.NIN,
            ["a", "b"],
            models.Filter(must_not=[_key(match=models.MatchAny(any=["a", "b"]))]),
        ),
        (FilterOperator.IN, ["a", "b"], _key(match=models.MatchAny(any=["a", "b"]))),
        (FilterOperator.ANY, ["a"], _key(match=models.MatchValue(value="a"))),
        (
            FilterOperator.IN,
            [1.5, 2],
            models.Filter(
                should=[
                    _key(range=models.Range(gte=1.5, lte=1.5)),
                    _key(range=models.Range(gte=2, lte=2)),
                ]
            ),
        ),
        (FilterOperator.CONTAINS, "a", _key(match=models.MatchValue(value="a"))),
        (FilterOperator.TEXT_MATCH, "wo", _key(match=models.MatchSubstring(substring="wo"))),
        (
            FilterOperator.IS_EMPTY,
            None,
            models.IsEmptyCondition(is_empty=models.PayloadField(key="metadata.k")),
        ),
    ],
)
def test_each_operator(operator: FilterOperator, value: object, expected: object) -> None:
    got = to_store_filter(
        _f(
            MetadataFilter(key="k", value=value, operator=operator),  # type: ignore[arg-type]
            MetadataFilter(key="other", value=1, operator=FilterOperator.GT),  # no mapping form
        )
    )
    assert isinstance(got, models.Filter)
    assert got.must[0] == expected  # type: ignore[index]


def test_all_is_one_nested_condition_inside_or_and_not() -> None:
    tags = MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ALL)
    both = models.Filter(
        must=[
            models.FieldCondition(key="metadata.tags", match=models.MatchValue(value=v))
            for v in ("a", "b")
        ]
    )
    either = to_store_filter(_f(tags, MetadataFilter(key="lang", value="en"), condition="or"))
    assert isinstance(either, models.Filter) and either.should[0] == both  # type: ignore[index]
    assert len(either.should) == 2  # type: ignore[arg-type]
    neither = to_store_filter(_f(tags, condition="not"))
    assert neither == models.Filter(must_not=[both])


def test_not_condition() -> None:
    got = to_store_filter(_f(MetadataFilter(key="lang", value="en"), condition="not"))
    assert isinstance(got, models.Filter) and got.must_not and not got.must


def test_nested_groups_stay_nested() -> None:
    inner = _f(MetadataFilter(key="a", value="x"), MetadataFilter(key="b", value="y"))
    got = to_store_filter(_f(inner, MetadataFilter(key="c", value="z"), condition="not"))
    assert isinstance(got, models.Filter) and len(got.must_not) == 2  # type: ignore[arg-type]
    assert isinstance(got.must_not[0], models.Filter) and len(got.must_not[0].must) == 2  # type: ignore[index,arg-type]


def test_text_match_insensitive_is_refused_by_name() -> None:
    bad = _f(MetadataFilter(key="t", value="Word", operator=FilterOperator.TEXT_MATCH_INSENSITIVE))
    with pytest.raises(NotImplementedError, match="TEXT_MATCH_INSENSITIVE.*no exact Qdrant"):
        to_store_filter(bad)


def test_empty_nested_group_is_refused() -> None:
    with pytest.raises(ValueError, match="empty nested MetadataFilters"):
        to_store_filter(_f(MetadataFilter(key="a", value="x"), _f(), condition="or"))


@pytest.mark.parametrize(
    ("operator", "value", "message"),
    [
        (FilterOperator.GT, "x", "compares numbers"),
        (FilterOperator.GT, float("nan"), "not a finite number"),
        (FilterOperator.EQ, 2**60, "beyond"),
        (FilterOperator.IN, [], "empty"),
        (FilterOperator.IN, "a", "takes a list"),
        (FilterOperator.ALL, "a", "takes a list"),
        (FilterOperator.EQ, None, "takes one value"),
        (FilterOperator.EQ, ["a"], "takes one value"),
        (FilterOperator.TEXT_MATCH, 3, "needs a string"),
    ],
)
def test_bad_values(operator: FilterOperator, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_store_filter(_f(MetadataFilter(key="k", value=value, operator=operator)))  # type: ignore[arg-type]


@pytest.mark.parametrize("operator", [FilterOperator.NE, FilterOperator.GTE, FilterOperator.NIN])
def test_a_key_with_a_space_is_quoted(tiny_embedding: object, operator: FilterOperator) -> None:
    """LangChain's header splitter writes 'Header 1': every operator addresses it (non-equality
    ones built 'metadata.Header 1', which Qdrant refused as an invalid JSON path)."""
    from llama_index.core.schema import TextNode

    from llamaindex_m3 import M3VectorStore

    value: object = {FilterOperator.NE: "Intro", FilterOperator.GTE: 2}.get(operator, ["Intro"])
    got = to_store_filter(_f(MetadataFilter(key="Header 1", value=value, operator=operator)))
    assert isinstance(got, models.Filter) and 'metadata."Header 1"' in repr(got)
    with M3VectorStore(tiny_embedding) as store:  # type: ignore[arg-type]
        nodes = [
            TextNode(text="Intro text.", id_="a", metadata={"Header 1": "Intro"}),
            TextNode(text="Second part.", id_="b", metadata={"Header 1": 3}),
        ]
        store.add(nodes)
        found = store.get_nodes(
            filters=_f(MetadataFilter(key="Header 1", value=value, operator=operator))
        )
        assert [n.node_id for n in found] == ["b"]


def test_keys_are_flat_and_document_keys_name_the_document(tiny_embedding: object) -> None:
    """As in LlamaIndex's stores: a key with a dot or brackets is the flat key where the node
    has it (it was read only as a nested path: the wrong node, or none), else the nested path
    (the stock Qdrant store's reading); ref_doc_id / document_id name the node's document (they
    matched nothing)."""
    from llama_index.core import Document
    from llama_index.core.schema import NodeRelationship, TextNode
    from llama_index.core.vector_stores import SimpleVectorStore, VectorStoreQuery

    from llamaindex_m3 import M3VectorStore

    meta = {
        "n1": ("docA", {"file.name": "a.txt", "x[]": "v", "Header 1": "Intro"}),
        "n2": ("docB", {"file": {"name": "b.txt"}, "doc_id": "mine"}),
        "n3": ("docB", {"file": {"name": "a.txt"}}),
    }

    def nodes(embedded: bool) -> list[TextNode]:
        out = []
        for node_id, (doc, metadata) in meta.items():
            node = TextNode(text=f"text {node_id}", id_=node_id, metadata=dict(metadata))
            node.relationships[NodeRelationship.SOURCE] = Document(
                text="x", id_=doc
            ).as_related_node_info()
            node.embedding = [1.0, 0.0] if embedded else None
            out.append(node)
        return out

    simple = SimpleVectorStore()
    simple.add(nodes(True))
    cases = [
        ("x[]", "v"),
        ("Header 1", "Intro"),
        *(
            (key, doc)
            for key in ("doc_id", "ref_doc_id", "document_id")
            for doc in ("docA", "docB", "mine")
        ),
    ]
    with M3VectorStore(tiny_embedding) as store:  # type: ignore[arg-type]
        store.add(nodes(False))
        for key, value in cases:
            for op in ("==", "!="):
                filters = _f(MetadataFilter(key=key, value=value, operator=op))
                want = simple.query(
                    VectorStoreQuery(
                        query_embedding=[1.0, 0.0], similarity_top_k=9, filters=filters
                    )
                ).ids
                got = [n.node_id for n in store.get_nodes(filters=filters)]
                assert sorted(got) == sorted(want), (key, op, value)
        # a dotted key: the flat key of n1, else the nested paths of n2 and n3
        for op, want in (("==", ["n1", "n3"]), ("!=", ["n2"])):
            filters = _f(MetadataFilter(key="file.name", value="a.txt", operator=op))
            assert sorted(n.node_id for n in store.get_nodes(filters=filters)) == want, op
