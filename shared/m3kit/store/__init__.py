"""Qdrant storage of M3 chunks: one schema, two engines, hybrid query with exact fusion.

``M3Store`` is the vector layer (records in, hits out); ``M3Index`` adds the encoder
(texts in, hits out) with deterministic ids and incremental updates.
"""

from m3kit.store.cluster import (
    ClusterSettings,
    CollectionSize,
    Quantization,
    estimate_collection_size,
)
from m3kit.store.connection import ConnectionSettings
from m3kit.store.dropping import drop_collection
from m3kit.store.filters import metadata_filter
from m3kit.store.fusion_calibration import FusionCalibration
from m3kit.store.index import M3Index
from m3kit.store.query import QueryOptions
from m3kit.store.records import Backend, ChunkRecord, Fusion, Hit, output_row
from m3kit.store.schema import CollectionSchema, PayloadIndexType, point_id
from m3kit.store.search_overrides import SearchOverrides
from m3kit.store.search_settings import SearchSettings
from m3kit.store.store import DEFAULT_BACKEND, M3Store

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "ChunkRecord",
    "ClusterSettings",
    "CollectionSchema",
    "CollectionSize",
    "ConnectionSettings",
    "Fusion",
    "FusionCalibration",
    "Hit",
    "M3Index",
    "M3Store",
    "PayloadIndexType",
    "Quantization",
    "QueryOptions",
    "SearchOverrides",
    "SearchSettings",
    "drop_collection",
    "estimate_collection_size",
    "metadata_filter",
    "output_row",
    "point_id",
]
