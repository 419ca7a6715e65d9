"""``M3VectorStore`` saved and opened again: ``to_dict`` / ``from_dict`` name the collection."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.schema import TextNode

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit.store import M3Index


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_to_dict_of_a_store_on_an_opened_index_names_its_folder(
    tiny_embedding: M3Embedding, tmp_path: Path, backend: str
) -> None:
    """A store on an opened index (``from_index``) recorded ``location=None`` (in memory):
    ``from_dict(data, model=...)`` opened an empty temporary collection instead of the folder,
    and ``from_dict(data, index=index)`` was refused for the ``backend`` it recorded itself."""
    folder = str(tmp_path / "db")
    with M3Index.open(tiny_embedding.encoder, folder, backend=backend) as index:
        store = M3VectorStore.from_index(index)
        store.add([TextNode(text="Berlin is the capital of Germany.", id_="berlin")])
        data = store.to_dict()
        assert (data["location"], data["url"], data["backend"]) == (folder, None, backend)
        again = M3VectorStore.from_dict(data, index=index)
        assert [n.node_id for n in again.get_nodes()] == ["berlin"]
        with pytest.raises(ValueError, match="do not also give location=.*other-folder"):
            M3VectorStore(index=index, location=str(tmp_path / "other-folder"))
    with M3VectorStore.from_dict(data, model=tiny_embedding) as reopened:
        assert [n.node_id for n in reopened.get_nodes()] == ["berlin"]


def test_a_store_on_an_opened_index_refuses_another_collection_name(
    capitals_store: M3VectorStore,
) -> None:
    """``collection_name`` given with ``index=`` was kept as given: the store (and its
    ``to_dict``) named one collection while reading and writing the index's."""
    with pytest.raises(ValueError, match="do not also give collection_name='other'"):
        M3VectorStore(index=capitals_store.client, collection_name="other")
    same = M3VectorStore(index=capitals_store.client, collection_name="m3kit", backend="edge")
    assert same.to_dict()["collection_name"] == "m3kit" and len(same.get_nodes()) == 2


def test_to_dict_of_a_relative_folder_reopens_it_from_another_directory(
    tiny_embedding: M3Embedding, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``to_dict`` kept ``location="db"`` as given: ``from_dict`` in another working directory
    created an empty collection there instead of opening the saved one."""
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    with M3VectorStore(tiny_embedding, location="db") as store:
        store.add([TextNode(text="Berlin is the capital of Germany.", id_="berlin")])
        data = store.to_dict()
    assert data["location"] == str(tmp_path / "app" / "db")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with M3VectorStore.from_dict(data, model=tiny_embedding) as reopened:
        assert [n.node_id for n in reopened.get_nodes()] == ["berlin"]
    assert not (tmp_path / "elsewhere" / "db").exists()


def test_a_url_given_as_location_is_still_refused(tiny_embedding: M3Embedding) -> None:
    """Made absolute, ``location="http://host:6333"`` became a local folder ``http:/host:6333``
    (created, written) instead of the refusal naming ``url=``."""
    with pytest.raises(ValueError, match="is a URL: pass a Qdrant server as url="):
        M3VectorStore(tiny_embedding, location="http://localhost:6333")
