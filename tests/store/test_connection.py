"""Server failures surface as StoreConnectionError naming the URL; the API key never leaks."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
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


RIGHT_KEY = "right-key"  # what the qdrant_with_key fixture accepts


@pytest.fixture
def fake_qdrant(
    qdrant_with_key: tuple[str, list[Any], dict[str, Any]],
) -> tuple[str, list[str | None]]:
    """A fake server refusing requests without RIGHT_KEY: ``(url, api-key header of each)``."""
    url, _, state = qdrant_with_key
    return url, state["seen_keys"]


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
    monkeypatch.setenv("QDRANT_API_KEY", RIGHT_KEY)
    store = M3Store.open(url=url, **OPEN_ARGS)
    assert seen[0] == SECRET and seen[1:] and set(seen[1:]) == {RIGHT_KEY}
    assert store.backend is Backend.CLIENT
    assert RIGHT_KEY not in repr(store) and url in repr(store)
    store.close()


def test_right_key_opens_and_repr_has_no_key(fake_qdrant: tuple[str, list[str | None]]) -> None:
    url, _ = fake_qdrant
    store = M3Store.open(url=url, api_key=RIGHT_KEY, **OPEN_ARGS)
    assert RIGHT_KEY not in repr(store)
    assert RIGHT_KEY not in repr(store._backend)
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


@pytest.mark.parametrize("backend", [Backend.EDGE, Backend.CLIENT])
@pytest.mark.parametrize(("name", "message"), [("../out", "holds '/'"), (".", "is not a name")])
def test_a_collection_name_stays_inside_its_folder(
    tmp_path: Path, backend: Backend, name: str, message: str
) -> None:
    """The embedded engine makes the name a folder: ``../out`` was written beside the
    storage folder, ``.`` into its root among the other collections."""
    args = {k: v for k, v in OPEN_ARGS.items() if k != "collection"}
    store_dir = tmp_path / "st"
    with pytest.raises(ValueError, match=f"collection name {name!r} {message}"):
        M3Store.open(store_dir, collection=name, backend=backend, **args)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["st"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "given", ["http://user:{s}@127.0.0.1:9", "http://127.0.0.1:9/?api_key={s}"]
)
def test_credentials_in_the_url_are_refused(given: str) -> None:
    """qdrant-client sends neither a URL's user info nor its query string: the key written
    there was dropped silently and the server answered 401 naming the api_key argument."""
    with pytest.raises(ValueError, match="give the key as api_key=") as err:
        M3Store.open(url=given.format(s=SECRET), **OPEN_ARGS)
    assert "http://127.0.0.1:9" in str(err.value)
    _no_secret(str(err.value))
