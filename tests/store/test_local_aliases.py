"""An alias of a qdrant-client local collection (a blue/green model switch) opens through
m3kit, and the embedded engine, which has no aliases, never shadows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import models

from m3kit import M3Encoder
from m3kit.store import M3Index

from .conftest import WHOLE


def test_an_alias_of_a_local_client_collection_is_not_shadowed_by_an_embedded_one(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """qdrant-client local mode has aliases (a blue/green model switch); the embedded engine
    has none. Opening the alias with the default backend made an empty embedded shard of that
    name: searches found nothing, writes went there, and the alias was hidden for good."""
    with M3Index.open(enc_a, tmp_path, collection="v1", backend="client") as index:
        index.add_texts(list(WHOLE.values()), doc_ids=list(WHOLE))
        alias = models.CreateAlias(collection_name="v1", alias_name="docs")
        index.store._backend._client.update_collection_aliases(  # type: ignore[attr-defined]
            change_aliases_operations=[models.CreateAliasOperation(create_alias=alias)]
        )
    with pytest.raises(ValueError, match="qdrant-client local collection 'docs'.*backend='client'"):
        M3Index.open(enc_a, tmp_path, collection="docs")
    assert not (tmp_path / "docs").exists()
    with M3Index.open(enc_a, tmp_path, collection="docs", backend="client", create=False) as index:
        assert index.count() == len(WHOLE)
        assert index.search("capital of Germany", k=1)[0].doc_id == "w2"
