"""M3Store.points / get / delete_points / clear: chunks by point id and filter, on every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from m3kit.store import M3Index, point_id

TEXTS = ["Berlin is in Germany.", "Oxygen is element 8.", "The Amazon is a river."]
IDS = ["berlin", "oxygen", "amazon"]
META = [{"topic": "geo"}, {"topic": "chem"}, {"topic": "geo"}]


def _filled(open_index: Callable[..., M3Index], encoder: Any) -> M3Index:
    index = open_index(encoder)
    index.add_texts(TEXTS, META, IDS)
    return index


def test_points_by_id_and_filter(open_index: Callable[..., M3Index], tiny_encoder: Any) -> None:
    store = _filled(open_index, tiny_encoder).store
    ids = [point_id("amazon", 0), point_id("berlin", 0), point_id("nowhere", 0)]
    got = store.points(ids)
    assert list(got) == ids[:2]  # order given, unknown id left out
    assert got[ids[0]]["page_content"] == TEXTS[2] and got[ids[0]]["doc_id"] == "amazon"
    assert {"doc_hash", "chunk_count", "start", "end", "metadata"} <= set(got[ids[0]])
    geo = store.get(filter={"topic": "geo"})
    assert sorted(h.doc_id for h in geo) == ["amazon", "berlin"]
    assert all(h.score == 0.0 and h.metadata["topic"] == "geo" for h in geo)
    both = store.get([point_id("oxygen", 0), point_id("berlin", 0)], filter={"topic": "geo"})
    assert [h.doc_id for h in both] == ["berlin"]
    assert store.points([]) == {}


def test_delete_points_and_clear(open_index: Callable[..., M3Index], tiny_encoder: Any) -> None:
    index = _filled(open_index, tiny_encoder)
    store = index.store
    store.delete_points([point_id("oxygen", 0)])
    assert index.count() == 2
    store.delete_points([point_id("berlin", 0), point_id("amazon", 0)], filter={"topic": "chem"})
    assert index.count() == 2  # AND: no point is both
    store.delete_points(filter={"topic": "geo"})
    assert index.count() == 0
    index.add_texts(TEXTS, META, IDS)
    store.clear()
    assert index.count() == 0
    index.add_texts(TEXTS[:1], META[:1], IDS[:1])  # the collection is still usable
    assert index.count() == 1


def test_bad_selectors_are_errors(open_index: Callable[..., M3Index], tiny_encoder: Any) -> None:
    store = _filled(open_index, tiny_encoder).store
    with pytest.raises(ValueError, match="point ids, a filter or both"):
        store.delete_points()
    with pytest.raises(ValueError, match="'node-1' is not a point id"):
        store.points(["node-1"])
    with pytest.raises(TypeError, match="not a single string"):
        store.get(point_id("berlin", 0))  # type: ignore[arg-type]
    assert store.count() == 3


def test_a_filter_without_a_condition_deletes_nothing(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    # delete_points() and filter={} are refused (they would match every chunk); a Filter with
    # no condition, as code that builds its conditions can end up passing, emptied the
    # collection on every backend
    from qdrant_client import models

    store = _filled(open_index, tiny_encoder).store
    for empty in (
        models.Filter(),
        models.Filter(must=[], should=[], must_not=[]),
        models.Filter(must=[models.Filter()]),
        models.Filter(should=[models.Filter(), models.Filter(must=[])]),
    ):
        with pytest.raises(ValueError, match=r"no condition.*every chunk.*clear\(\)"):
            store.delete_points(filter=empty)
    assert store.count() == 3
    # a condition, however it is nested, still deletes what it matches
    geo = models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="geo"))
    store.delete_points(filter=models.Filter(must=[models.Filter(should=[geo])]))
    assert sorted(h.doc_id for h in store.get(filter={"topic": "chem"})) == ["oxygen"]
    assert store.count() == 1


def test_set_chunk_count_sets_one_version_of_one_document(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    """The chunks of ``d`` at ``v1`` below the count get it; another version's chunk, one at
    the count or beyond, and another document's chunks keep theirs."""
    from m3kit.store import ChunkRecord, output_row

    index = open_index(tiny_encoder)
    places = [("d", 0, "v1", 2), ("d", 1, "v1", 2), ("d", 2, "v1", 4), ("d", 3, "v1", 4)]
    places += [("d", 4, "v1", 5), ("d", 5, "v0", 6), ("e", 0, "v1", 2), ("e", 1, "v1", 2)]
    out = tiny_encoder.encode([f"chunk {i}" for i in range(len(places))])
    for i, (doc, at, v, n) in enumerate(places):  # one write each: they disagree on purpose
        record = ChunkRecord(doc, at, f"chunk {i}", {}, output_row(out, i), doc_hash=v)
        index.store.upsert([dataclasses.replace(record, chunk_count=n)])
    index.store.set_chunk_count("d", "v1", 4)
    got = index.store.points([point_id(doc, at) for doc, at, _, _ in places])
    counts = [got[point_id(doc, at)]["chunk_count"] for doc, at, _, _ in places]
    assert counts == [4, 4, 4, 4, 5, 6, 2, 2]
    assert [got[point_id(doc, at)]["page_content"] for doc, at, _, _ in places] == [
        f"chunk {i}" for i in range(len(places))
    ]
    for bad in (("", "v1", 4), ("d", "", 4), ("d", "v1", 0), ("d", "v1", True)):
        with pytest.raises(ValueError, match="must be a"):
            index.store.set_chunk_count(*bad)  # type: ignore[arg-type]


def test_a_point_id_in_another_spelling_is_found(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    # a UUID in upper case or without hyphens was accepted as a point id, and the engine
    # matched it (count / delete did), but points / get / find returned nothing for it
    store = _filled(open_index, tiny_encoder).store
    pid = point_id("amazon", 0)
    for spelling in (pid.upper(), pid.replace("-", "")):
        assert list(store.points([spelling])) == [pid]
        assert [h.doc_id for h in store.get([spelling])] == ["amazon"]
        assert [h.doc_id for h in store.find([spelling])] == ["amazon"]
