"""``M3Index.open(sparse_top_k=..., sparse_min_weight=...)``: the sparse cut of a collection.

The encoder cuts sparse vectors (``M3Encoder.encode(sparse_top_k=, sparse_min_weight=)``) and
LangChain's ``M3SparseEmbeddings`` exposes the cut, but ``M3Index`` (and ``m3kit index`` /
``search``, ``tests/cli/test_sparse_cut_flags.py``) had no way to give it: every chunk and every
query kept every weight. The index now cuts what it stores and what it searches with the same
cut, records it with the collection, uses the recorded one when opened without one, and refuses
another one on a collection that holds chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit.store import M3Index
from m3kit.store.sparse_cut import RECORD_KEY, SparseCut
from m3kit.testing import SAMPLE_TEXTS
from tests.store.conftest import same_sparse

TEXTS = list(SAMPLE_TEXTS[:4])
QUERY = "a fox and a dog in the river"


@pytest.mark.parametrize(
    ("setting", "cut"),
    [("sparse_top_k", {"sparse_top_k": 2}), ("sparse_min_weight", {"sparse_min_weight": 0.15})],
)
def test_stored_and_query_vectors_are_cut_as_the_encoder_cuts(
    tiny_encoder: Any, sparse_spies: dict[str, list[Any]], setting: str, cut: dict[str, Any]
) -> None:
    raw = tiny_encoder._encoder  # the store suite's cache does not take the cut
    with M3Index.open(tiny_encoder, ":memory:", **cut) as index:
        index.add_texts(TEXTS)
        index.search(QUERY, k=2)
    expected = raw.encode(TEXTS, heads=["sparse"], **cut).sparse
    full = raw.encode(TEXTS, heads=["sparse"]).sparse
    assert any(len(f.indices) > len(e.indices) for f, e in zip(full, expected, strict=True))
    assert len(sparse_spies["written"]) == len(TEXTS)
    for got, want in zip(sparse_spies["written"], expected, strict=True):
        assert same_sparse(got, want), setting
    query = raw.encode([QUERY], heads=["sparse"], query=True, **cut).sparse[0]
    assert same_sparse(sparse_spies["queried"][-1], query)


def test_the_cut_is_recorded_and_reused(tmp_path: Path, tiny_encoder: Any) -> None:
    where = str(tmp_path / "store")
    with M3Index.open(tiny_encoder, where, sparse_top_k=3) as index:
        index.add_texts(TEXTS)
        assert index.store.collection_metadata()[RECORD_KEY] == {"top_k": 3, "min_weight": 0.0}
    with M3Index.open(tiny_encoder, where) as index:  # not given: the recorded one
        assert index.sparse_cut == SparseCut(3)
        assert index.store.sparse_cut == SparseCut(3)
    with M3Index.open(tiny_encoder, where, sparse_top_k=3) as index:  # the same: taken
        assert index.sparse_cut == SparseCut(3)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_giving_the_cut_the_collection_has_writes_nothing(
    tmp_path: Path, tiny_encoder: Any, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search service passing its config through (``sparse_min_weight=0``: no cut, as the
    chunks were stored) rewrote the collection's record at open: refused with a read-only
    API key, and a rewrite of what another process may have changed since."""
    where = str(tmp_path / "store")
    with M3Index.open(tiny_encoder, where, backend=backend) as index:
        index.add_texts(TEXTS)
        before = index.store.collection_metadata()
    assert RECORD_KEY not in before
    from m3kit.store.store import M3Store

    writes: list[object] = []
    monkeypatch.setattr(M3Store, "set_collection_metadata", lambda self, m: writes.append(m))
    for given in ({"sparse_min_weight": 0.0}, {"sparse_top_k": None, "sparse_min_weight": 0}):
        with M3Index.open(tiny_encoder, where, backend=backend, create=False, **given) as index:
            assert index.sparse_cut == SparseCut() and index.search(TEXTS[0], k=1)
    assert writes == []


