"""Folder layouts: each backend refuses the other's folder; an open shard is not opened twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.errors import StoreConnectionError
from m3kit.store import Backend, M3Store

ARGS = {"collection": "c", "dense_dim": 4, "colbert_dim": 2, "sparse": True}


def test_client_refuses_an_edge_folder(tmp_path: Path) -> None:
    M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS).close()
    with pytest.raises(ValueError, match="backend='edge'"):
        M3Store.open(tmp_path, backend=Backend.CLIENT, **ARGS)


def test_edge_refuses_a_client_folder(tmp_path: Path) -> None:
    M3Store.open(tmp_path, backend=Backend.CLIENT, **ARGS).close()
    with pytest.raises(ValueError, match="backend='client'"):
        M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS)


@pytest.mark.parametrize("backend", list(Backend))
def test_folder_in_use_is_named(tmp_path: Path, backend: Backend) -> None:
    first = M3Store.open(tmp_path, backend=backend, **ARGS)
    with pytest.raises(StoreConnectionError, match=r"another|Close the other"):
        M3Store.open(tmp_path, backend=backend, **ARGS)
    first.close()
    with M3Store.open(tmp_path, backend=backend, **ARGS) as again:  # released on close
        assert again.count() == 0


def test_memory_edge_store_removes_its_folder() -> None:
    store = M3Store.open(None, backend=Backend.EDGE, **ARGS)
    folder = store._backend._path.parent
    assert folder.is_dir()
    store.close()
    assert not folder.exists()


@pytest.mark.parametrize("backend", list(Backend))
def test_a_closed_store_refuses_use_and_keeps_the_folder_free(
    tmp_path: Path, backend: Backend
) -> None:
    # the embedded engine opened its shard again on the next call after close(): writes went
    # on, and the folder stayed locked (close() again did nothing), so opening it again failed
    store = M3Store.open(tmp_path, backend=backend, **ARGS)
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.count()
    with pytest.raises(RuntimeError, match="closed"):
        store.delete_documents(["a"])
    store.close()
    with M3Store.open(tmp_path, backend=backend, **ARGS) as again:
        assert again.count() == 0
