"""``M3Store.delete_documents_unopened``: a way out of a collection no open can settle.

Before, a document reindex cannot rebuild (a custom chunker) on each side of a sparse cut
change, one written after it by the new-cut writer and one written late by a writer still on
the old cut, left a collection that no public call could open: a plain open was refused
(chunks of another cut), and ``reindex=True`` with either cut was refused (a document it
cannot rebuild), each refusal advising an open that is refused too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.errors import CollectionNotFoundError
from m3kit.store import M3Index, M3Store
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut
from tests.reliability.killing import assert_same_points, dump_store

from .conftest import (
    CUT_IDS,
    CUT_TEXTS,
    SentenceChunker,
    checked_against,
    named_call,
    open_c,
)

#: The unrebuildable documents: written after the change with the new cut, and late with the
#: old one.
NEW, LATE = "new", "late"


def _call(where: Path, backend: str, doc_id: str) -> str:
    """The call a refusal names to delete ``doc_id`` from collection ``c`` in ``where``."""
    return (
        f"M3Store.delete_documents_unopened({str(where)!r}, backend={backend!r}, "
        f"collection='c', doc_ids=['{doc_id}'])"
    )


def _unopenable(enc: M3Encoder, where: Path, backend: str) -> None:
    """:data:`CUT_TEXTS` cut with top_k=3, changed to top_k=5; then the new-cut writer stores
    :data:`NEW` and a writer opened before the change (another process: a copy of the store),
    its record check having raced the change, stores :data:`LATE` with top_k=3, both split by
    a chunker reindex cannot redo."""
    service = open_c(enc, where, backend, sparse_top_k=3)
    service.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    before = service.store.collection_metadata()
    admin = M3Index(enc, copy.copy(service.store), sparse_top_k=5, reindex=True)
    sentences = SentenceChunker(enc)
    admin.add_texts(["Rain. Snow. Hail."], doc_ids=[NEW], chunker=sentences)
    with checked_against(service.store, before):
        service.add_texts(["One. Two. Three."], doc_ids=[LATE], chunker=sentences)
    service.close()


def _store_open(enc: M3Encoder, where: Path, backend: str) -> M3Store:
    return M3Store.open(
        where,
        collection="c",
        backend=backend,
        dense_dim=enc.dense_dim,
        colbert_dim=enc.colbert_dim,
        sparse=True,
    )


def _without(points: dict[str, Any], doc_id: str) -> dict[str, Any]:
    return {pid: p for pid, p in points.items() if p[0]["doc_id"] != doc_id}


def test_a_collection_no_open_can_settle_is_opened_again_after_deleting_its_documents(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    _unopenable(enc_a, tmp_path, backend)
    # every public open is refused, each naming the call that deletes its documents
    for opening in (
        lambda: open_c(enc_a, tmp_path, backend),
        lambda: _store_open(enc_a, tmp_path, backend),
        lambda: open_c(enc_a, tmp_path, backend, reindex=True),  # the recorded cut (5)
    ):
        with pytest.raises(ValueError) as caught:
            opening()
        assert _call(tmp_path, backend, LATE) in str(caught.value), str(caught.value)
    with pytest.raises(ValueError, match="reindex cannot rebuild 1 stored document") as caught:
        open_c(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)
    assert _call(tmp_path, backend, NEW) in str(caught.value), str(caught.value)

    before, record = dump_store(tmp_path, backend)
    deleted = M3Store.delete_documents_unopened(
        tmp_path, collection="c", doc_ids=[LATE], backend=backend
    )
    assert deleted == 3  # its three sentences
    after, record_after = dump_store(tmp_path, backend)
    assert_same_points(after, _without(before, LATE), atol=0)  # nothing else was touched
    assert record_after == record
    # the refusals' own next step: a plain open (the recorded cut)
    index = open_c(enc_a, tmp_path, backend)
    opened.append(index)
    assert index.sparse_cut == SparseCut(5)
    assert index.store.document_metadata([*CUT_IDS, NEW, LATE]).keys() == {*CUT_IDS, NEW}
    assert index.search("document 4 topic", k=1)[0].doc_id == "d4"


def test_deleting_the_new_writers_document_lets_the_change_back_finish(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    _unopenable(enc_a, tmp_path, backend)
    before, _ = dump_store(tmp_path, backend)
    assert (
        M3Store.delete_documents_unopened(
            str(tmp_path), collection="c", doc_ids=(NEW,), backend=backend
        )
        == 3
    )
    after, _ = dump_store(tmp_path, backend)
    assert_same_points(after, _without(before, NEW), atol=0)
    # the second refusal's next step: the change to the late document's cut
    index = open_c(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)
    opened.append(index)
    assert index.sparse_cut == SparseCut(3)
    meta = index.store.collection_metadata()
    assert meta[RECORD_KEY] == SparseCut(3).to_dict() and PENDING_KEY not in meta
    assert index.store.document_metadata([*CUT_IDS, NEW, LATE]).keys() == {*CUT_IDS, LATE}


def test_bad_input_is_refused_and_nothing_is_deleted(
    enc_a: M3Encoder, backend: str, tmp_path: Path
) -> None:
    _unopenable(enc_a, tmp_path, backend)
    before, record = dump_store(tmp_path, backend)

    def delete(doc_ids: Any, **kwargs: Any) -> int:
        args = {"collection": "c", "backend": backend, **kwargs}
        return M3Store.delete_documents_unopened(tmp_path, doc_ids=doc_ids, **args)

    with pytest.raises(ValueError, match="doc_ids is empty"):
        delete([])
    with pytest.raises(TypeError, match="not a single string"):
        delete(LATE)
    with pytest.raises(ValueError, match=r"not found in collection 'c': \['nope', '7'\]") as e:
        delete([LATE, "nope", 7])
    assert "nothing was deleted" in str(e.value)
    with pytest.raises(CollectionNotFoundError, match="'other'"):
        delete([LATE], collection="other")
    assert not (tmp_path / "other").exists()  # no collection was made
    after, record_after = dump_store(tmp_path, backend)
    assert_same_points(after, before, atol=0)
    assert record_after == record


def test_a_server_collection_is_read_not_created(
    enc_a: M3Encoder,
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
) -> None:
    url, requests, state = qdrant_recorder
    with pytest.raises(CollectionNotFoundError, match="'c'"):
        M3Store.delete_documents_unopened(url=url, collection="c", doc_ids=["a"])
    assert "config" not in state  # not created
    M3Store.open(
        url=url, collection="c", dense_dim=enc_a.dense_dim, colbert_dim=None, sparse=True
    ).close()
    sent = len(requests)
    # the layout is read from the server's collection (dense + sparse here, no ColBERT)
    with pytest.raises(ValueError, match=r"not found in collection 'c': \['a'\]"):
        M3Store.delete_documents_unopened(url=url, collection="c", doc_ids=["a"])
    assert not [r for r in requests[sent:] if r[1].endswith("/points/delete")]


def test_the_call_a_refusal_names_works_as_pasted(
    enc_a: M3Encoder, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """The refusals named the call with ``...`` for the location and no ``backend=``: pasted,
    it looked for the collection in a folder named ``Ellipsis`` (and a qdrant-client folder
    needs ``backend='client'``). It now names where the collection is, and its engine."""
    _unopenable(enc_a, tmp_path, backend)
    with pytest.raises(ValueError) as plain:
        open_c(enc_a, tmp_path, backend)
    with pytest.raises(ValueError, match="reindex cannot rebuild") as rebuild:
        open_c(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)
    call = named_call(str(plain.value))
    assert call == _call(tmp_path, backend, LATE)
    assert named_call(str(rebuild.value)) == _call(tmp_path, backend, NEW)
    assert eval(call, {"M3Store": M3Store}) == 3  # as pasted
    index = open_c(enc_a, tmp_path, backend)  # the refusal's next step
    opened.append(index)
    assert index.store.document_metadata([*CUT_IDS, NEW, LATE]).keys() == {*CUT_IDS, NEW}


@pytest.mark.parametrize("memory", ["edge", "client"])
def test_a_temporary_collection_names_its_stores_delete(enc_a: M3Encoder, memory: str) -> None:
    """A collection in memory is reached only through its open store: the refusal names that
    store's ``delete_documents`` (the unopened call cannot find a temporary collection)."""
    index = M3Index.open(enc_a, None, collection="c", backend=memory, sparse_top_k=3)
    try:
        index.add_texts(["Rain. Snow. Hail."], doc_ids=[NEW], chunker=SentenceChunker(enc_a))
        with pytest.raises(ValueError, match="reindex cannot rebuild") as caught:
            M3Index(enc_a, index.store, sparse_top_k=5, reindex=True)
        assert f"store.delete_documents(['{NEW}'])" in str(caught.value)
        assert "delete_documents_unopened" not in str(caught.value)
        index.store.delete_documents([NEW])  # as named, then the refused open
        assert M3Index(enc_a, index.store, sparse_top_k=5, reindex=True).sparse_cut == SparseCut(5)
    finally:
        index.close()


