"""``collection_name=``, langchain-qdrant's (and LangChain's other stores') keyword, names the
collection of ``M3VectorStore.from_texts`` / ``from_documents`` / ``open`` as ``collection=``
does (it was a ``TypeError``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder


def test_collection_name_is_the_collection(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    store = M3VectorStore.from_texts(
        ["Oxygen is a gas."], tiny_encoder, location=tmp_path, collection_name="docs"
    )
    assert store.index.store.collection == "docs"
    store.close()
    # the same collection, opened by either name; another name is another collection
    with M3VectorStore.open(tiny_encoder, tmp_path, collection="docs") as again:
        assert [d.page_content for d in again.similarity_search("oxygen", k=1)] == [
            "Oxygen is a gas."
        ]
    with M3VectorStore.open(tiny_encoder, tmp_path, collection_name="docs", collection="docs"):
        pass
    with M3VectorStore.open(tiny_encoder, tmp_path) as default:
        assert default.index.store.collection == "m3kit"
        assert default.similarity_search("oxygen", k=1) == []


def test_two_different_names_are_refused(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match="collection='a' and collection_name='b'"):
        M3VectorStore.from_texts(["x"], tiny_encoder, collection="a", collection_name="b")


def test_the_retrievers_take_collection_name_too(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    from langchain_m3 import M3Retriever
    from llamaindex_m3 import M3Retriever as LlamaIndexRetriever

    retriever = M3Retriever.from_texts(
        ["Oxygen is a gas."], tiny_encoder, location=tmp_path, collection_name="docs"
    )
    assert retriever.index.store.collection == "docs"
    retriever.index.close()
    with pytest.raises(ValueError, match="name different collections"):
        M3Retriever.from_texts(["x"], tiny_encoder, collection="a", collection_name="b")
    li = LlamaIndexRetriever.open(tiny_encoder, location=tmp_path, collection_name="docs")
    assert li.index.store.collection == "docs" and li.index.store.count() == 1
    li.index.close()


def test_a_server_url_as_location_is_refused_not_made_a_folder(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """langchain-qdrant takes a server URL as ``location``; here it made a folder
    ``./http:/localhost:6333`` and stored a local collection there without a word."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"is a URL: pass a Qdrant server as url="):
        M3VectorStore.from_texts(
            ["x"], tiny_encoder, location="http://localhost:6333", collection_name="docs"
        )
    assert list(tmp_path.iterdir()) == []


def test_from_texts_takes_langchain_qdrants_path_and_batch_size(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """``path=`` (langchain-qdrant's folder argument) and ``batch_size=`` were refused by
    ``open`` with a ``TypeError``; they are the folder and ``add_documents``' batch."""
    folder = str(tmp_path / "db")
    store = M3VectorStore.from_texts(["a.", "b.", "c."], tiny_encoder, path=folder, batch_size=2)
    assert store.index.count() == 3
    store.close()
    with M3VectorStore.open(tiny_encoder, folder) as again:
        assert again.index.count() == 3  # written to the folder
    with pytest.raises(ValueError, match="name two places"):
        M3VectorStore.from_texts(["a."], tiny_encoder, path=folder, location=str(tmp_path / "x"))
    # langchain-qdrant's default path=None passed on, and one folder named both ways
    for path, location in ((None, folder), (Path(folder), folder)):
        with M3VectorStore.from_texts(["d."], tiny_encoder, path=path, location=location) as s:
            assert s.index.count() == 4


def test_create_false_refuses_a_missing_collection_in_every_opener(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """A search service with a misspelt collection name created an empty collection (or,
    with a read-only API key, failed on the create): the openers had no ``create=False``."""
    from llamaindex_m3 import M3Retriever as LlamaIndexRetriever
    from llamaindex_m3 import M3VectorStore as LlamaIndexStore
    from m3kit.errors import CollectionNotFoundError

    M3VectorStore.from_texts(["Oxygen is a gas."], tiny_encoder, location=tmp_path).close()
    openers = {
        "langchain M3VectorStore.open": lambda name: M3VectorStore.open(
            tiny_encoder, tmp_path, collection=name, create=False
        ),
        "llamaindex M3VectorStore": lambda name: LlamaIndexStore(
            tiny_encoder, location=str(tmp_path), collection_name=name, create=False
        ),
        "llamaindex M3Retriever.open": lambda name: LlamaIndexRetriever.open(
            tiny_encoder, location=tmp_path, collection=name, create=False
        ),
    }
    for opener in openers.values():
        with pytest.raises(CollectionNotFoundError, match="m3kitt"):
            opener("m3kitt")
        opener("m3kit").close()  # the existing one opens
    with M3VectorStore.open(tiny_encoder, tmp_path, collection="m3kitt", create=True) as made:
        assert made.index.store.collection == "m3kitt"
