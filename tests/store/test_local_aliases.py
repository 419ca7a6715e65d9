"""An alias of a qdrant-client local collection (a blue/green model switch) opens through
m3kit, and the embedded engine, which has no aliases, never shadows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.store import M3Index

from .conftest import WHOLE


def _aliased_collection(enc: M3Encoder, folder: Path) -> None:
    """qdrant-client local collection ``v1`` in ``folder`` holding WHOLE, and alias ``docs``."""
    with M3Index.open(enc, folder, collection="v1", backend="client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        alias = models.CreateAlias(collection_name="v1", alias_name="docs")
        index.store._backend._client.update_collection_aliases(  # type: ignore[attr-defined]
            change_aliases_operations=[models.CreateAliasOperation(create_alias=alias)]
        )


def test_an_alias_of_a_local_client_collection_is_not_shadowed_by_an_embedded_one(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """qdrant-client local mode has aliases (a blue/green model switch); the embedded engine
    has none. Opening the alias with the default backend made an empty embedded shard of that
    name: searches found nothing, writes went there, and the alias was hidden for good."""
    _aliased_collection(enc_a, tmp_path)
    with pytest.raises(ValueError, match="qdrant-client local collection 'docs'.*backend='client'"):
        M3Index.open(enc_a, tmp_path, collection="docs")
    assert not (tmp_path / "docs").exists()
    with M3Index.open(enc_a, tmp_path, collection="docs", backend="client", create=False) as index:
        assert index.count() == len(WHOLE)
        assert index.search("capital of Germany", k=1)[0].doc_id == "w2"


@pytest.mark.parametrize("copy_metadata", [False, True])
def test_a_copy_without_the_record_keeps_its_sparse_cut(
    enc_a: M3Encoder, tmp_path: Path, copy_metadata: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A collection copied point by point (scroll + upsert) without ``metadata=``: every open
    was refused, even with the right encoder and cut, as "a writer went on with another cut",
    and the way out it led with re-encoded the copy without its cut."""
    import logging

    from m3kit.store.sparse_cut import SparseCut

    with M3Index.open(enc_a, tmp_path, collection="v1", backend="client", sparse_top_k=4) as ix:
        ix.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        client = ix.store._backend._client  # type: ignore[attr-defined]
        info = client.get_collection("v1").config
        client.create_collection(
            "copy",
            vectors_config=info.params.vectors,
            sparse_vectors_config=info.params.sparse_vectors,
            metadata=info.metadata if copy_metadata else None,
        )
        points, _ = client.scroll("v1", limit=100, with_vectors=True)
        client.upsert(
            "copy",
            [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points],
        )
    with (
        caplog.at_level(logging.WARNING),
        M3Index.open(enc_a, tmp_path, collection="copy", backend="client", create=False) as copy,
    ):
        assert copy.sparse_cut == SparseCut(4)
        assert copy.search("capital of Germany", k=1)[0].doc_id == "w2"
        copy.add_texts(["one more text"], doc_ids=["more"])  # written with the same cut
    assert ("recording that cut" in caplog.text) is not copy_metadata


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_shard_an_older_m3kit_made_over_an_alias_is_named(
    enc_a: M3Encoder, tmp_path: Path, backend: str
) -> None:
    """The empty embedded shard the old alias bug left in the folder was opened silently by
    the default backend (no hits), and backend='client' was sent back to it."""
    M3Index.open(enc_a, tmp_path, collection="docs", backend="edge").close()  # the old shard
    _aliased_collection(enc_a, tmp_path)
    with pytest.raises(ValueError, match="named like the qdrant-client alias 'docs'.*delete"):
        M3Index.open(enc_a, tmp_path, collection="docs", backend=backend)
