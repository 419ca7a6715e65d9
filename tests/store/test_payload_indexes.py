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

BUILT_IN = ["doc_id", "chunk_id", "encoder_id", "sparse_cut"]
"""The indexes every collection gets, in the order they are created."""
ARGS: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": None, "sparse": False}


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


def _edge_schema(folder: Path) -> dict[str, Any]:
    shard = qe.EdgeShard.load(str(folder / ARGS["collection"]))
    try:
        return {k: v.data_type for k, v in shard.info().payload_schema.items()}
    finally:
        shard.close()


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


def _priced(i: int, metadata: dict[str, Any]) -> ChunkRecord:
    dense = np.eye(4, dtype=np.float32)[i % 4][None, :]
    vectors = M3Output(heads=frozenset({Head.DENSE}), token_counts=(1,), _dense=dense)
    return ChunkRecord(f"d{i}", 0, f"text {i}", metadata, vectors)


def test_values_an_edge_index_would_hide_from_filters_are_refused(tmp_path: Path) -> None:
    """An ``integer`` index skips 1.5 and a ``datetime`` index skips numbers: a filter served
    by the index (``{"price": 1.5}``, ``{"when": 3}``, a range) missed such points, though
    an unindexed key or qdrant-client's local mode matched them; they are refused instead."""
    declared = {"price": "integer", "when": "datetime", "a.b": "integer"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        s.upsert([_priced(0, {"price": 1.0, "when": "2024-01-02T00:00:00Z", "a": {"b": [2]}})])
        bad = [
            (
                {"price": 1.5},
                r"document 'd1' \(chunk 0\): 'price' is 1\.5.*indexes "
                r"metadata\.price as integer.*'float'",
            ),
            ({"price": [2, 2.5]}, r"'price' is 2\.5"),
            ({"when": 3}, r"'when' is 3.*as datetime"),
            ({"a": {"b": 0.5}}, r"'a\.b' is 0\.5.*metadata\.a\.b as integer"),
        ]
        for meta, message in bad:
            with pytest.raises(ValueError, match=message):
                s.upsert([_priced(1, meta)])
        assert s.count() == 1  # nothing of a refused call written
        s.upsert([_priced(2, {"price": 2, "when": None, "a": {"b": True}, "other": 1.5})])
        assert {h.doc_id for h in s.query(dense=np.eye(4)[0], k=5, filter={"price": 1})} == {"d0"}
        assert s.count() == 2


def test_a_flat_dotted_key_is_not_checked_against_the_nested_paths_index(
    tmp_path: Path,
) -> None:
    """An index declared on ``"a.b"`` covers the nested path ``metadata.a.b``; a flat key
    ``{"a.b": 0.5}`` is stored at ``metadata."a.b"``, which no index covers, so filters find
    it. It was refused as if the nested index would hide it."""
    with M3Store.open(
        tmp_path, backend=Backend.EDGE, payload_indexes={"a.b": "integer"}, **ARGS
    ) as s:
        s.upsert([_priced(0, {"a.b": 0.5})])
        flat = models.Filter(
            must=[models.FieldCondition(key='metadata."a.b"', range=models.Range(gt=0.1))]
        )
        assert [h.doc_id for h in s.query(dense=np.eye(4)[0], k=5, filter=flat)] == ["d0"]
        with pytest.raises(ValueError, match=r"'a\.b' is 0\.5.*metadata\.a\.b as integer"):
            s.upsert([_priced(1, {"a": {"b": 0.5}})])  # the nested key is still checked
        s.upsert([_priced(2, {"a": {"b": 1}})])
        assert s.count() == 2


def test_values_an_index_on_array_access_would_hide_are_refused(tmp_path: Path) -> None:
    """An ``integer`` index on ``tags[]`` / ``items[].p`` leaves 1.5 inside those lists out of
    the filters it serves, as ``tags`` does; it was looked up at ``metadata.tags`` only, so
    such values were written (and the index declared over them) without a word. A value
    outside a list is not under the ``[]`` path at all: accepted."""
    declared = {"tags[]": "integer", "items[].p": "integer"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        for meta, message in [
            ({"tags": [2, 1.5]}, r"'tags' is 1\.5.*indexes metadata\.tags\[\] as integer"),
            ({"items": [{"p": 1.5}]}, r"'items\.p' is 1\.5.*metadata\.items\[\]\.p"),
        ]:
            with pytest.raises(ValueError, match=message):
                s.upsert([_priced(0, meta)])
        s.upsert([_priced(1, {"tags": 1.5, "items": {"p": 1.5}})])  # no list: not under []
        assert s.count() == 1
    later = tmp_path / "later"
    with M3Store.open(later, backend=Backend.EDGE, **ARGS) as s:
        s.upsert([_priced(2, {"items": [{"p": 1.5}]})])
    with pytest.raises(SchemaMismatchError, match=r"'items\.p' is 1\.5 in document 'd2'"):
        M3Store.open(later, backend=Backend.EDGE, payload_indexes={"items[].p": "integer"}, **ARGS)


def test_declaring_an_index_over_values_it_would_hide_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values written before an ``integer`` / ``datetime`` index was declared (a re-open with
    a new ``payload_indexes=``) were never checked: the index was created and filters served
    by it silently missed them. The declaration is refused now, naming the key, a value, its
    document and the type to declare, and the collection is left without the index."""
    import m3kit.store.edge_backend as edge_backend

    monkeypatch.setattr(edge_backend, "_SCROLL_PAGE", 64)  # the scan reads several pages
    points = [_priced(i, {"price": i, "when": "2024-01-02T00:00:00Z"}) for i in range(300)]
    points[257] = _priced(257, {"price": [3, 3.5], "when": "2024-01-02T00:00:00Z"})
    points[131] = _priced(131, {"price": 7, "when": 17, "a": {"b": 0.5}})
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        s.upsert(points)
    refused = [
        (
            {"price": "integer"},
            r"'price' is 3\.5 in document 'd257' \(chunk 0, point [0-9a-f-]+\)"
            r".*integer index declared on metadata\.price.*declare 'price' as 'float'",
        ),
        (
            {"lang": "keyword", "when": "datetime"},
            r"'when' is 17 in document 'd131'.*datetime index",
        ),
        ({"a.b": "integer"}, r"'a\.b' is 0\.5 in document 'd131'"),
    ]
    for declared, message in refused:
        with pytest.raises(SchemaMismatchError, match=message):
            M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS)
        assert set(_edge_schema(tmp_path)) == set(BUILT_IN)  # nothing created
    declared = {"price": "float", "when": "keyword"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        hits = s.query(dense=np.eye(4)[1], k=5, filter={"price": 3.5})
        assert [h.doc_id for h in hits] == ["d257"]
        assert s.count() == 300
    # qdrant-client's local mode has no payload indexes: the declaration does nothing there,
    # and its filters match every stored value.
    local = tmp_path / "local"
    with M3Store.open(local, backend=Backend.CLIENT, **ARGS) as s:
        s.upsert(points[255:260])
    with M3Store.open(local, backend=Backend.CLIENT, payload_indexes=refused[0][0], **ARGS) as s:
        assert [h.doc_id for h in s.query(dense=np.eye(4)[1], k=5, filter={"price": 3.5})] == [
            "d257"
        ]


@pytest.mark.parametrize("kind", ["float", "integer", "datetime", "keyword"])
def test_a_uuid_string_is_matched_on_a_key_with_any_index(tmp_path: Path, kind: str) -> None:
    """The embedded engine serves a ``MatchValue`` of a string that parses as a UUID (any of
    its spellings) from a ``float``, ``integer`` or ``datetime`` index as a UUID, which that
    index never holds: ``{"ref": "<uuid>"}``, ``EQ`` / a one-value ``IN`` and ``NE`` missed
    (or kept) the points storing that string, though an unindexed key and a two-value ``IN``
    matched them."""
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    from llamaindex_m3.filters import to_store_filter

    spellings = [
        "6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10",
        "6F0B7C1E5A435B8E9A573D1C2B7E4F10",
        "{6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10}",
        "urn:uuid:6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10",
    ]
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"ref": kind}, **ARGS) as s:
        s.upsert([_priced(i, {"ref": ref}) for i, ref in enumerate(spellings)])
        s.upsert([_priced(4, {"ref": "other"}), _priced(5, {"ref": [spellings[0], "x"]})])
        for i, ref in enumerate(spellings):
            want = {f"d{i}", "d5"} if i == 0 else {f"d{i}"}
            for flt in ({"ref": ref}, {"ref": [ref]}):
                assert {h.doc_id for h in s.get(None, filter=flt)} == want, (ref, flt)
            ne = MetadataFilters(filters=[MetadataFilter(key="ref", value=ref, operator="!=")])
            got = {h.doc_id for h in s.get(None, filter=to_store_filter(ne))}
            assert got == {f"d{j}" for j in range(6)} - want, ref


def test_an_index_another_store_adds_later_is_checked(
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store read the collection's payload indexes once (its first write) and kept them:
    an ``integer`` index another store (another process, a later ``m3kit index
    --index-field``) declared afterwards went unseen, so this store wrote ``1.5`` that the
    index hides from filters, and sent a number range to a key now indexed as datetime.
    Writes holding a number read the indexes each time; filters with a range on a metadata
    key trust the last read for ``INDEX_TYPES_TTL`` seconds; other writes and filters ask
    nothing."""
    from qdrant_client import models

    from m3kit.store import store_reads

    clock = [1000.0]
    monkeypatch.setattr(store_reads, "_now", lambda: clock[0])
    url, _, _ = qdrant_recorder
    when = models.Filter(
        must=[models.FieldCondition(key="metadata.when", range=models.Range(gt=5))]
    )
    with M3Store.open(url=url, **ARGS) as first:
        first.upsert([_priced(0, {"price": 2})])  # read: none indexed yet
        first.count(when)  # allowed: nothing indexes metadata.when yet
        declared = {"price": "integer", "when": "datetime"}
        M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
        clock[0] += store_reads.INDEX_TYPES_TTL
        with pytest.raises(ValueError, match="metadata.when"):
            first.count(when)
        with pytest.raises(ValueError, match=r"'price' is 1\.5.*metadata\.price as integer"):
            first.upsert([_priced(1, {"price": 1.5})])
        reads: list[int] = []
        read = first._backend.payload_indexes
        monkeypatch.setattr(first._backend, "payload_indexes", lambda: reads.append(1) or read())
        first.upsert([_priced(2, {"lang": "en", "flag": True, "tags": ["a"]})])  # no number
        first.count({"lang": "en"})  # no range
        first.count(
            models.Filter(
                must=[models.FieldCondition(key="chunk_index", range=models.Range(gte=0))]
            )
        )
        assert reads == []
        first.upsert([_priced(3, {"price": 3})])
        first.upsert([_priced(4, {"price": 4})])
        assert reads == [1, 1]  # each write holding a number
        assert first.count() == 4  # d0, d2, d3, d4: nothing of a refused write


def test_a_uuid_index_is_refused_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded engine's ``uuid`` index serves every spelling of one UUID as the same
    value: with ``payload_indexes={"ref": "uuid"}``, ``{"ref": U}`` matched (and
    ``delete_points`` deleted) the points storing ``U.upper()``, its undashed and braced
    spellings too, where an unindexed key and qdrant-client's local mode matched ``U`` only."""
    with pytest.raises(ValueError, match="type 'uuid' is not supported.*'keyword'"):
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"ref": "uuid"}, **ARGS)
    with pytest.raises(ValueError, match="'uuid' is not supported"):
        payload_index_fields({"ref": PayloadIndexType.UUID})
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:  # made by another program
        s._backend.create_payload_index("metadata.ref", PayloadIndexType.UUID)
    with caplog.at_level(logging.WARNING, logger="m3kit.store.payload_indexes"):
        M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS).close()
    assert "uuid payload index on metadata.ref" in caplog.text
    assert "declare the key as keyword" in caplog.text
    # the way out it names: declared keyword, the uuid index is replaced (it was a clash)
    caplog.clear()
    spellings = ["6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10", "6F0B7C1E-5A43-5B8E-9A57-3D1C2B7E4F10"]
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.payload_indexes"),
        M3Store.open(
            tmp_path, backend=Backend.EDGE, payload_indexes={"ref": "keyword"}, **ARGS
        ) as s,
    ):
        assert s._backend.payload_indexes()["metadata.ref"] == "keyword"
        s.upsert([_priced(i, {"ref": ref}) for i, ref in enumerate(spellings)])
        assert [h.doc_id for h in s.get(None, filter={"ref": spellings[0]})] == ["d0"]
    assert "uuid payload index" not in caplog.text


@pytest.mark.parametrize("backend", [Backend.EDGE, Backend.CLIENT])
def test_a_phrase_is_matched_on_a_text_indexed_key(tmp_path: Path, backend: Backend) -> None:
    """A ``text`` index made without phrase matching served a ``MatchPhrase`` as matching
    nothing (the embedded engine), where the unindexed key matched the phrase."""
    from qdrant_client import models

    phrase = models.Filter(
        must=[
            models.FieldCondition(key="metadata.tx", match=models.MatchPhrase(phrase="capital of"))
        ]
    )
    texts = ["The Capital of Germany", "capitalism rocks", "GERMANY capital"]
    with M3Store.open(tmp_path, backend=backend, payload_indexes={"tx": "text"}, **ARGS) as s:
        s.upsert([_priced(i, {"tx": t}) for i, t in enumerate(texts)])
        assert [h.doc_id for h in s.get(None, filter=phrase)] == ["d0"]
