"""Server connection settings (timeout, request size limit) reach qdrant-client and the writes
from every core entry point, and are refused where no server would use them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from m3kit.errors import StoreConnectionError
from m3kit.outputs import Head, M3Output
from m3kit.store import Backend, ChunkRecord, ConnectionSettings, M3Index, M3Store

ARGS: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": 64, "sparse": False}
#: The ``qdrant_recorder`` / ``qdrant_1mib`` fixtures (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
MIB = 1024 * 1024


def _records(n: int) -> list[ChunkRecord]:
    """``n`` chunks of 256 ColBERT tokens: ~0.35 MB of JSON each."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        colbert = rng.normal(size=(256, 64)).astype(np.float32)
        colbert /= np.linalg.norm(colbert, axis=1, keepdims=True)
        vectors = M3Output(
            heads=frozenset({Head.DENSE, Head.COLBERT}),
            token_counts=(256,),
            _dense=np.eye(4, dtype=np.float32)[i % 4][None, :],
            _colbert=(colbert,),
        )
        out.append(ChunkRecord(f"d{i}", 0, f"text {i}", {}, vectors))
    return out


def _write_sizes(server: Server) -> list[int]:
    _, requests, state = server
    return [
        size
        for size, (m, p, _) in zip(state["sizes"], requests, strict=True)
        if m == "PUT" and p == "/collections/c/points"
    ]


def test_writes_fit_a_server_with_a_smaller_request_limit(qdrant_1mib: Server) -> None:
    """The request limit was fixed at Qdrant's default 32 MiB: a server configured lower
    refused every write (413) and there was no way to say so."""
    url, _, state = qdrant_1mib
    connection = ConnectionSettings(max_request_mb=1)
    with M3Store.open(url=url, connection=connection, **ARGS) as store:
        assert store.connection == connection
        store.upsert(_records(8))
    sizes = _write_sizes(qdrant_1mib)
    assert len(sizes) > 1 and max(sizes) <= MIB
    assert len(state["points"]) == 8


def test_a_larger_limit_sends_fewer_requests(qdrant_recorder: Server) -> None:
    records = _records(8)
    url = qdrant_recorder[0]
    with M3Store.open(url=url, connection=ConnectionSettings(max_request_mb=1), **ARGS) as store:
        store.upsert(records)
    small = len(_write_sizes(qdrant_recorder))
    with M3Store.open(url=url, **ARGS) as store:  # the default, 32 MiB
        store.upsert(records)
    assert len(_write_sizes(qdrant_recorder)) - small < small


def test_timeout_reaches_qdrant_client_from_the_index(
    qdrant_recorder: Server, client_kwargs: list[dict[str, Any]], tiny_encoder: Any
) -> None:
    """``M3Index.open`` took no timeout: only ``M3Store.open`` could set one."""
    url = qdrant_recorder[0]
    connection = ConnectionSettings(timeout=17, max_request_mb=1)
    with M3Index.open(tiny_encoder, url=url, collection="c", connection=connection) as index:
        assert index.store.connection == connection
        assert index.store._backend.request_bytes == MIB
    assert client_kwargs[-1]["timeout"] == 17


@pytest.mark.parametrize(
    ("location", "backend"), [(None, Backend.EDGE), (":memory:", Backend.CLIENT), ("dir", None)]
)
def test_server_settings_without_a_server_are_refused(
    location: str | None, backend: Backend | None, tmp_path: Any
) -> None:
    """``M3Store.open(timeout=5)`` on the embedded engine or qdrant-client's local mode
    opened the store and dropped the timeout silently."""
    where = str(tmp_path / "st") if location == "dir" else location
    with pytest.raises(ValueError, match=r"\(timeout=5, max_request_mb=32\) apply to a Qdrant"):
        M3Store.open(where, backend=backend, timeout=5, **ARGS)
    with pytest.raises(ValueError, match="max_request_mb=4\\) apply to a Qdrant server"):
        M3Store.open(
            where, backend=backend, connection=ConnectionSettings(max_request_mb=4), **ARGS
        )


