"""Declared payload indexes on metadata keys: created once, on every engine that has them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models

from m3kit.cli import build_parser
from m3kit.errors import SchemaMismatchError
from m3kit.outputs import Head, M3Output
from m3kit.store import Backend, ChunkRecord, M3Store, PayloadIndexType
from m3kit.store.schema import payload_index_fields
from tests.store.payload_index_setup import ARGS, BUILT_IN
from tests.store.payload_index_setup import edge_schema as _edge_schema


# -- declarations ---------------------------------------------------------------------------
def test_declarations_are_checked() -> None:
    assert payload_index_fields({"lang": "keyword", "a.b": PayloadIndexType.FLOAT}) == {
        "metadata.lang": PayloadIndexType.KEYWORD,
        "metadata.a.b": PayloadIndexType.FLOAT,
    }
    assert payload_index_fields(None) == {}
    with pytest.raises(ValueError, match=r"'year'.*'number' is not one of keyword, integer"):
        payload_index_fields({"year": "number"})
    with pytest.raises(ValueError, match="non-empty metadata key"):
        payload_index_fields({" ": "keyword"})


def test_cli_index_field() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["index", "docs", "--index-field", "lang", "--index-field", "year:integer"]
    )
    assert args.index_field == [("lang", PayloadIndexType.KEYWORD), ("year", "integer")]
    assert parser.parse_args(["index", "docs"]).index_field == []
    for bad in ("year:number", ":integer"):
        with pytest.raises(SystemExit):
            parser.parse_args(["index", "docs", "--index-field", bad])
    index_parser = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["index"]
    help_text = " ".join(index_parser.format_help().split())
    # help names every type but uuid (refused: test_a_uuid_index_is_refused_and_named)
    assert all(t.value in help_text for t in PayloadIndexType if t is not PayloadIndexType.UUID)
    with pytest.raises(SystemExit):
        parser.parse_args(["index", "docs", "--index-field", "ref:uuid"])


# -- embedded engine ------------------------------------------------------------------------
def _record(i: int, lang: str) -> ChunkRecord:
    dense = np.eye(4, dtype=np.float32)[i % 4][None, :]
    vectors = M3Output(heads=frozenset({Head.DENSE}), token_counts=(1,), _dense=dense)
    return ChunkRecord(f"d{i}", 0, f"text {i}", {"lang": lang, "year": 2020 + i}, vectors)


def test_edge_creates_declared_indexes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit.store.edge_backend import EdgeBackend

    created: list[str] = []
    original = EdgeBackend.create_payload_index

    def spy(self: EdgeBackend, path: str, kind: PayloadIndexType) -> None:
        created.append(path)
        original(self, path, kind)

    monkeypatch.setattr(EdgeBackend, "create_payload_index", spy)
    declared = {"lang": "keyword", "year": PayloadIndexType.INTEGER}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        s.upsert([_record(i, "en" if i % 2 else "de") for i in range(6)])
        hits = s.query(dense=np.eye(4)[1], k=6, filter={"lang": "en"})
        assert sorted(h.doc_id for h in hits) == ["d1", "d3", "d5"]
    assert created == [*BUILT_IN, "metadata.lang", "metadata.year"]
    assert _edge_schema(tmp_path) == {
        **{key: qe.PayloadSchemaType.Keyword for key in BUILT_IN},
        "metadata.lang": qe.PayloadSchemaType.Keyword,
        "metadata.year": qe.PayloadSchemaType.Integer,
    }
    # Same declaration again: nothing created. One more key: only that one.
    M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS).close()
    assert created == [*BUILT_IN, "metadata.lang", "metadata.year"]
    more = {**declared, "score": "float"}
    M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=more, **ARGS).close()
    assert created[6:] == ["metadata.score"]
    assert _edge_schema(tmp_path)["metadata.score"] == qe.PayloadSchemaType.Float
    # Another type for an indexed key: an error naming it, nothing created.
    with pytest.raises(SchemaMismatchError, match="metadata.year is indexed as integer, declared"):
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"year": "text"}, **ARGS)
    assert len(created) == 7


def test_edge_collection_made_without_the_chunk_id_index_gets_it(tmp_path: Path) -> None:
    """Collections made before ``chunk_id`` was indexed get the index when they are opened."""
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        s.upsert([_record(i, "en") for i in range(3)])
    shard = qe.EdgeShard.load(str(tmp_path / ARGS["collection"]))
    try:
        shard.update(qe.UpdateOperation.delete_field_index("chunk_id"))
    finally:
        shard.close()
    assert "chunk_id" not in _edge_schema(tmp_path)
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        assert s.count() == 3  # the points are kept
    assert _edge_schema(tmp_path)["chunk_id"] == qe.PayloadSchemaType.Keyword


def test_edge_sparse_collection_made_without_the_stamp_indexes_gets_them(
    enc_a: Any, tmp_path: Path
) -> None:
    """Collections made before ``encoder_id`` and ``sparse_cut`` were indexed get the indexes
    when they are opened, and the open's cut-stamp count (an ``is_empty`` condition for points
    written before they were stamped) still reads them right through the index."""
    from qdrant_client import models

    from m3kit.store import M3Index
    from m3kit.store.cut_stamps import miscut_count, not_cut_with
    from m3kit.store.edge_filters import edge_filter
    from m3kit.store.schema import DOC_ID, ENCODER_ID, SPARSE_CUT
    from m3kit.store.sparse_cut import SparseCut

    def doc(doc_id: str) -> models.Filter:
        return models.Filter(must=[models.FieldCondition(key=DOC_ID, match={"value": doc_id})])

    three, five = SparseCut(3), SparseCut(5)
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge", sparse_top_k=3) as index:
        index.add_texts(["oxygen", "rivers", "granite"], doc_ids=["a", "b", "c"])
        index.store._backend.set_payload([(doc("b"), {SPARSE_CUT: None})])  # unstamped: null
    shard = qe.EdgeShard.load(str(tmp_path / "c"))
    try:  # an older collection: no stamp indexes; "a" written before points were stamped
        for key in (ENCODER_ID, SPARSE_CUT):
            shard.update(qe.UpdateOperation.delete_field_index(key))
        shard.update(
            qe.UpdateOperation.delete_payload_by_filter(edge_filter(doc("a")), [SPARSE_CUT])
        )
    finally:
        shard.close()
    assert not {ENCODER_ID, SPARSE_CUT} & set(_edge_schema(tmp_path))
    with M3Index.open(enc_a, tmp_path, collection="c", backend="edge") as index:
        store = index.store
        assert index.sparse_cut == three  # the unstamped points count as the recorded cut
        assert store.count() == 3
        assert miscut_count(store, three) == 0
        assert store.count(not_cut_with(five, three)) == 3
        assert store.count(not_cut_with(three, five)) == 2  # unstamped: cut with five
        store._backend.set_payload([(doc("c"), {SPARSE_CUT: five.stamp()})])
        assert miscut_count(store, three) == 1
        assert store.count(not_cut_with(five, five)) == 0  # unstamped: cut with five
    schema = _edge_schema(tmp_path)
    assert schema[ENCODER_ID] == schema[SPARSE_CUT] == qe.PayloadSchemaType.Keyword
    with pytest.raises(ValueError, match=r"1 chunk\(s\)"):  # "c", refused at open
        M3Index.open(enc_a, tmp_path, collection="c", backend="edge")


def test_a_built_in_index_that_cannot_be_made_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening to search with a read-only key must not fail on the index it cannot create."""
    from m3kit.store.edge_backend import EdgeBackend

    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        s.upsert([_record(1, "en")])
    shard = qe.EdgeShard.load(str(tmp_path / ARGS["collection"]))
    try:
        shard.update(qe.UpdateOperation.delete_field_index("chunk_id"))
    finally:
        shard.close()

    def refuse(self: EdgeBackend, path: str, kind: PayloadIndexType) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(EdgeBackend, "create_payload_index", refuse)
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        assert s.count({"lang": "en"}) == 1
    assert "could not create the chunk_id payload index" in caplog.text
    assert "read-only" in caplog.text
    with pytest.raises(PermissionError):  # a declared index is still the user's error
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"lang": "keyword"}, **ARGS)


