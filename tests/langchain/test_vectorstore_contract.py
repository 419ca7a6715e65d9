"""M3VectorStore against langchain-qdrant's contract: what is stored comes back as it was, or
the write fails saying why (never a silently changed value)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_metadata_integers_beyond_64_bits_are_refused_not_stored_as_floats(
    tiny_encoder: M3Encoder, backend: str
) -> None:
    """The embedded engine (and a server's JSON API) keep a payload integer in 64 bits; a
    larger one came back as an inexact float (2**70 -> 1.1805916207174113e+21)."""
    with M3VectorStore.open(tiny_encoder, backend=backend) as store:
        fits = {"lo": -(2**63), "hi": 2**64 - 1, "deep": [{"n": 2**53 + 1}]}
        store.add_texts(["fits"], [fits], ids=["fits"])
        assert store.get_by_ids(["fits"])[0].metadata == fits
        for value, where in [
            (2**70, "['big']"),
            (-(2**63) - 1, "['big']"),
            ([1, {"x": 2**64}], "['big'][1]['x']"),
        ]:
            with pytest.raises(ValueError, match="64-bit") as info:
                store.add_texts(["too big"], [{"big": value}], ids=["big"])
            assert where in str(info.value)
            assert "string" in str(info.value)
        assert store.get_by_ids(["big"]) == []


@pytest.mark.parametrize(
    "value",
    [
        [{"key": "metadata.t", "match": {"value": "x"}}],  # a qdrant Filter's JSON form
        ["x", ["y"]],
        [None],
    ],
    ids=["dict", "nested-list", "none"],
)
def test_a_filter_list_holding_a_non_scalar_is_an_error_naming_the_key(
    tiny_encoder: M3Encoder, value: list[object]
) -> None:
    """An any-of list with a dict or a list in it failed with a bare ``TypeError:
    unhashable type: 'dict'`` from inside the filter builder, naming neither key nor value."""
    with M3VectorStore.from_texts(["a", "b"], tiny_encoder, [{"t": "x"}, {"t": "y"}]) as store:
        for search in (
            lambda: store.similarity_search("a", filter={"must": value}),
            lambda: store.as_retriever(search_kwargs={"filter": {"must": value}}).invoke("a"),
            lambda: store.as_m3_retriever().invoke("a", filter={"must": value}),
        ):
            with pytest.raises(ValueError, match=r"filter on 'metadata\.must' \(any of\)") as info:
                search()
            assert repr(value[-1]) in str(info.value)
            assert "string, bool, int or float" in str(info.value)


def test_a_none_metadata_entry_is_no_metadata_as_in_langchain_qdrant(
    tiny_encoder: M3Encoder,
) -> None:
    """``add_texts(texts, [None, {...}])`` stores the first text without metadata in
    langchain-qdrant; here it failed with ``TypeError: 'NoneType' object is not iterable``."""
    with M3VectorStore.from_texts(
        ["a", "b"], tiny_encoder, [None, {"t": 1}], ids=["a", "b"]
    ) as store:
        assert [d.metadata for d in store.get_by_ids(["a", "b"])] == [{}, {"t": 1}]
        store.add_texts(["c"], [None], ids=["c"])
        assert store.get_by_ids(["c"])[0].metadata == {}
        retriever = store.as_m3_retriever()
        retriever.add_texts(["d"], [None], ids=["d"])
        assert store.get_by_ids(["d"])[0].metadata == {}
        with pytest.raises(TypeError, match=r"metadatas\[1\] is str, not a dict"):
            store.add_texts(["e", "f"], [{}, "oops"])  # type: ignore[list-item]


def _sorted_ids(docs: list[Document]) -> list[str]:
    return sorted(str(d.id) for d in docs)


@pytest.mark.parametrize("kind", [set, frozenset])
def test_a_set_of_ids_filters_as_any_of_as_it_does_for_every_other_key(
    tiny_encoder: M3Encoder, kind: type[frozenset[object]]
) -> None:
    """A set is any-of in a filter mapping (``{"t": {"x", "y"}}``), but on the keys the
    returned documents show (``doc_id``; ``chunk_index`` in ``M3Retriever``) it failed with
    ``value {...} (set) is not supported; use a string, bool, int or float``."""
    with M3VectorStore.from_texts(
        ["a", "b", "c"], tiny_encoder, [{"t": "x"}, {"t": "y"}, {"t": "z"}], ids=["a", "b", "c"]
    ) as store:
        by_topic = store.similarity_search("a", filter={"t": kind({"x", "y"})})
        assert _sorted_ids(by_topic) == ["a", "b"]
        wanted = kind({"a", "c"})
        assert _sorted_ids(store.similarity_search("a", filter={"doc_id": wanted})) == ["a", "c"]
        retriever = store.as_m3_retriever(k=3, filter={"doc_id": wanted})
        assert _sorted_ids(retriever.invoke("a")) == ["a", "c"]
        firsts = retriever.invoke("a", filter={"chunk_index": kind({0}), "doc_id": kind({"b"})})
        assert [d.id for d in firsts] == ["b"]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_filter_on_a_flat_dotted_key_finds_the_documents_holding_it(
    tiny_encoder: M3Encoder, backend: str
) -> None:
    """A flat metadata key with a dot (``"file.name"``, as LlamaIndex readers and many
    loaders write it) was filtered as the nested path ``file -> name``: every search, both
    retrievers and ``delete_points`` silently matched nothing. A dotted key now matches the
    flat key where a document has it, else the nested path."""
    with M3VectorStore.open(tiny_encoder, backend=backend) as store:
        store.add_texts(
            ["Oxygen is a gas.", "Iron is a metal.", "Gold is a metal."],
            [{"file.name": "a.pdf"}, {"file": {"name": "a.pdf"}}, {"file.name": "b.pdf"}],
            ids=["flat", "nested", "other"],
        )
        wanted = {"file.name": "a.pdf"}
        assert sorted(d.id for d in store.similarity_search("metal", k=5, filter=wanted)) == [
            "flat",
            "nested",
        ]
        retriever = store.as_retriever(search_kwargs={"k": 5, "filter": wanted})
        assert sorted(d.id for d in retriever.invoke("metal")) == ["flat", "nested"]
        m3 = store.as_m3_retriever(k=5, filter={"file.name": ["b.pdf"]})
        assert [d.id for d in m3.invoke("metal")] == ["other"]
        store.index.store.delete_points(filter=wanted)  # the README's recipe
        assert [d.id for d in store.get_by_ids(["flat", "nested", "other"])] == ["other"]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_doc_id_filter_reads_a_childs_own_doc_id_before_its_id(
    tiny_encoder: M3Encoder, backend: str
) -> None:
    """``MultiVectorRetriever`` children point at their parent by ``metadata["doc_id"]``
    (its default ``id_key``) and often have short ids of their own: ``{"doc_id": "1"}`` also
    matched the child whose own id is ``"1"`` (another parent's), so a search meant for one
    parent returned another too. A chunk's metadata ``doc_id`` now wins; a document without
    one is still found by its id."""
    children = [
        Document("What is the capital of Germany?", id="0", metadata={"doc_id": "p0"}),
        Document("Which element has number 8?", id="1", metadata={"doc_id": "1"}),
        Document("How long is the Nile?", id="2", metadata={"doc_id": "0"}),
        Document("A document of no parent.", id="3"),
    ]
    with M3VectorStore.from_documents(children, tiny_encoder, backend=backend) as store:
        for wanted, ids in [("1", ["1"]), ("0", ["2"]), ("p0", ["0"]), ("3", ["3"])]:
            assert _sorted_ids(store.similarity_search("a", k=4, filter={"doc_id": wanted})) == ids
        both = store.similarity_search("a", k=4, filter={"doc_id": ["0", "3"]})
        assert _sorted_ids(both) == ["2", "3"]
