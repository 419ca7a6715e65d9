"""Payload indexes never hide stored values from filters: values an index would hide are
refused at write or at declaration, on every engine that has indexes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from m3kit.errors import SchemaMismatchError
from m3kit.outputs import Head, M3Output
from m3kit.store import Backend, ChunkRecord, M3Store, PayloadIndexType
from m3kit.store.schema import payload_index_fields
from tests.store.payload_index_setup import ARGS, BUILT_IN
from tests.store.payload_index_setup import edge_schema as _edge_schema


def _priced(i: int, metadata: dict[str, Any]) -> ChunkRecord:
    dense = np.eye(4, dtype=np.float32)[i % 4][None, :]
    vectors = M3Output(heads=frozenset({Head.DENSE}), token_counts=(1,), _dense=dense)
    return ChunkRecord(f"d{i}", 0, f"text {i}", metadata, vectors)


def test_values_an_edge_index_would_hide_from_filters_are_refused(tmp_path: Path) -> None:
    """An ``integer`` index skips 1.5 and a ``datetime`` index skips numbers: a filter served
    by the index (``{"price": 1.5}``, ``{"when": 3}``, a range) missed such points, though
    an unindexed key or qdrant-client's local mode matched them; they are refused instead."""
    declared = {"price": "integer", "when": "datetime", "a.b": "integer"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        s.upsert([_priced(0, {"price": 1.0, "when": "2024-01-02T00:00:00Z", "a": {"b": [2]}})])
        bad = [
            (
                {"price": 1.5},
                r"document 'd1' \(chunk 0\): 'price' is 1\.5.*indexes "
                r"metadata\.price as integer.*'float'",
            ),
            ({"price": [2, 2.5]}, r"'price' is 2\.5"),
            ({"when": 3}, r"'when' is 3.*as datetime"),
            ({"a": {"b": 0.5}}, r"'a\.b' is 0\.5.*metadata\.a\.b as integer"),
        ]
        for meta, message in bad:
            with pytest.raises(ValueError, match=message):
                s.upsert([_priced(1, meta)])
        assert s.count() == 1  # nothing of a refused call written
        s.upsert([_priced(2, {"price": 2, "when": None, "a": {"b": True}, "other": 1.5})])
        assert {h.doc_id for h in s.query(dense=np.eye(4)[0], k=5, filter={"price": 1})} == {"d0"}
        assert s.count() == 2


def test_a_flat_dotted_key_is_not_checked_against_the_nested_paths_index(
    tmp_path: Path,
) -> None:
    """An index declared on ``"a.b"`` covers the nested path ``metadata.a.b``; a flat key
    ``{"a.b": 0.5}`` is stored at ``metadata."a.b"``, which no index covers, so filters find
    it. It was refused as if the nested index would hide it."""
    with M3Store.open(
        tmp_path, backend=Backend.EDGE, payload_indexes={"a.b": "integer"}, **ARGS
    ) as s:
        s.upsert([_priced(0, {"a.b": 0.5})])
        flat = models.Filter(
            must=[models.FieldCondition(key='metadata."a.b"', range=models.Range(gt=0.1))]
        )
        assert [h.doc_id for h in s.query(dense=np.eye(4)[0], k=5, filter=flat)] == ["d0"]
        with pytest.raises(ValueError, match=r"'a\.b' is 0\.5.*metadata\.a\.b as integer"):
            s.upsert([_priced(1, {"a": {"b": 0.5}})])  # the nested key is still checked
        s.upsert([_priced(2, {"a": {"b": 1}})])
        assert s.count() == 2


def test_values_an_index_on_array_access_would_hide_are_refused(tmp_path: Path) -> None:
    """An ``integer`` index on ``tags[]`` / ``items[].p`` leaves 1.5 inside those lists out of
    the filters it serves, as ``tags`` does; it was looked up at ``metadata.tags`` only, so
    such values were written (and the index declared over them) without a word. A value
    outside a list is not under the ``[]`` path at all: accepted."""
    declared = {"tags[]": "integer", "items[].p": "integer"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        for meta, message in [
            ({"tags": [2, 1.5]}, r"'tags' is 1\.5.*indexes metadata\.tags\[\] as integer"),
            ({"items": [{"p": 1.5}]}, r"'items\.p' is 1\.5.*metadata\.items\[\]\.p"),
        ]:
            with pytest.raises(ValueError, match=message):
                s.upsert([_priced(0, meta)])
        s.upsert([_priced(1, {"tags": 1.5, "items": {"p": 1.5}})])  # no list: not under []
        assert s.count() == 1
    later = tmp_path / "later"
    with M3Store.open(later, backend=Backend.EDGE, **ARGS) as s:
        s.upsert([_priced(2, {"items": [{"p": 1.5}]})])
    with pytest.raises(SchemaMismatchError, match=r"'items\.p' is 1\.5 in document 'd2'"):
        M3Store.open(later, backend=Backend.EDGE, payload_indexes={"items[].p": "integer"}, **ARGS)


def test_declaring_an_index_over_values_it_would_hide_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values written before an ``integer`` / ``datetime`` index was declared (a re-open with
    a new ``payload_indexes=``) were never checked: the index was created and filters served
    by it silently missed them. The declaration is refused now, naming the key, a value, its
    document and the type to declare, and the collection is left without the index."""
    import m3kit.store.edge_backend as edge_backend

    monkeypatch.setattr(edge_backend, "_SCROLL_PAGE", 64)  # the scan reads several pages
    points = [_priced(i, {"price": i, "when": "2024-01-02T00:00:00Z"}) for i in range(300)]
    points[257] = _priced(257, {"price": [3, 3.5], "when": "2024-01-02T00:00:00Z"})
    points[131] = _priced(131, {"price": 7, "when": 17, "a": {"b": 0.5}})
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        s.upsert(points)
    refused = [
        (
            {"price": "integer"},
            r"'price' is 3\.5 in document 'd257' \(chunk 0, point [0-9a-f-]+\)"
            r".*integer index declared on metadata\.price.*declare 'price' as 'float'",
        ),
        (
            {"lang": "keyword", "when": "datetime"},
            r"'when' is 17 in document 'd131'.*datetime index",
        ),
        ({"a.b": "integer"}, r"'a\.b' is 0\.5 in document 'd131'"),
    ]
    for declared, message in refused:
        with pytest.raises(SchemaMismatchError, match=message):
            M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS)
        assert set(_edge_schema(tmp_path)) == set(BUILT_IN)  # nothing created
    declared = {"price": "float", "when": "keyword"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        hits = s.query(dense=np.eye(4)[1], k=5, filter={"price": 3.5})
        assert [h.doc_id for h in hits] == ["d257"]
        assert s.count() == 300
    # qdrant-client's local mode has no payload indexes: the declaration does nothing there,
    # and its filters match every stored value.
    local = tmp_path / "local"
    with M3Store.open(local, backend=Backend.CLIENT, **ARGS) as s:
        s.upsert(points[255:260])
    with M3Store.open(local, backend=Backend.CLIENT, payload_indexes=refused[0][0], **ARGS) as s:
        assert [h.doc_id for h in s.query(dense=np.eye(4)[1], k=5, filter={"price": 3.5})] == [
            "d257"
        ]


@pytest.mark.parametrize("kind", ["float", "integer", "datetime", "keyword"])
def test_a_uuid_string_is_matched_on_a_key_with_any_index(tmp_path: Path, kind: str) -> None:
    """The embedded engine serves a ``MatchValue`` of a string that parses as a UUID (any of
    its spellings) from a ``float``, ``integer`` or ``datetime`` index as a UUID, which that
    index never holds: ``{"ref": "<uuid>"}``, ``EQ`` / a one-value ``IN`` and ``NE`` missed
    (or kept) the points storing that string, though an unindexed key and a two-value ``IN``
    matched them."""
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    from llamaindex_m3.filters import to_store_filter

    spellings = [
        "6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10",
        "6F0B7C1E5A435B8E9A573D1C2B7E4F10",
        "{6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10}",
        "urn:uuid:6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10",
    ]
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"ref": kind}, **ARGS) as s:
        s.upsert([_priced(i, {"ref": ref}) for i, ref in enumerate(spellings)])
        s.upsert([_priced(4, {"ref": "other"}), _priced(5, {"ref": [spellings[0], "x"]})])
        for i, ref in enumerate(spellings):
            want = {f"d{i}", "d5"} if i == 0 else {f"d{i}"}
            for flt in ({"ref": ref}, {"ref": [ref]}):
                assert {h.doc_id for h in s.get(None, filter=flt)} == want, (ref, flt)
            ne = MetadataFilters(filters=[MetadataFilter(key="ref", value=ref, operator="!=")])
            got = {h.doc_id for h in s.get(None, filter=to_store_filter(ne))}
            assert got == {f"d{j}" for j in range(6)} - want, ref


def test_an_index_another_store_adds_later_is_checked(
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store read the collection's payload indexes once (its first write) and kept them:
    an ``integer`` index another store (another process, a later ``m3kit index
    --index-field``) declared afterwards went unseen, so this store wrote ``1.5`` that the
    index hides from filters, and sent a number range to a key now indexed as datetime.
    Writes holding a number read the indexes each time; filters with a range on a metadata
    key trust the last read for ``INDEX_TYPES_TTL`` seconds; other writes and filters ask
    nothing."""
    from qdrant_client import models

    from m3kit.store import store_reads

    clock = [1000.0]
    monkeypatch.setattr(store_reads, "_now", lambda: clock[0])
    url, _, _ = qdrant_recorder
    when = models.Filter(
        must=[models.FieldCondition(key="metadata.when", range=models.Range(gt=5))]
    )
    with M3Store.open(url=url, **ARGS) as first:
        first.upsert([_priced(0, {"price": 2})])  # read: none indexed yet
        first.count(when)  # allowed: nothing indexes metadata.when yet
        declared = {"price": "integer", "when": "datetime"}
        M3Store.open(url=url, payload_indexes=declared, **ARGS).close()
        clock[0] += store_reads.INDEX_TYPES_TTL
        with pytest.raises(ValueError, match="metadata.when"):
            first.count(when)
        with pytest.raises(ValueError, match=r"'price' is 1\.5.*metadata\.price as integer"):
            first.upsert([_priced(1, {"price": 1.5})])
        reads: list[int] = []
        read = first._backend.payload_indexes
        monkeypatch.setattr(first._backend, "payload_indexes", lambda: reads.append(1) or read())
        first.upsert([_priced(2, {"lang": "en", "flag": True, "tags": ["a"]})])  # no number
        first.count({"lang": "en"})  # no range
        first.count(
            models.Filter(
                must=[models.FieldCondition(key="chunk_index", range=models.Range(gte=0))]
            )
        )
        assert reads == []
        first.upsert([_priced(3, {"price": 3})])
        first.upsert([_priced(4, {"price": 4})])
        assert reads == [1, 1]  # each write holding a number
        assert first.count() == 4  # d0, d2, d3, d4: nothing of a refused write


def test_a_uuid_index_is_refused_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded engine's ``uuid`` index serves every spelling of one UUID as the same
    value: with ``payload_indexes={"ref": "uuid"}``, ``{"ref": U}`` matched (and
    ``delete_points`` deleted) the points storing ``U.upper()``, its undashed and braced
    spellings too, where an unindexed key and qdrant-client's local mode matched ``U`` only."""
    with pytest.raises(ValueError, match="type 'uuid' is not supported.*'keyword'"):
        M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes={"ref": "uuid"}, **ARGS)
    with pytest.raises(ValueError, match="'uuid' is not supported"):
        payload_index_fields({"ref": PayloadIndexType.UUID})
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:  # made by another program
        s._backend.create_payload_index("metadata.ref", PayloadIndexType.UUID)
    with caplog.at_level(logging.WARNING, logger="m3kit.store.payload_indexes"):
        M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS).close()
    assert "uuid payload index on metadata.ref" in caplog.text
    assert "declare the key as keyword" in caplog.text
    # the way out it names: declared keyword, the uuid index is replaced (it was a clash)
    caplog.clear()
    spellings = ["6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10", "6F0B7C1E-5A43-5B8E-9A57-3D1C2B7E4F10"]
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.payload_indexes"),
        M3Store.open(
            tmp_path, backend=Backend.EDGE, payload_indexes={"ref": "keyword"}, **ARGS
        ) as s,
    ):
        assert s._backend.payload_indexes()["metadata.ref"] == "keyword"
        s.upsert([_priced(i, {"ref": ref}) for i, ref in enumerate(spellings)])
        assert [h.doc_id for h in s.get(None, filter={"ref": spellings[0]})] == ["d0"]
    assert "uuid payload index" not in caplog.text


@pytest.mark.parametrize("backend", [Backend.EDGE, Backend.CLIENT])
def test_a_phrase_is_matched_on_a_text_indexed_key(tmp_path: Path, backend: Backend) -> None:
    """A ``text`` index made without phrase matching served a ``MatchPhrase`` as matching
    nothing (the embedded engine), where the unindexed key matched the phrase."""
    from qdrant_client import models

    phrase = models.Filter(
        must=[
            models.FieldCondition(key="metadata.tx", match=models.MatchPhrase(phrase="capital of"))
        ]
    )
    texts = ["The Capital of Germany", "capitalism rocks", "GERMANY capital"]
    with M3Store.open(tmp_path, backend=backend, payload_indexes={"tx": "text"}, **ARGS) as s:
        s.upsert([_priced(i, {"tx": t}) for i, t in enumerate(texts)])
        assert [h.doc_id for h in s.get(None, filter=phrase)] == ["d0"]
