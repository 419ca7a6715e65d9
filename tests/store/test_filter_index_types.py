"""A range filter of the other kind than a key's payload index (a number range on a
``datetime`` index, a datetime range on a ``float`` / ``integer`` one) is refused by name.

Measured on the embedded engine: a ``datetime`` index served ``Range(gt=5)`` as dates after
1970-01-01T00:00:05 (a datetime string matched), and a ``float`` / ``integer`` index served a
``DatetimeRange`` from its numbers (a datetime string stored there missed), while the same
filter on an unindexed key, or in qdrant-client's local mode, matched otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from m3kit.outputs import Head, M3Output
from m3kit.store import Backend, ChunkRecord, M3Store

ARGS: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": None, "sparse": False}
DATE = "2024-01-02T00:00:00Z"


def _record(i: int, metadata: dict[str, Any]) -> ChunkRecord:
    dense = np.eye(4, dtype=np.float32)[i % 4][None, :]
    vectors = M3Output(heads=frozenset({Head.DENSE}), token_counts=(1,), _dense=dense)
    return ChunkRecord(f"d{i}", 0, f"text {i}", metadata, vectors)


def _where(key: str, rng: models.Range | models.DatetimeRange) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key=f"metadata.{key}", range=rng)])


def test_a_range_of_the_other_kind_than_the_index_is_refused(tmp_path: Path) -> None:
    declared = {"when": "datetime", "price": "float", "n": "integer"}
    with M3Store.open(tmp_path, backend=Backend.EDGE, payload_indexes=declared, **ARGS) as s:
        s.upsert([_record(0, {"when": DATE, "price": DATE, "n": 3, "other": DATE})])
        refused = [
            (_where("when", models.Range(gt=5)), r"'metadata\.when'.*number range.*datetime"),
            ({"when": 0}, r"'metadata\.when'.*number range.*indexes it as datetime"),
            (
                models.Filter(
                    should=[models.Filter(must_not=[_where("when", models.Range(lt=0))])]
                ),
                r"'metadata\.when'",
            ),
            (
                _where("price", models.DatetimeRange(gt="2000-01-01T00:00:00Z")),
                r"'metadata\.price'.*datetime range.*indexes it as float",
            ),
            (_where("n", models.DatetimeRange(lt=DATE)), r"'metadata\.n'.*as integer"),
        ]
        for flt, message in refused:
            with pytest.raises(ValueError, match=message):
                s.count(flt)
            with pytest.raises(ValueError, match=message):
                s.query(dense=np.eye(4)[0], k=3, filter=flt)
            with pytest.raises(ValueError, match=message):
                s.get(None, filter=flt)
            with pytest.raises(ValueError, match=message):
                s.delete_points(filter=flt)
        assert s.count() == 1  # nothing deleted
        # LlamaIndex's GT on such a key is the same number range
        from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

        from llamaindex_m3.filters import to_store_filter

        gt = MetadataFilters(filters=[MetadataFilter(key="when", value=5, operator=">")])
        with pytest.raises(ValueError, match=r"'metadata\.when'.*indexes it as datetime"):
            s.get(None, filter=to_store_filter(gt))
        # The kind each index serves, and any range on an unindexed key, are searched.
        assert s.count(_where("when", models.DatetimeRange(gt="2000-01-01T00:00:00Z"))) == 1
        assert s.count(_where("n", models.Range(gte=3))) == 1
        assert s.count({"n": 3}) == 1
        assert s.count(_where("other", models.Range(gt=5))) == 0
        assert s.count(_where("other", models.DatetimeRange(lt="2100-01-01T00:00:00Z"))) == 1


def test_client_local_mode_has_no_index_to_refuse_for(tmp_path: Path) -> None:
    with M3Store.open(
        tmp_path, backend=Backend.CLIENT, payload_indexes={"when": "datetime"}, **ARGS
    ) as s:
        s.upsert([_record(0, {"when": DATE})])
        assert s.count(_where("when", models.Range(gt=5))) == 0


def test_a_server_refuses_it_before_any_request(
    qdrant_recorder: tuple[str, list[tuple[str, str, Any]], dict[str, Any]],
) -> None:
    url, requests, _ = qdrant_recorder
    with M3Store.open(url=url, payload_indexes={"when": "datetime"}, **ARGS) as s:
        sent = len(requests)
        with pytest.raises(ValueError, match=r"'metadata\.when'.*indexes it as datetime"):
            s.count(_where("when", models.Range(gte=1)))
        with pytest.raises(ValueError, match=r"'metadata\.when'"):
            s.count({"when": 1})
        # one read of the indexes (filters trust it for INDEX_TYPES_TTL seconds), and a
        # refused filter sends nothing more: no count request
        assert [r[1] for r in requests[sent:]] == ["/collections/c"]
