"""Declared payload indexes on metadata keys: created once, on every engine that has them."""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe

from m3kit.cli import build_parser
from m3kit.errors import SchemaMismatchError
from m3kit.outputs import Head, M3Output
from m3kit.store import Backend, ChunkRecord, M3Store, PayloadIndexType
from m3kit.store.schema import payload_index_fields

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
    assert all(t.value in help_text for t in PayloadIndexType)  # help names every type


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
    assert created == ["metadata.lang", "metadata.year"]
    assert _edge_schema(tmp_path) == {
        "doc_id": qe.PayloadSchemaType.Keyword,
        "metadata.lang": qe.PayloadSchemaType.Keyword,
        "metadata.year": qe.PayloadSchemaType.Integer,
    }
    # Same declaration again: nothing created. One more key: only that one.
    M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS).close()
    assert created == ["metadata.lang", "metadata.year"]
    more = {**declared, "score": "float"}
    M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=more, **ARGS).close()
    assert created == ["metadata.lang", "metadata.year", "metadata.score"]
    assert _edge_schema(tmp_path)["metadata.score"] == qe.PayloadSchemaType.Float
    # Another type for an indexed key: an error naming it, nothing created.
    with pytest.raises(SchemaMismatchError, match="metadata.year is indexed as integer, declared"):
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"year": "text"}, **ARGS)
    assert len(created) == 3


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


# -- a server (fake HTTP endpoint) ----------------------------------------------------------
class _StatefulQdrant(http.server.BaseHTTPRequestHandler):
    """Just enough of Qdrant's REST API for one collection; records every request."""

    requests: list[tuple[str, str, Any]]
    state: dict[str, Any]

    def _answer(self, result: Any) -> None:
        data = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _info(self) -> dict[str, Any]:
        config = self.state["config"]
        return {
            "status": "green",
            "optimizer_status": "ok",
            "segments_count": 1,
            "config": {
                "params": {
                    "vectors": config.get("vectors"),
                    "sparse_vectors": config.get("sparse_vectors"),
                },
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 0,
                    "flush_interval_sec": 5,
                },
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                "metadata": self.state.get("metadata"),
            },
            "payload_schema": {
                path: {"data_type": kind, "points": 0}
                for path, kind in self.state["indexes"].items()
            },
        }

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.requests.append((self.command, path, body))
        exists = "config" in self.state
        if path.endswith("/exists"):
            self._answer({"exists": exists})
        elif path.endswith("/index") and self.command == "PUT":
            self.state["indexes"][body["field_name"]] = body["field_schema"]
            self._answer({"operation_id": 0, "status": "completed"})
        elif path == "/collections/c" and self.command == "PUT":
            self.state["config"] = body
            self._answer(True)
        elif path == "/collections/c" and self.command == "PATCH":
            self.state["metadata"] = {**(self.state.get("metadata") or {}), **body["metadata"]}
            self._answer(True)
        elif path == "/collections/c" and self.command == "GET" and exists:
            self._answer(self._info())
        elif path.startswith("/collections/c/points"):  # count / scroll on an empty collection
            self._answer({"count": 0} if path.endswith("/count") else {"points": []})
        else:
            self.send_error(404)

    do_GET = do_PUT = do_POST = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    requests: list[tuple[str, str, Any]] = []
    state: dict[str, Any] = {"indexes": {}}
    handler = type("Handler", (_StatefulQdrant,), {"requests": requests, "state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def _index_puts(requests: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    return [
        (body["field_name"], body["field_schema"])
        for method, path, body in requests
        if method == "PUT" and path == "/collections/c/index"
    ]


def test_server_index_requests_are_made_once(
    server: tuple[str, list[tuple[str, str, Any]]],
) -> None:
    url, requests = server
    declared = {"lang": PayloadIndexType.KEYWORD, "year": "integer"}
    M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
    assert _index_puts(requests) == [
        ("doc_id", "keyword"),
        ("metadata.lang", "keyword"),
        ("metadata.year", "integer"),
    ]
    # Re-opening with the same declaration sends no index request.
    M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
    assert len(_index_puts(requests)) == 3
    # A new key: one request, for it only.
    M3Store.open(url=url, payload_indexes={**declared, "flag": "bool"}, **ARGS).close()
    assert _index_puts(requests)[3:] == [("metadata.flag", "bool")]
    # Another type for an indexed key: refused before any request.
    with pytest.raises(SchemaMismatchError, match="metadata.lang is indexed as keyword"):
        M3Store.open(url=url, payload_indexes={"lang": "text"}, **ARGS)
    assert len(_index_puts(requests)) == 4


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
        "doc_id": qe.PayloadSchemaType.Keyword,
        "metadata.lang": qe.PayloadSchemaType.Keyword,
        "metadata.year": qe.PayloadSchemaType.Integer,
    }
