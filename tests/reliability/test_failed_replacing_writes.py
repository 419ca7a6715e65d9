"""An encoder that fails half-way through a write of new versions: every document is left
wholly its old or wholly its new version (no chunk of both, no stale tail, nothing lost), and
the same write again gives exactly what an uninterrupted write gives.

Through ``M3Index.add_texts``, LangChain's ``M3VectorStore.aadd_documents`` and LlamaIndex's
``M3VectorStore.add``; the documents have several chunks, and the new versions are shorter
or longer than the old.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from langchain_m3 import M3VectorStore
from llamaindex_m3 import M3VectorStore as LlamaStore
from m3kit.chunking import NaiveChunker
from m3kit.store import M3Index
from tests.reliability.killing import assert_same_points, index_points
from tests.store.conftest import stored_texts

IDS = ["a", "b", "c", "d"]
OLD = {d: " ".join(f"Old {d} sentence {i}." for i in range(3)) for d in IDS}
# a and c shrink, b and d grow
NEW = {d: " ".join(f"New {d} line {i}." for i in range(1 if d in "ac" else 5)) for d in IDS}


class FailOnText:
    """Wraps an encoder; encoding a batch holding ``marker`` raises (while ``armed``)."""

    def __init__(self, inner: Any, marker: str) -> None:
        self._inner, self._marker, self.armed = inner, marker, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self, texts: Sequence[str]) -> None:
        if self.armed and any(self._marker in t for t in texts):
            raise RuntimeError("the encoder failed")

    def encode(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        self._check(texts)
        return self._inner.encode(texts, *args, **kwargs)

    def encode_tokenized(self, input_ids: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        tok = self._inner.tokenizer
        self._check([tok.decode(list(ids), skip_special_tokens=True) for ids in input_ids])
        return self._inner.encode_tokenized(input_ids, **kwargs)


def _written(encoder: Any, backend: str, texts: dict[str, str], name: str) -> M3Index:
    index = M3Index.open(encoder, collection=name, backend=backend)
    index.write_group = 2
    index.add_texts(list(texts.values()), doc_ids=list(texts), chunker=_chunker(encoder))
    return index


def _chunker(encoder: Any) -> NaiveChunker:
    return NaiveChunker(encoder, chunk_size=4)  # several chunks a document


@pytest.mark.parametrize("entry", ["index", "langchain"])
@pytest.mark.parametrize("backend", ["edge", "client"])
def test_an_encoder_failing_half_way_leaves_each_document_one_whole_version(
    tiny_encoder: Any, backend: str, entry: str
) -> None:
    flaky = FailOnText(tiny_encoder, "New c")  # the second group of two documents
    index = _written(flaky, backend, OLD, "c")
    old = _written(tiny_encoder, backend, OLD, "old")
    new = _written(tiny_encoder, backend, NEW, "new")
    store = M3VectorStore(index, chunking=_chunker(flaky))

    def write() -> None:
        if entry == "index":
            index.add_texts(list(NEW.values()), doc_ids=IDS, chunker=_chunker(flaky))
        else:
            asyncio.run(store.aadd_documents([Document(NEW[d], id=d) for d in IDS]))

    with pytest.raises(RuntimeError, match="the encoder failed"):
        write()
    got, old_texts, new_texts = stored_texts(index), stored_texts(old), stored_texts(new)
    assert got == {**old_texts, "a": new_texts["a"], "b": new_texts["b"]}
    flaky.armed = False
    write()  # the same write again
    assert_same_points(index_points(index), index_points(new))
    for opened in (index, old, new):
        opened.close()


def _nodes(doc: str, text: str, version: str) -> list[TextNode]:
    source = RelatedNodeInfo(node_id=doc, hash=version)
    parts = [p.strip() for p in text.split(".") if p.strip()]
    return [
        TextNode(
            text=p, id_=f"{doc}-{version}-{i}", relationships={NodeRelationship.SOURCE: source}
        )
        for i, p in enumerate(parts)
    ]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_an_encoder_failing_in_a_llamaindex_add_leaves_the_old_versions(
    tiny_encoder: Any, backend: str
) -> None:
    flaky = FailOnText(tiny_encoder, "New c")
    index = M3Index.open(flaky, collection="c", backend=backend)
    store = LlamaStore.from_index(index)
    store.add([n for d in IDS for n in _nodes(d, OLD[d], "old")])
    before = stored_texts(index)
    new_nodes = [n for d in IDS for n in _nodes(d, NEW[d], "new")]
    with pytest.raises(RuntimeError, match="the encoder failed"):
        store.add(new_nodes)
    assert stored_texts(index) == before
    flaky.armed = False
    store.add(new_nodes)
    assert stored_texts(index) == {d: [n.text for n in _nodes(d, NEW[d], "new")] for d in IDS}
    index.close()
