"""A collection whose vectors m3kit would store or score otherwise is refused, not reused.

Both engines keep a dense vector's storage ``datatype`` and a sparse vector's ``modifier``.
A collection made outside m3kit (or by another tool) with a ``uint8`` dense vector turns
m3kit's unit vectors into zeros (every dense score 0.0), and one with an ``idf`` sparse
modifier rescales every sparse score: opening either used to succeed silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from m3kit.errors import SchemaMismatchError
from m3kit.store import Backend, M3Store

ARGS = {"collection": "c", "dense_dim": 4, "colbert_dim": None, "sparse": True}


def _edge(folder: Path, *, uint8: bool, idf: bool) -> None:
    datatype = qe.VectorStorageDatatype.Uint8 if uint8 else None
    modifier = qe.Modifier.Idf if idf else None
    config = qe.EdgeConfig(
        vectors={
            "dense": qe.EdgeVectorParams(size=4, distance=qe.Distance.Cosine, datatype=datatype)
        },
        sparse_vectors={"sparse": qe.EdgeSparseVectorParams(modifier=modifier)},
    )
    qe.EdgeShard.create(str(folder / "c"), config).close()


def _client(folder: Path, *, uint8: bool, idf: bool) -> None:
    client = QdrantClient(path=str(folder))
    client.create_collection(
        "c",
        vectors_config={
            "dense": models.VectorParams(
                size=4,
                distance=models.Distance.COSINE,
                datatype=models.Datatype.UINT8 if uint8 else None,
            )
        },
        sparse_vectors_config={
            "sparse": models.SparseVectorParams(modifier=models.Modifier.IDF if idf else None)
        },
    )
    client.close()


MAKERS = {Backend.EDGE: _edge, Backend.CLIENT: _client}


@pytest.mark.parametrize("backend", list(Backend))
@pytest.mark.parametrize(("uint8", "idf", "named"), [(True, False, "uint8"), (False, True, "idf")])
def test_other_vector_storage_or_scoring_is_refused(
    tmp_path: Path, backend: Backend, uint8: bool, idf: bool, named: str
) -> None:
    MAKERS[backend](tmp_path, uint8=uint8, idf=idf)
    with pytest.raises(SchemaMismatchError, match=named):
        M3Store.open(tmp_path, backend=backend, **ARGS)


@pytest.mark.parametrize("backend", list(Backend))
def test_the_plain_layout_made_elsewhere_still_opens(tmp_path: Path, backend: Backend) -> None:
    MAKERS[backend](tmp_path, uint8=False, idf=False)
    with M3Store.open(tmp_path, backend=backend, **ARGS) as store:
        assert store.count() == 0
