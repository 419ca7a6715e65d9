"""A fake Qdrant REST server for one collection ``c``, on a loopback port, for the store tests.

It answers what :class:`~m3kit.store.M3Store` asks of a server: collection exists / info /
create / metadata patch, payload index creation, point upserts, count (with simple payload
filters), scroll, delete and batched payload updates (answered, not applied). It
records every request as ``(method, path, json body)`` and keeps its state in a dict:

* ``config`` -- the create request's body (absent until the collection is created); a
  create of the existing collection gets 409, as Qdrant answers it
* ``stale_exists`` -- how many more "exists" questions answer no (set by a test: another
  process creates the collection between this one's check and its create)
* ``metadata`` -- the collection metadata, as patched
* ``indexes`` -- payload index field name -> schema, as created
* ``points`` -- point id -> point, as upserted
* ``in_flight`` / ``most`` -- upserts being answered now / the most at once (each upsert
  takes ``write_delay`` seconds, so parallel writes overlap)
* ``seen_keys`` -- the ``api-key`` header of every request (``None``: none sent); with
  ``api_key`` set, a request without that key gets 401 and nothing else
* ``sizes`` -- the body size of every request in bytes; a body above ``max_request_bytes``
  (Qdrant's default ``service.max_request_size_mb``, 32 MiB) gets 413, as Qdrant answers it

Tests use it through the ``fake_qdrant`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

Requests = list[tuple[str, str, Any]]


class FakeQdrant(NamedTuple):
    """A running fake server: its base URL, the requests it got and its state."""

    url: str
    requests: Requests
    state: dict[str, Any]


class FakeQdrantHandler(http.server.BaseHTTPRequestHandler):
    """Enough of Qdrant's REST API for one collection ``c``; records every request."""

    requests: Requests
    state: dict[str, Any]
    write_delay: float = 0.05
    api_key: str | None = None
    max_request_bytes: int = 32 * 1024 * 1024

    def _refuse(self, status: int, error: str) -> None:
        data = json.dumps({"status": {"error": error}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, result: Any) -> None:
        data = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _info(self) -> dict[str, Any]:
        config = self.state["config"]
        params = {
            k: v for k, v in config.items() if k not in ("hnsw_config", "quantization_config")
        }
        return {
            "status": "green",
            "optimizer_status": "ok",
            "segments_count": 1,
            "points_count": len(self.state["points"]),
            "config": {
                "params": params,
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 0,
                    "flush_interval_sec": 5,
                },
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                "quantization_config": config.get("quantization_config"),
                "metadata": self.state.get("metadata"),
            },
            "payload_schema": {
                path: {"data_type": kind, "points": 0}
                for path, kind in self.state["indexes"].items()
            },
        }

    def _upsert(self, body: Any) -> None:
        with self.state["lock"]:
            self.state["in_flight"] += 1
            self.state["most"] = max(self.state["most"], self.state["in_flight"])
            self.state["points"].update({str(p["id"]): p for p in body["points"]})
        time.sleep(self.write_delay)
        with self.state["lock"]:
            self.state["in_flight"] -= 1

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        self.state["sizes"].append(length)
        path = self.path.split("?")[0]
        key = self.headers.get("api-key")
        self.state["seen_keys"].append(key)
        if self.api_key is not None and key != self.api_key:
            self._refuse(401, "Unauthorized")
            return
        if length > self.max_request_bytes:
            limit = self.max_request_bytes
            self._refuse(413, f"JSON payload ({length} bytes) is larger than allowed ({limit})")
            return
        body: Any = json.loads(data) if data else None
        self.requests.append((self.command, path, body))
        exists = "config" in self.state
        if path.endswith("/exists"):
            stale = self.state.get("stale_exists", 0)  # another process creates it meanwhile
            self.state["stale_exists"] = max(0, stale - 1)
            self._answer({"exists": exists and not stale})
        elif path.endswith("/index") and self.command == "PUT":
            self.state["indexes"][body["field_name"]] = body["field_schema"]
            self._answer({"operation_id": 0, "status": "completed"})
        elif path == "/collections/c" and self.command == "PUT" and exists:  # as Qdrant
            self._refuse(409, "Wrong input: Collection `c` already exists!")
        elif path == "/collections/c" and self.command == "PUT":
            self.state["config"] = body
            self._answer(True)
        elif path == "/collections/c" and self.command == "PATCH":
            self.state["metadata"] = {**(self.state.get("metadata") or {}), **body["metadata"]}
            self._answer(True)
        elif path == "/collections/c" and self.command == "GET" and exists:
            self._answer(self._info())
        elif path == "/collections/c/points" and self.command == "PUT":
            self._upsert(body)
            self._answer({"operation_id": 0, "status": "completed"})
        elif path == "/collections/c/points/count":
            selector = (body or {}).get("filter")
            found = [p for p in self.state["points"].values() if _matches(selector, p)]
            self._answer({"count": len(found)})
        elif path == "/collections/c/points/scroll":
            self._answer({"points": [], "next_page_offset": None})
        elif path == "/collections/c/points/delete":
            self._answer({"operation_id": 0, "status": "completed"})
        elif path == "/collections/c/points/batch":  # (set_payload operations: not applied)
            done = {"operation_id": 0, "status": "completed"}
            self._answer([done for _ in (body or {}).get("operations", [])])
        elif path.startswith("/collections/c/points"):  # other point reads: nothing stored
            self._answer({"points": []})
        else:
            self.send_error(404)

    do_GET = do_PUT = do_POST = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


def _matches(selector: Any, point: dict[str, Any]) -> bool:
    """Whether ``point`` matches a count's filter: ``must`` / ``must_not`` of top-level
    payload conditions (``match.value``, ``match.any``, ``is_empty``); a filter with other
    conditions (or none) matches every point, as this server answered before it read filters."""
    if not selector:
        return True
    payload = point.get("payload") or {}

    def holds(c: dict[str, Any]) -> bool | None:
        if "is_empty" in c:
            return payload.get(c["is_empty"]["key"]) in (None, [])
        match = c.get("match") or {}
        if "value" in match:
            return bool(payload.get(c["key"]) == match["value"])
        if "any" in match:
            return payload.get(c["key"]) in match["any"]
        return None  # not read here

    must = [holds(c) for c in selector.get("must") or []]
    must_not = [holds(c) for c in selector.get("must_not") or []]
    if None in must or None in must_not or set(selector) - {"must", "must_not"}:
        return True
    return all(must) and not any(must_not)


@contextmanager
def fake_qdrant_server(
    write_delay: float = 0.05,
    api_key: str | None = None,
    max_request_bytes: int = FakeQdrantHandler.max_request_bytes,
) -> Iterator[FakeQdrant]:
    """Serve a fresh :class:`FakeQdrantHandler` on ``127.0.0.1`` (a free port) in a thread.

    With ``api_key``, requests without that ``api-key`` header are refused (401); a request
    body above ``max_request_bytes`` is refused (413), as a server configured so refuses it.
    """
    requests: Requests = []
    state: dict[str, Any] = {
        "lock": threading.Lock(),
        "in_flight": 0,
        "most": 0,
        "indexes": {},
        "points": {},
        "seen_keys": [],
        "sizes": [],
    }
    attrs = {
        "requests": requests,
        "state": state,
        "write_delay": write_delay,
        "api_key": api_key,
        "max_request_bytes": max_request_bytes,
    }
    handler = type("Handler", (FakeQdrantHandler,), attrs)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeQdrant(f"http://127.0.0.1:{httpd.server_address[1]}", requests, state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
