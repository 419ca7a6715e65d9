"""Server failures surface as StoreConnectionError naming the URL; the API key never leaks."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from m3kit.errors import StoreConnectionError
from m3kit.store import Backend, M3Store

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")

SECRET = "secret-xyz"
OPEN_ARGS: dict[str, Any] = {
    "collection": "c",
    "dense_dim": 4,
    "colbert_dim": None,
    "sparse": False,
}


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


class _FakeQdrant(http.server.BaseHTTPRequestHandler):
    """Answers just enough of Qdrant's REST API; 401 unless the api-key header is right."""

    seen_keys: list[str | None]
    right_key = "right-key"

    def _answer(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        key = self.headers.get("api-key")
        self.seen_keys.append(key)
        if key != self.right_key:
            self._answer({"status": {"error": "Unauthorized"}}, 401)
        elif self.path.split("?")[0].endswith("/exists"):
            self._answer({"result": {"exists": False}, "status": "ok", "time": 0.0})
        elif self.path.split("?")[0].endswith("/index"):
            result = {"operation_id": 0, "status": "completed"}
            self._answer({"result": result, "status": "ok", "time": 0.0})
        else:
            self._answer({"result": True, "status": "ok", "time": 0.0})

    do_GET = do_PUT = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def fake_qdrant() -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []
    handler = type("Handler", (_FakeQdrant,), {"seen_keys": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreConnectionError) as err:
        M3Store.open(url="http://127.0.0.1:9", api_key=SECRET, **OPEN_ARGS)
    msg = str(err.value)
    assert "http://127.0.0.1:9" in msg and "server is running" in msg
    _no_secret(msg, repr(err.value), caplog.text)


def test_wrong_api_key_is_named_without_leaking(
    fake_qdrant: tuple[str, list[str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, seen = fake_qdrant
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreConnectionError) as err:
        M3Store.open(url=url, api_key=SECRET, **OPEN_ARGS)
    msg = str(err.value)
    assert url in msg and "401" in msg and "API key" in msg and "QDRANT_API_KEY" in msg
    assert seen == [SECRET]
    _no_secret(msg, repr(err.value), caplog.text)


def test_api_key_from_environment(
    fake_qdrant: tuple[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = fake_qdrant
    monkeypatch.setenv("QDRANT_API_KEY", SECRET)
    with pytest.raises(StoreConnectionError, match="401"):
        M3Store.open(url=url, **OPEN_ARGS)
    monkeypatch.setenv("QDRANT_API_KEY", _FakeQdrant.right_key)
    store = M3Store.open(url=url, **OPEN_ARGS)
    assert seen[0] == SECRET and seen[1:] and set(seen[1:]) == {_FakeQdrant.right_key}
    assert store.backend is Backend.CLIENT
    assert _FakeQdrant.right_key not in repr(store) and url in repr(store)
    store.close()


def test_right_key_opens_and_repr_has_no_key(fake_qdrant: tuple[str, list[str | None]]) -> None:
    url, _ = fake_qdrant
    store = M3Store.open(url=url, api_key=_FakeQdrant.right_key, **OPEN_ARGS)
    assert _FakeQdrant.right_key not in repr(store)
    assert _FakeQdrant.right_key not in repr(store._backend)
    store.close()


def test_timeout_is_named() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(StoreConnectionError, match="timed out") as err:
            M3Store.open(url=url, api_key=SECRET, timeout=1, **OPEN_ARGS)
        _no_secret(str(err.value))
    finally:
        listener.close()


def test_argument_combinations_are_checked() -> None:
    with pytest.raises(ValueError, match="only used with url"):
        M3Store.open(api_key=SECRET, **OPEN_ARGS)
    with pytest.raises(ValueError, match="no URL"):
        M3Store.open(url="http://127.0.0.1:9", backend="edge", **OPEN_ARGS)
    with pytest.raises(ValueError, match="not both"):
        M3Store.open(":memory:", url="http://127.0.0.1:9", **OPEN_ARGS)