def test_an_index_without_a_server_refuses_them(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match="timeout=3, .* apply to a Qdrant server: .* give url="):
        M3Index.open(tiny_encoder, connection=ConnectionSettings(timeout=3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a whole number of seconds >= 1"),
        ({"timeout": -1}, "timeout must be a whole number of seconds >= 1"),
        ({"timeout": 0.5}, "timeout must be a whole number of seconds >= 1"),
        ({"timeout": True}, "timeout must be a whole number of seconds >= 1"),
        ({"max_request_mb": 0}, "max_request_mb must be an integer >= 1"),
        ({"max_request_mb": "32"}, "max_request_mb must be an integer >= 1"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    """``timeout=0`` reached the server as "cannot reach Qdrant ... check that the server is
    running", ``timeout=-1`` as a transport error naming neither the setting nor its value."""
    with pytest.raises(ValueError, match=message):
        ConnectionSettings(**kwargs)


def test_the_store_timeout_shorthand(
    qdrant_recorder: Server, client_kwargs: list[dict[str, Any]]
) -> None:
    url = qdrant_recorder[0]
    with M3Store.open(url=url, timeout=9, **ARGS) as store:
        assert store.connection == ConnectionSettings(timeout=9)
    assert client_kwargs[-1]["timeout"] == 9
    with pytest.raises(ValueError, match="timeout must be a whole number of seconds >= 1"):
        M3Store.open(url=url, timeout=0, **ARGS)  # was "cannot reach Qdrant ..."
    with pytest.raises(ValueError, match="give the timeout once"):
        M3Store.open(url=url, timeout=5, connection=ConnectionSettings(timeout=7), **ARGS)


def test_a_refused_request_size_names_the_setting(qdrant_1mib: Server) -> None:
    """A server's 413 came back as its own words only ("JSON payload ... is larger than
    allowed"), naming no m3kit setting that splits writes to fit."""
    with (
        M3Store.open(url=qdrant_1mib[0], **ARGS) as store,
        pytest.raises(StoreConnectionError, match="HTTP 413") as err,
    ):
        store.upsert(_records(8))
    message = str(err.value)
    assert "connection=ConnectionSettings(max_request_mb=...)" in message
    assert "--qdrant-max-request-mb" in message and "larger than allowed (1048576)" in message


def _chunk(doc_id: str, chunk_index: int, tokens: int) -> ChunkRecord:
    """A chunk of ``tokens`` ColBERT vectors of 64 dims (~1.3 KB of JSON per token)."""
    colbert = np.random.default_rng(chunk_index).normal(size=(tokens, 64)).astype(np.float32)
    colbert /= np.linalg.norm(colbert, axis=1, keepdims=True)
    vectors = M3Output(
        heads=frozenset({Head.DENSE, Head.COLBERT}),
        token_counts=(tokens,),
        _dense=np.eye(4, dtype=np.float32)[chunk_index % 4][None, :],
        _colbert=(colbert,),
    )
    return ChunkRecord(doc_id, chunk_index, f"text {chunk_index}", {}, vectors)


def test_a_chunk_larger_than_a_request_is_refused_before_anything_is_sent(
    qdrant_1mib: Server,
) -> None:
    """A chunk whose JSON passes the request limit was sent alone and refused (413) after the
    write's earlier requests were stored: document ``small`` written, ``big`` half-written
    (its chunk 0 new, its chunk 1 refused), and the message said to give the limit that was
    already given."""
    url, _, state = qdrant_1mib
    records = [_chunk("small", 0, 8), _chunk("big", 0, 8), _chunk("big", 1, 1200)]
    connection = ConnectionSettings(max_request_mb=1)
    with M3Store.open(url=url, connection=connection, **ARGS) as store:
        with pytest.raises(ValueError, match="chunk 1 of document 'big' is 1.5 MiB") as err:
            store.upsert(records)
        assert not _write_sizes(qdrant_1mib) and not state["points"]  # nothing was sent
        message = str(err.value)
        assert "the server's request limit of 1 MiB (max_request_mb=1)" in message
        assert "nothing of this write was sent" in message
        assert "shorter chunks" in message and "ConnectionSettings(max_request_mb=...)" in message
        # measured, not estimated: a chunk just under the limit (~0.94 MiB) is written
        store.upsert([_chunk("fits", 0, 740)])
    assert max(_write_sizes(qdrant_1mib)) <= MIB
    assert len(state["points"]) == 1
