"""8 threads querying and adding at once give the same results as running them one by one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from m3kit.store import Fusion, Hit
from tests.store.conftest import add_corpus


def _same(got: list[Hit], want: list[Hit]) -> None:
    """Same hits in the same order; scores equal up to float summation order."""
    assert [h.id for h in got] == [h.id for h in want]
    # float32 scores: summation order changes the last bits (relative ~1e-7)
    assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-6, abs=1e-6)


def test_parallel_queries_and_adds_match_serial(
    open_index: Any, tiny_encoder: Any, corpus: list[dict[str, Any]], tmp_path: Any
) -> None:
    first, second = corpus[:20], corpus[20:]
    old = {"n": list(range(20))}  # restricts queries to the first 20 documents
    queries = [(r["text"][:150], f) for r in first[::7] for f in Fusion]

    index = open_index(tiny_encoder)
    add_corpus(index, first)
    serial = [index.search(q, k=5, fusion=f, filter=old) for q, f in queries]

    def query(i: int) -> list[Hit]:
        q, f = queries[i]
        return index.search(q, k=5, fusion=f, filter=old)

    def add(batch: list[dict[str, Any]]) -> list[str]:
        return add_corpus(index, batch)

    batches = [second[i::4] for i in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        adds = [pool.submit(add, b) for b in batches]
        optimized = pool.submit(index.store.optimize)
        searches = [pool.submit(query, i) for i in range(len(queries))]
        parallel = [f.result() for f in searches]
        added = [f.result() for f in adds]
        optimized.result()
    assert len(parallel) == len(serial)
    for got, want in zip(parallel, serial, strict=True):
        _same(got, want)
    assert added == [[r["id"] for r in b] for b in batches]
    assert index.count() == len(corpus)

    # The concurrently built index answers like one built serially.
    reference = open_index(tiny_encoder, collection="serial", location=tmp_path / "reference")
    add_corpus(reference, corpus)
    for q, f in queries[::2]:
        _same(index.search(q, k=8, fusion=f), reference.search(q, k=8, fusion=f))


def test_a_search_during_a_replace_sees_the_document_and_after_it_the_new_version(
    open_index: Any, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What M3Index documents: a shorter new version's chunks are written over the old ones'
    places, then the old tail is deleted. A search between the two (forced here) finds the
    document, new chunks and the old tail; once ``add_texts`` returns, only the new version."""
    from m3kit.chunking import NaiveChunker

    sentence = "Oxygen is a gas that iron needs to rust in air. "
    old, new = sentence * 12, "Iron rusts in wet air. " * 3
    index = open_index(tiny_encoder)
    chunker = NaiveChunker(tiny_encoder, chunk_size=12)
    index.add_texts([old], doc_ids=["x"], chunker=chunker)
    old_count = index.search("oxygen iron", k=100)[0].chunk_count
    reached, go = threading.Event(), threading.Event()
    backend = index.store._backend
    delete = backend.delete

    def paused_delete(selector: Any) -> None:
        reached.set()
        assert go.wait(30)
        delete(selector)

    monkeypatch.setattr(backend, "delete", paused_delete)
    with ThreadPoolExecutor(max_workers=1) as pool:
        write = pool.submit(index.add_texts, [new], doc_ids=["x"], chunker=chunker)
        assert reached.wait(30)
        during = index.search("oxygen iron", k=100)
        go.set()
        write.result()
    after = index.search("oxygen iron", k=100)
    new_count = after[0].chunk_count
    assert old_count is not None and new_count is not None and new_count < old_count
    assert sorted(h.chunk_index for h in after) == list(range(new_count))
    assert all(h.text in new for h in after)
    # during the replace: every place, the new version's first, the old tail after them
    assert sorted(h.chunk_index for h in during) == list(range(old_count))
    assert {h.chunk_count for h in during if h.chunk_index < new_count} == {new_count}
    assert {h.chunk_count for h in during if h.chunk_index >= new_count} == {old_count}


@pytest.mark.parametrize("between", ["rounds", "heads"])
def test_an_m3_search_never_pairs_one_versions_score_with_anothers_text(
    open_index: Any, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch, between: str
) -> None:
    """``fusion="m3"`` found candidates, scored them, then fetched their text and metadata by
    id without the filter: a document replaced in between came back as its new version
    (here one the filter excludes) under the old version's score. A write forced between the
    candidate and scoring round trips ("rounds"), or between two heads' searches ("heads"),
    now leaves that document out of the search rather than mixing versions."""
    index = open_index(tiny_encoder)
    index.add_texts(
        ["apple orchard harvest apples", "unrelated filler text about cars"],
        metadatas=[{"tenant": "A"}, {"tenant": "A"}],
        doc_ids=["x", "y"],
    )
    backend = index.store._backend
    query_batch = backend.query_batch
    calls: list[int] = []

    def replace_x() -> None:
        # another thread's write, done while the search waits (as a concurrent writer's)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(
                index.add_texts,
                ["zebra savanna stripes secret of B"],
                metadatas=[{"tenant": "B"}],
                doc_ids=["x"],
            ).result()

    def racing(stages: Any, *, with_payload: bool) -> Any:
        calls.append(len(stages))
        if len(calls) != 2:  # the candidates' round trip, and the writer's own searches
            return query_batch(stages, with_payload=with_payload)
        if between == "rounds":
            replace_x()
            return query_batch(stages, with_payload=with_payload)
        first = query_batch(stages[:1], with_payload=with_payload)  # the dense head's search
        replace_x()
        return first + query_batch(stages[1:], with_payload=with_payload)

    monkeypatch.setattr(backend, "query_batch", racing)
    hits = index.search("apple orchard harvest apples", k=2, fusion="m3", filter={"tenant": "A"})
    monkeypatch.undo()
    assert [(h.doc_id, h.metadata) for h in hits] == [("y", {"tenant": "A"})]
    fresh = index.search("zebra savanna stripes", k=2, fusion="m3")
    assert {h.doc_id: h.text for h in fresh}["x"] == "zebra savanna stripes secret of B"
