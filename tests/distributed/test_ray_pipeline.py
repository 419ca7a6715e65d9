"""Ray Data indexing equals a single-process M3Index run (embedded engine and local mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.sources import read_documents
from m3kit.store import M3Index, QueryOptions

ray = pytest.importorskip("ray")

from m3kit.distributed.ray_pipeline import (  # noqa: E402
    ChunkerSpec,
    index_with_ray,
    records_from_arrow,
    records_to_arrow,
)

pytestmark = pytest.mark.slow  # a local Ray cluster and two actors: about a minute


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def docs(squad_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    lines = (squad_sample_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    path = tmp_path_factory.mktemp("squad24") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return read_documents([path])


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


def _payloads(index: M3Index) -> dict[str, dict[str, Any]]:
    ids = [h.id for h in index.store._backend.scroll(None, ["doc_id"])]
    return index.store.points(ids)


def _same_vectors(a: M3Index, b: M3Index, ids: list[str]) -> None:
    ra = {
        str(p.id): p.vector for p in a.store._backend._client.retrieve("c", ids, with_vectors=True)
    }
    rb = {
        str(p.id): p.vector for p in b.store._backend._client.retrieve("c", ids, with_vectors=True)
    }
    for i in ids:
        np.testing.assert_allclose(ra[i]["dense"], rb[i]["dense"], atol=1e-5)
        np.testing.assert_allclose(ra[i]["colbert"], rb[i]["colbert"], atol=1e-5)
        assert ra[i]["sparse"].indices == rb[i]["sparse"].indices
        np.testing.assert_allclose(ra[i]["sparse"].values, rb[i]["sparse"].values, atol=1e-5)


def test_arrow_round_trip_is_exact(encoder: M3Encoder, docs: list[Any]) -> None:
    from m3kit.store.index import _Doc, build_records

    d = [_Doc(x.doc_id, x.text, dict(x.metadata), "h", {"kind": "naive"}) for x in docs[:3]]
    records, _ = build_records(encoder, encoder.available_heads, d, NaiveChunker(encoder), False)
    back = records_from_arrow(records_to_arrow(records, encoder.available_heads))
    assert len(back) == len(records) > 3
    for r, s in zip(records, back, strict=True):
        assert (r.doc_id, r.chunk_index, r.text, dict(r.metadata), r.start, r.end) == (
            s.doc_id,
            s.chunk_index,
            s.text,
            dict(s.metadata),
            s.start,
            s.end,
        )
        assert np.array_equal(r.vectors.dense, s.vectors.dense)
        assert r.vectors.sparse == s.vectors.sparse
        assert np.array_equal(r.vectors.colbert[0], s.vectors.colbert[0])


@pytest.mark.parametrize("backend", ["client", "edge"])
def test_ray_equals_single_process_and_resumes(
    local_ray: None,
    encoder: M3Encoder,
    docs: list[Any],
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [d.text for d in docs]
    metas = [dict(d.metadata) for d in docs]
    ids = [d.doc_id for d in docs]
    single = M3Index.open(encoder, tmp_path / "single", collection="c", backend=backend)
    single.add_texts(texts, metas, ids, chunker=NaiveChunker(encoder))
    # An interrupted Ray run (the writer fails after its first batch), then a re-run.
    ray_index = M3Index.open(encoder, tmp_path / "ray", collection="c", backend=backend)
    calls = {"n": 0}
    original = ray_index.write_records

    def failing(records: Any, empty: Any = ()) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("killed midway")
        original(records, empty)

    monkeypatch.setattr(ray_index, "write_records", failing)
    with pytest.raises(RuntimeError, match="killed midway"):
        index_with_ray(ray_index, docs, chunker=ChunkerSpec("naive"), docs_per_batch=4)
    partial = ray_index.count()
    assert 0 < partial < single.count()
    monkeypatch.undo()
    assert index_with_ray(ray_index, docs, docs_per_batch=4, num_actors=2) == ids
    a, b = _payloads(single), _payloads(ray_index)
    assert a == b  # same point ids and payloads (doc hashes, encoder id, chunking)
    if backend == "client":
        _same_vectors(single, ray_index, list(a))
    else:  # the embedded engine: same hits and scores for a few queries
        # Candidates cover the whole collection, so the comparison is of the stored vectors.
        # With a budget below the collection size, near-ties at the candidate cut flip: Ray
        # encodes other batches (fp32 padding noise ~1e-6) and writes points in another
        # order (Qdrant breaks RRF ties by its internal order). Measured with shuffled
        # 4-document batches: 1 of 74 queries differed at the default budget, 0 at this one.
        for index in (single, ray_index):
            index.store.query_options = QueryOptions(min_candidates=single.count())
        for q in ["Amazon rainforest", "What is the capital?", texts[3][:80]]:
            ha, hb = single.search(q, k=5), ray_index.search(q, k=5)
            assert [h.id for h in ha] == [h.id for h in hb]
            np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5)
    assert ray_index.store.collection_metadata() == single.store.collection_metadata()
    # A third run stores nothing new.
    before = ray_index.count()
    index_with_ray(ray_index, docs)
    assert ray_index.count() == before
    single.close()
    ray_index.close()