def test_an_open_stopped_between_two_indexes_is_finished_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection's own payload schema is the only record of its indexes: an open that
    fails after creating some of the declared ones claims none it lacks, and the next open
    creates only the missing ones (a process stopped there is the same: the engine keeps
    what it made)."""
    from m3kit.store.edge_backend import EdgeBackend

    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        s.upsert([_record(i, "en" if i % 2 else "de") for i in range(4)])
    original = EdgeBackend.create_payload_index
    created: list[str] = []

    def fail_on_year(self: EdgeBackend, path: str, kind: PayloadIndexType) -> None:
        if path == "metadata.year":
            raise OSError("disk full")
        created.append(path)
        original(self, path, kind)

    monkeypatch.setattr(EdgeBackend, "create_payload_index", fail_on_year)
    declared = {"lang": "keyword", "year": "integer"}
    with pytest.raises(OSError, match="disk full"):
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS)
    assert created == ["metadata.lang"]
    assert set(_edge_schema(tmp_path)) == {*BUILT_IN, "metadata.lang"}
    monkeypatch.setattr(EdgeBackend, "create_payload_index", original)
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        assert s._payload_index_types()["metadata.year"] == "integer"
        assert s.count({"year": 2021}) == 1
    assert _edge_schema(tmp_path)["metadata.year"] == qe.PayloadSchemaType.Integer


# -- qdrant-client local mode ---------------------------------------------------------------
def test_client_local_mode_has_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="m3kit.store.payload_indexes")
    with M3Store.open(
        tmp_path, backend=Backend.CLIENT, payload_indexes={"lang": "keyword"}, **ARGS
    ) as s:
        assert s._backend.payload_indexes() is None
        s.upsert([_record(1, "en")])
        assert s.count({"lang": "en"}) == 1
    assert "metadata.lang" in caplog.text and "not created" in caplog.text


# -- a server (the qdrant_recorder fixture) -------------------------------------------------------
def _index_puts(requests: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    return [
        (body["field_name"], body["field_schema"])
        for method, path, body in requests
        if method == "PUT" and path == "/collections/c/index"
    ]


def test_server_index_requests_are_made_once(
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
) -> None:
    url, requests, state = qdrant_recorder
    declared = {"lang": PayloadIndexType.KEYWORD, "year": "integer"}
    M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
    assert _index_puts(requests) == [
        *((key, "keyword") for key in BUILT_IN),
        ("metadata.lang", "keyword"),
        ("metadata.year", "integer"),
    ]
    # Re-opening with the same declaration sends no index request.
    M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
    assert len(_index_puts(requests)) == 6
    # A collection made before chunk_id, encoder_id and sparse_cut were indexed: the indexes
    # are created on open.
    for key in ("chunk_id", "encoder_id", "sparse_cut"):
        del state["indexes"][key]
    M3Store.open(url=url, **ARGS).close()
    assert _index_puts(requests)[6:] == [
        ("chunk_id", "keyword"),
        ("encoder_id", "keyword"),
        ("sparse_cut", "keyword"),
    ]
    # A new key: one request, for it only.
    M3Store.open(url=url, payload_indexes={**declared, "flag": "bool"}, **ARGS).close()
    assert _index_puts(requests)[9:] == [("metadata.flag", "bool")]
    # Another type for an indexed key: refused before any request.
    with pytest.raises(SchemaMismatchError, match="metadata.lang is indexed as keyword"):
        M3Store.open(url=url, payload_indexes={"lang": "text"}, **ARGS)
    assert len(_index_puts(requests)) == 10


def test_cli_index_field_given_twice_with_two_types_is_refused(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--index-field lang --index-field lang:integer`` indexed ``lang`` as an integer, the
    first type dropped without a word. Refused now, naming the key and both types, before
    anything is created; the same type twice is one index."""
    from m3kit.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"_id": "a", "text": "Oxygen was found in 1774.", "lang": "en"}\n')
    store = tmp_path / "store"
    argv = ["index", str(rows), "--path", str(store), "--model", str(tiny_m3_path)]
    argv += ["--dtype", "fp32", "--quiet", "--index-field", "lang"]
    assert main([*argv, "--index-field", "lang:integer"]) == 1
    assert capsys.readouterr().err.strip() == (
        "m3kit index: error: --index-field lang is given twice, as keyword and as integer; "
        "give one type per key"
    )
    assert not store.exists()
    assert main([*argv, "--index-field", "lang:keyword"]) == 0


def test_cli_index_creates_them(tmp_path: Path, tiny_m3_path: Path) -> None:
    from m3kit.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"_id": "a", "text": "Oxygen was found in 1774.", "lang": "en", "year": 1774}\n'
        '{"_id": "b", "text": "Der Sauerstoff.", "lang": "de", "year": 1771}\n'
    )
    store = tmp_path / "store"
    argv = ["index", str(rows), "--path", str(store), "--model", str(tiny_m3_path)]
    argv += ["--collection", "c", "--dtype", "fp32", "--quiet", "--backend", "edge"]
    assert main([*argv, "--index-field", "lang", "--index-field", "year:integer"]) == 0
    assert _edge_schema(store) == {
        **{key: qe.PayloadSchemaType.Keyword for key in BUILT_IN},
        "metadata.lang": qe.PayloadSchemaType.Keyword,
        "metadata.year": qe.PayloadSchemaType.Integer,
    }
