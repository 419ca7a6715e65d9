"""One id rule: same text + other metadata is another document; an edit replaces only by id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m3kit.store import M3Index
from m3kit.store.index import content_doc_id

TEXT = "Berlin is the capital of Germany."


def _stored(index: M3Index) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{doc_id: (text, metadata)}`` of every stored document (one chunk each here)."""
    metadata = index.store.document_metadata()
    texts = {
        str(h.payload["doc_id"]): str(h.payload["page_content"])
        for h in index.store._backend.scroll(None, ["doc_id", "page_content"])
    }
    return {d: (texts[d], m) for d, m in metadata.items()}


def test_default_id_is_text_plus_metadata() -> None:
    assert content_doc_id(TEXT) == hashlib.sha256(TEXT.encode()).hexdigest()[:32]  # as before
    assert content_doc_id(TEXT, {}) == content_doc_id(TEXT)
    assert content_doc_id(TEXT, {"lang": "en"}) != content_doc_id(TEXT, {"lang": "de"})
    assert content_doc_id(TEXT, {"lang": "en"}) != content_doc_id(TEXT)
    assert content_doc_id(TEXT, {"a": 1, "b": [1, 2]}) == content_doc_id(
        TEXT, {"b": [1, 2], "a": 1}
    )
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        content_doc_id(TEXT, {"a": object()})


def test_same_text_other_metadata_in_one_call_is_two_documents(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    ids = index.add_texts([TEXT, TEXT, TEXT], metadatas=[{"lang": "en"}, {"lang": "de"}, None])
    assert len(set(ids)) == 3
    stored = _stored(index)
    assert sorted(m.get("lang", "-") for _, m in stored.values()) == ["-", "de", "en"]
    assert index.count() == 3


def test_a_json_record_as_text_is_never_the_text_and_metadata_it_spells(
    open_index: Callable[..., M3Index], tiny_encoder: Any, tmp_path: Path
) -> None:
    # '["hello",{"a":1}]' without metadata hashed to the id of "hello" with {"a": 1}: adding
    # the second silently replaced the first (in one call: a "given twice" error)
    record = json.dumps(["hello", {"a": 1}], separators=(",", ":"))
    assert content_doc_id(record) != content_doc_id("hello", {"a": 1})
    assert (
        content_doc_id('["hello", {"a": 1}]')
        == hashlib.sha256(  # not that blob: as before
            b'["hello", {"a": 1}]'
        ).hexdigest()[:32]
    )
    index = open_index(tiny_encoder)
    index.add_texts([record])
    index.add_texts(["hello"], metadatas=[{"a": 1}])
    assert sorted(_stored(index).values(), key=str) == [(record, {}), ("hello", {"a": 1})]
    other = open_index(tiny_encoder, location=tmp_path / "other")  # both in one call
    assert len(set(other.add_texts([record, "hello"], metadatas=[None, {"a": 1}]))) == 2


def test_identical_documents_in_one_call_are_stored_once(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    ids = index.add_texts([TEXT, TEXT], metadatas=[{"lang": "en"}, {"lang": "en"}])
    assert ids[0] == ids[1] and index.count() == 1


def test_same_text_other_metadata_across_calls_is_kept(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    (first,) = index.add_texts([TEXT], metadatas=[{"source": "a.txt"}])
    (second,) = index.add_texts([TEXT], metadatas=[{"source": "b.txt"}])
    assert first != second
    assert {m["source"] for _, m in _stored(index).values()} == {"a.txt", "b.txt"}
    (again,) = index.add_texts([TEXT], metadatas=[{"source": "a.txt"}])
    assert again == first and index.count() == 2  # the same document again adds nothing


def test_edit_with_the_same_id_replaces(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts([TEXT], metadatas=[{"v": 1}], doc_ids=["doc"])
    index.add_texts(
        [TEXT + " It has 3.8 million inhabitants."], metadatas=[{"v": 2}], doc_ids=["doc"]
    )
    assert _stored(index) == {"doc": (TEXT + " It has 3.8 million inhabitants.", {"v": 2})}


def test_edit_without_an_id_adds_a_new_document(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    (old,) = index.add_texts([TEXT])
    (new,) = index.add_texts([TEXT + " Edited."])
    assert old != new
    assert sorted(t for t, _ in _stored(index).values()) == [TEXT, TEXT + " Edited."]
    index.delete([old])  # the documented way to drop the old version
    assert list(_stored(index)) == [new]


def test_one_id_with_two_contents_in_one_call_is_an_error(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    with pytest.raises(ValueError, match="doc_id 'x' is given twice with different content"):
        index.add_texts([TEXT, TEXT + "!"], doc_ids=["x", "x"])
    assert index.count() == 0
