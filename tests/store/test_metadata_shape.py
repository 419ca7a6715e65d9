"""A text's metadata is a mapping or ``None``; anything else is refused, naming the text.

``add_texts`` read a falsy non-mapping metadata (``0``, ``False``, ``""``, ``[]``) as no
metadata and stored the document without it, silently, and turned a list of pairs into a
dict; ``index_with_ray`` refuses such rows (``tests/distributed/test_ray_rows.py``), and so
does every ``add_texts`` now, before anything is encoded or written.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from m3kit.store import ChunkRecord, M3Index, output_row
from tests.store.conftest import stored_texts


@pytest.mark.parametrize(
    "metadata",
    [0, False, "", [], [("source", "a.txt")], "source=a.txt", 3.5],
    ids=["zero", "false", "empty-str", "empty-list", "pairs", "str", "float"],
)
def test_a_metadata_that_is_not_a_mapping_is_refused_naming_the_text(
    open_index: Callable[..., M3Index], tiny_encoder: Any, metadata: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(["kept text"], [{"v": 1}], ["A"])
    before = stored_texts(index)
    with pytest.raises(TypeError, match=r"metadata of text 1 must be a mapping \(or None"):
        index.add_texts(["new text", "other text"], [{"v": 2}, metadata], ["A", "B"])
    assert stored_texts(index) == before
    assert index.store.count() == 1


def test_none_and_mappings_are_still_accepted(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(
        ["one", "two", "three"], [None, {}, MappingProxyType({"k": "v"})], ["A", "B", "C"]
    )
    metas = {h.doc_id: h.metadata for h in index.search("three", k=3)}
    assert metas == {"A": {}, "B": {}, "C": {"k": "v"}}


@pytest.mark.parametrize(
    "metadata",
    [{1: "a", "1": "b"}, {"nested": {True: 1, "true": 2}}],
    ids=["int-and-str", "nested-bool-and-str"],
)
def test_two_keys_that_are_one_json_key_are_refused(
    open_index: Callable[..., M3Index], tiny_encoder: Any, metadata: dict[Any, Any]
) -> None:
    """``1`` and ``"1"`` (or ``True`` and ``"true"``) are one JSON key: the last value
    replaced the first silently, through ``add_texts`` and ``M3Store.upsert`` alike."""
    index = open_index(tiny_encoder)
    with pytest.raises(ValueError, match="metadata of text 0 has the key .* twice in one object"):
        index.add_texts(["a text"], [metadata], ["A"])
    out = tiny_encoder.encode(["a text"])
    record = ChunkRecord("A", 0, "a text", metadata, output_row(out, 0))
    with pytest.raises(ValueError, match="twice in one object"):
        index.store.upsert([record])
    assert index.store.count() == 0


def test_int_and_str_keys_are_stored_by_a_plain_upsert(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    """Metadata with an int and a str key (distinct as JSON keys) failed ``M3Store.upsert``
    with json's "'<' not supported between instances of 'str' and 'int'" when it hashed the
    document's version."""
    index = open_index(tiny_encoder)
    out = tiny_encoder.encode(["a text"])
    index.store.upsert([ChunkRecord("A", 0, "a text", {1: "a", "b": 2}, output_row(out, 0))])
    assert index.store.document_metadata(["A"]) == {"A": {"1": "a", "b": 2}}


@pytest.mark.parametrize("doc_ids", [["A"], None], ids=["ids", "content-ids"])
def test_int_and_str_keys_are_stored_by_add_texts(
    open_index: Callable[..., M3Index], tiny_encoder: Any, doc_ids: list[str] | None
) -> None:
    """``{1: "a", "b": 2}`` is JSON (``{"1": "a", "b": 2}``, as a plain upsert stores it), but
    ``add_texts`` refused it with "'<' not supported between instances of 'str' and 'int'"
    (sorting its keys for the document's hash and content id)."""
    index = open_index(tiny_encoder)
    metadata = {1: "a", "b": {2: "c", "d": 3}}
    first = index.add_texts(["a text"], [metadata], doc_ids)
    assert index.add_texts(["a text"], [metadata], doc_ids) == first  # unchanged: kept
    assert index.store.count() == 1
    assert index.search("a text", k=1)[0].metadata == {"1": "a", "b": {"2": "c", "d": 3}}


def test_content_ids_of_sortable_keys_are_kept() -> None:
    """Golden values of the content id before mixed keys were accepted: documents stored
    under them are found again (an int-keyed mapping sorts by number, not as its JSON)."""
    from m3kit.store.documents import content_doc_id

    assert content_doc_id("t", {1: "a", 2: "b", 10: "c"}) == "c96127c6f76c25064bc54c3de7c33fc6"
    assert content_doc_id("t", {"b": 1, "a": 2}) == "6325a5e847de4fe75e6a9ef5683f1e9d"