def test_a_server_collections_call_names_its_url(
    enc_a: M3Encoder,
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
) -> None:
    from m3kit.store.unopened import delete_call

    url, _, _ = qdrant_recorder
    with M3Store.open(
        url=url, collection="c", dense_dim=enc_a.dense_dim, colbert_dim=None, sparse=True
    ) as store:
        call = delete_call(store, ["a"])
    assert call == f"M3Store.delete_documents_unopened(url={url!r}, collection='c', doc_ids=['a'])"
    with pytest.raises(ValueError, match=r"not found in collection 'c': \['a'\]"):
        eval(call, {"M3Store": M3Store})  # as pasted: it reaches the server's collection


def test_a_server_collections_call_keeps_its_connection_settings(
    enc_a: M3Encoder,
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
) -> None:
    """The call named a store opened with ``connection=`` by its URL alone: pasted, it ran
    with the default timeout and request limit."""
    from m3kit.store import ConnectionSettings
    from m3kit.store.unopened import delete_call

    url, _, _ = qdrant_recorder
    connection = ConnectionSettings(timeout=7)
    args = {"dense_dim": enc_a.dense_dim, "colbert_dim": None, "sparse": True}
    with M3Store.open(url=url, collection="c", connection=connection, **args) as store:
        call = delete_call(store, ["a"])
    assert f"(url={url!r}, connection={connection!r}, collection='c'" in call
    with pytest.raises(ValueError, match=r"not found in collection 'c': \['a'\]"):
        eval(call, {"M3Store": M3Store, "ConnectionSettings": ConnectionSettings})
