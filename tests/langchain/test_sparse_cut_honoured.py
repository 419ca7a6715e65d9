"""M3VectorStore / M3Retriever given ``M3SparseEmbeddings`` with a sparse cut.

Both take an m3kit LangChain class for its encoder. ``M3SparseEmbeddings(sparse_top_k=2)`` (or a
``sparse_min_weight``) was first accepted and its cut silently dropped (every stored and query
sparse weight kept), then refused. Each way of building them that opens the index now gives it
the embeddings' cut (``M3Index.open(sparse_top_k=..., sparse_min_weight=...)``): stored chunks
and queries are cut exactly as the encoder cuts them, the collection records the cut, and a cut
other than the one a collection's chunks were stored with is refused, naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Embeddings, M3Retriever, M3SparseEmbeddings, M3VectorStore
from m3kit import M3Encoder
from m3kit.store.sparse_cut import SparseCut
from m3kit.testing import SAMPLE_TEXTS
from tests.store.conftest import same_sparse

TEXTS = list(SAMPLE_TEXTS[:4])
QUERY = "a fox and a dog in the river"
CUTS = [{"sparse_top_k": 2}, {"sparse_min_weight": 0.2}]


def _vs_open(emb: Any, where: str | None) -> Any:
    store = M3VectorStore.open(emb, where)
    store.add_texts(TEXTS)
    return store


def _vs_search(store: Any) -> None:
    store.similarity_search(QUERY, k=2)


def _r_search(retriever: Any) -> None:
    retriever.invoke(QUERY)


BUILDERS: dict[str, tuple[Callable[[Any, str | None], Any], Callable[[Any], None]]] = {
    "M3VectorStore.open": (_vs_open, _vs_search),
    "M3VectorStore.from_texts": (
        lambda emb, where: M3VectorStore.from_texts(TEXTS, emb, location=where),
        _vs_search,
    ),
    "M3VectorStore.from_documents": (
        lambda emb, where: M3VectorStore.from_documents(
            [Document(page_content=t) for t in TEXTS], emb, location=where
        ),
        _vs_search,
    ),
    "M3Retriever.from_texts": (
        lambda emb, where: M3Retriever.from_texts(TEXTS, emb, location=where, k=2),
        _r_search,
    ),
    "M3Retriever.from_documents": (
        lambda emb, where: M3Retriever.from_documents(
            [Document(page_content=t) for t in TEXTS], emb, location=where, k=2
        ),
        _r_search,
    ),
}


@pytest.mark.parametrize("builder", BUILDERS, ids=list(BUILDERS))
@pytest.mark.parametrize("cut", CUTS, ids=["sparse_top_k", "sparse_min_weight"])
def test_the_embeddings_cut_reaches_stored_chunks_and_queries(
    tiny_encoder: M3Encoder, sparse_spies: dict[str, list[Any]], builder: str, cut: dict[str, Any]
) -> None:
    build, search = BUILDERS[builder]
    emb = M3SparseEmbeddings.from_encoder(tiny_encoder, **cut)
    held = build(emb, None)
    try:
        assert held.index.sparse_cut == SparseCut(
            cut.get("sparse_top_k"), cut.get("sparse_min_weight", 0.0)
        )
        search(held)
    finally:
        held.index.close()
    full = tiny_encoder.encode(TEXTS, heads=["sparse"]).sparse
    expected = tiny_encoder.encode(TEXTS, heads=["sparse"], **cut).sparse
    assert any(len(f.indices) > len(e.indices) for f, e in zip(full, expected, strict=True))
    assert len(sparse_spies["written"]) == len(TEXTS)
    for got, want in zip(sparse_spies["written"], expected, strict=True):
        assert same_sparse(got, want)
        if "sparse_top_k" in cut:
            assert len(got.indices) <= cut["sparse_top_k"]
    query = tiny_encoder.encode([QUERY], heads=["sparse"], query=True, **cut).sparse[0]
    assert len(tiny_encoder.encode_queries([QUERY]).sparse[0].indices) > len(query.indices)
    assert sparse_spies["queried"] and same_sparse(sparse_spies["queried"][-1], query)


@pytest.mark.parametrize("builder", BUILDERS, ids=list(BUILDERS))
def test_another_cut_on_a_stored_collection_is_refused_naming_both(
    tmp_path: Path, tiny_encoder: M3Encoder, builder: str
) -> None:
    where = str(tmp_path / "store")
    build, _ = BUILDERS[builder]
    build(M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_top_k=2), where).index.close()
    other = M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_top_k=3)
    with pytest.raises(ValueError, match=r"sparse_top_k=2.*sparse_top_k=3"):
        build(other, where)
    # the same cut, or none given (an uncut model): the recorded cut is used
    for emb in (
        M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_top_k=2),
        M3Embeddings.from_encoder(tiny_encoder),
        tiny_encoder,
    ):
        held = build(emb, where)
        try:
            assert held.index.sparse_cut == SparseCut(2)
        finally:
            held.index.close()


@pytest.mark.parametrize("builder", BUILDERS, ids=list(BUILDERS))
def test_uncut_sparse_embeddings_are_taken(tiny_encoder: M3Encoder, builder: str) -> None:
    build, _ = BUILDERS[builder]
    for emb in (
        M3SparseEmbeddings.from_encoder(tiny_encoder),
        M3Embeddings.from_encoder(tiny_encoder),
    ):
        held = build(emb, None)
        try:
            assert held.index.sparse_cut == SparseCut()
        finally:
            held.index.close()