def test_another_cut_on_stored_chunks_is_refused(tmp_path: Path, tiny_encoder: Any) -> None:
    cut, uncut = str(tmp_path / "cut"), str(tmp_path / "uncut")
    with M3Index.open(tiny_encoder, cut, sparse_top_k=3) as index:
        index.add_texts(TEXTS)
    with M3Index.open(tiny_encoder, uncut) as index:
        index.add_texts(TEXTS)
    with pytest.raises(ValueError, match=r"stored with sparse_top_k=3.*opened with sparse_top_k=5"):
        M3Index.open(tiny_encoder, cut, sparse_top_k=5)
    with pytest.raises(ValueError, match=r"stored with no sparse cut.*sparse_min_weight=0\.1"):
        M3Index.open(tiny_encoder, uncut, sparse_min_weight=0.1)
    with M3Index.open(tiny_encoder, cut) as index:  # the refusals changed nothing
        assert index.sparse_cut == SparseCut(3)


def test_an_empty_collection_takes_a_new_cut(tmp_path: Path, tiny_encoder: Any) -> None:
    where = str(tmp_path / "store")
    M3Index.open(tiny_encoder, where, sparse_top_k=3).close()
    with M3Index.open(tiny_encoder, where, sparse_min_weight=0.2) as index:
        assert index.sparse_cut == SparseCut(None, 0.2)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ({"sparse_top_k": 0}, "sparse_top_k must be a positive integer"),
        ({"sparse_top_k": True}, "sparse_top_k must be a positive integer"),
        ({"sparse_min_weight": -0.5}, "sparse_min_weight must be >= 0"),
        ({"sparse_min_weight": float("nan")}, "sparse_min_weight is NaN"),
        # inf used to be recorded and drop every sparse weight: an empty sparse head
        ({"sparse_min_weight": float("inf")}, "sparse_min_weight is inf"),
        ({"sparse_min_weight": float("-inf")}, "sparse_min_weight is -inf"),
    ],
)
def test_bad_cuts_are_refused(tiny_encoder: Any, cut: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M3Index.open(tiny_encoder, ":memory:", **cut)


def test_a_cut_for_a_dense_only_collection_is_refused(minilm_encoder: Any) -> None:
    with pytest.raises(ValueError, match="stores no sparse vectors"):
        M3Index.open(minilm_encoder, ":memory:", sparse_top_k=4)


def test_a_plain_store_on_a_cut_collection_cuts_too(
    tmp_path: Path, tiny_encoder: Any, sparse_spies: dict[str, list[Any]]
) -> None:
    """``M3Store.open`` (no index: LlamaIndex's ``M3Store.upsert(chunk_records(nodes))``) applies
    the recorded cut to what it writes and searches with."""
    from m3kit.store import M3Store, output_row
    from m3kit.store.records import ChunkRecord

    where = str(tmp_path / "store")
    with M3Index.open(tiny_encoder, where, sparse_top_k=2) as index:
        index.add_texts(TEXTS[:1])
        dims = index.store.schema
    out = tiny_encoder._encoder.encode(TEXTS[1:2])
    assert len(out.sparse[0].indices) > 2
    opened = M3Store.open(
        where,
        collection="m3kit",
        dense_dim=dims.dense_dim,
        colbert_dim=dims.colbert_dim,
        sparse=True,
    )
    with opened as store:
        assert store.sparse_cut == SparseCut(2)
        store.upsert([ChunkRecord("plain", 0, TEXTS[1], {}, output_row(out, 0))])
        store.query(dense=out.dense[0], sparse=out.sparse[0], k=1, rerank=False)
    assert len(sparse_spies["written"][-1].indices) == 2
    assert len(sparse_spies["queried"][-1].indices) == 2


def test_numpy_numbers_are_a_cut(tmp_path: Path, tiny_encoder: Any) -> None:
    # the cut check takes numpy numbers (as encode does), but np.int64 went into the record
    # as it was: Qdrant's record write failed with "int64 is not JSON serializable"
    where = str(tmp_path / "store")
    with M3Index.open(tiny_encoder, where, sparse_top_k=np.int64(3)) as index:
        index.add_texts(TEXTS)
        assert index.store.collection_metadata()[RECORD_KEY] == {"top_k": 3, "min_weight": 0.0}
    with M3Index.open(tiny_encoder, where, sparse_top_k=3) as index:  # the same cut
        assert index.sparse_cut == SparseCut(3)
    cut = SparseCut(np.int32(3), np.float32(0.5))
    assert type(cut.top_k) is int and type(cut.min_weight) is float
