"""Qdrant cluster settings for a new collection, and how big a collection grows.

:class:`ClusterSettings` is what a Qdrant server or cluster is told when m3kit creates the
collection (shards, replication, write consistency, on-disk storage, dense quantisation) and
how m3kit writes to it (points per request, requests in flight). The embedded engine and
qdrant-client's local mode have none of these: giving them there is an error.

:func:`estimate_collection_size` computes, from a :class:`~m3kit.store.schema.CollectionSchema`,
the bytes a collection takes per stored chunk and what quantisation saves.

>>> from m3kit.store.schema import CollectionSchema
>>> size = estimate_collection_size(
...     CollectionSchema(dense_dim=1024, colbert_dim=1024, sparse=True), 1_000_000
... )
>>> round(size.dense_bytes / 1e9, 2), round(size.colbert_bytes / 1e9, 1)
(4.1, 524.3)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from m3kit.errors import SchemaMismatchError
from m3kit.store.connection import settings_from_dict
from m3kit.store.schema import CollectionSchema

__all__ = ["ClusterSettings", "CollectionSize", "Quantization", "estimate_collection_size"]


class Quantization(str, enum.Enum):
    """A quantised copy of the dense vectors, kept in RAM for search (originals rescore).

    ``SCALAR``: int8 per dimension (4x smaller than float32). ``BINARY``: one bit per
    dimension (32x smaller; suits large dims such as BGE-M3's 1024).
    """

    NONE = "none"
    SCALAR = "scalar"
    BINARY = "binary"


def _count(value: object) -> bool:
    """Whether ``value`` is an int >= 1 (a bool is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class ClusterSettings:
    """Collection settings for a Qdrant server or cluster, and how m3kit writes to it.

    The creation settings apply only when m3kit creates the collection; opening an existing
    one with settings that differ from what the server reports raises
    :class:`~m3kit.errors.SchemaMismatchError` (``None`` leaves a setting unchecked).

    Attributes:
        shard_number: Shards of the collection (Qdrant: at least one per node, so points
            spread over every node; several per node lets a cluster grow later).
        replication_factor: Copies of each shard (2+: a node can fail without data loss).
        write_consistency_factor: Replicas that must acknowledge a write.
        on_disk_vectors: Keep the dense and ColBERT vectors on disk (memory-mapped)
            instead of in RAM; with ``quantization`` the quantised copy stays in RAM.
        on_disk_payload: Keep payloads on disk (Qdrant's default: true).
        quantization: Quantised dense copy for search (:class:`Quantization`).
        write_batch_size: Points per upsert request (fewer when that many would pass
            Qdrant's default request limit of 32 MiB, as 256-token ColBERT chunks do).
        write_parallelism: Upsert requests in flight at once (threads).
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk_vectors: bool = False
    on_disk_payload: bool | None = None
    quantization: Quantization = Quantization.NONE
    write_batch_size: int = 256
    write_parallelism: int = 4

    def __post_init__(self) -> None:
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and not _count(value):
                raise ValueError(f"ClusterSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("write_batch_size", "write_parallelism"):
            value = getattr(self, name)
            if not _count(value):
                raise ValueError(f"ClusterSettings.{name} must be an integer >= 1, got {value!r}")
        # a string such as "false" is truthy: on_disk_vectors="false" put the vectors on disk
        if not isinstance(self.on_disk_vectors, bool):
            raise ValueError(
                f"ClusterSettings.on_disk_vectors must be a bool, got {self.on_disk_vectors!r}"
            )
        if self.on_disk_payload is not None and not isinstance(self.on_disk_payload, bool):
            raise ValueError(
                "ClusterSettings.on_disk_payload must be a bool or None, got "
                f"{self.on_disk_payload!r}"
            )
        if (
            self.replication_factor is not None
            and self.write_consistency_factor is not None
            and self.write_consistency_factor > self.replication_factor
        ):
            raise ValueError(
                f"write_consistency_factor {self.write_consistency_factor} exceeds "
                f"replication_factor {self.replication_factor}: no write could succeed"
            )
        object.__setattr__(self, "quantization", Quantization(self.quantization))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterSettings:
        """The settings of a dict of them (as the LlamaIndex store's ``to_dict`` saves them).

        Raises:
            ValueError: A key that is no setting (a misspelt one would be dropped silently),
                or a bad value; the message names it.
        """
        return settings_from_dict(cls, data, "cluster")

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``QdrantClient.create_collection`` (collection level)."""

        out: dict[str, Any] = {}
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.on_disk_payload is not None:
            out["on_disk_payload"] = self.on_disk_payload
        return out

    def dense_quantization(self) -> Any:
        """The dense vector's own ``quantization_config`` (``None``: not asked for).

        On the dense vector, not the collection: Qdrant gives every named vector without a
        setting of its own the collection's, so a collection-wide one also kept an int8 copy
        of every ColBERT vector in RAM (about 262 GB for a million 256-token chunks at 1024
        dimensions, against the 2.8 GB the sizing gives).
        """
        from qdrant_client import models

        if self.quantization is Quantization.SCALAR:
            return models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
        if self.quantization is Quantization.BINARY:
            return models.BinaryQuantization(
                binary=models.BinaryQuantizationConfig(always_ram=True)
            )
        return None

    def check_existing(self, found: Mapping[str, Any], *, collection: str, where: str) -> None:
        """Compare with an existing collection's parameters (``None``: not reported).

        ``quantization`` and ``on_disk_vectors`` are compared only when asked for (their
        defaults mean "not asked", not "none"): a collection created without them does not
        gain them on open, so asking for them there is an error, not a silent no-op.

        Raises:
            SchemaMismatchError: A setting given here differs from the collection's.
        """
        wanted = {
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
            "on_disk_payload": self.on_disk_payload,
            "quantization": (
                None if self.quantization is Quantization.NONE else self.quantization.value
            ),
            "on_disk_vectors": True if self.on_disk_vectors else None,
        }
        diffs = [
            f"{k}: collection has {found[k]}, asked {v}"
            for k, v in wanted.items()
            if v is not None and found.get(k) is not None and found[k] != v
        ]
        if diffs:
            raise SchemaMismatchError(
                f"collection {collection!r} at {where} exists with other cluster settings "
                f"({'; '.join(diffs)}); they are fixed at creation: use another collection "
                "name, or change them with Qdrant's own API"
            )


@dataclass(frozen=True)
class CollectionSize:
    """Estimated bytes of a collection (see :func:`estimate_collection_size`).

    Attributes:
        chunks: Number of stored chunks (points).
        dense_bytes: float32 dense vectors.
        hnsw_bytes: The dense HNSW graph (links of layer 0).
        sparse_bytes: Sparse vectors and their inverted index.
        colbert_bytes: ColBERT multivectors (float16, no graph: rerank only).
        payload_bytes: Texts and metadata.
        quantized_bytes: The quantised dense copy (0 without quantisation).
        ram_bytes: What sits in RAM: the HNSW graph, the sparse vectors, and the dense and
            ColBERT vectors, or only the quantised dense copy when the vectors are on disk.
    """

    chunks: int
    dense_bytes: int
    hnsw_bytes: int
    sparse_bytes: int
    colbert_bytes: int
    payload_bytes: int
    quantized_bytes: int
    ram_bytes: int

    @property
    def total_bytes(self) -> int:
        """Everything stored (disk and RAM together)."""
        return (
            self.dense_bytes
            + self.hnsw_bytes
            + self.sparse_bytes
            + self.colbert_bytes
            + self.payload_bytes
            + self.quantized_bytes
        )


def estimate_collection_size(
    schema: CollectionSchema,
    chunks: int,
    *,
    colbert_tokens: int = 256,
    sparse_terms: int = 100,
    payload_bytes: int = 1500,
    quantization: Quantization | str = Quantization.NONE,
    on_disk_vectors: bool = False,
    hnsw_m: int = 16,
) -> CollectionSize:
    """Bytes a collection of ``chunks`` points takes, computed from its schema.

    Per chunk: dense ``4 * dense_dim`` (float32); HNSW layer-0 links ``2 * m * 4``; sparse
    ``16`` bytes per term (u32 id + f32 weight, stored and again in the inverted index);
    ColBERT ``2 * colbert_dim`` per token (float16, as m3kit stores it); quantised dense
    ``dense_dim`` (int8) or ``dense_dim / 8`` (binary). Qdrant's own overheads (WAL,
    id maps, segment slack) come on top: plan about 1.5x for the disk.

    Args:
        schema: The collection's vectors.
        chunks: Number of chunks.
        colbert_tokens: Average tokens per chunk (ColBERT vectors per point; 256 for
            m3kit index's default ``--chunk-size``).
        sparse_terms: Average non-zero sparse weights per chunk.
        payload_bytes: Average text + metadata bytes per chunk.
        quantization: Quantised dense copy (:class:`Quantization`).
        on_disk_vectors: Originals on disk (memory-mapped): not counted in ``ram_bytes``.
        hnsw_m: HNSW ``m`` of the dense index (Qdrant's default 16).

    Raises:
        ValueError: A negative count.
    """
    for name, value in (
        ("chunks", chunks),
        ("colbert_tokens", colbert_tokens),
        ("sparse_terms", sparse_terms),
        ("payload_bytes", payload_bytes),
        ("hnsw_m", hnsw_m),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    quant = Quantization(quantization)
    dense = chunks * schema.dense_dim * 4
    hnsw = chunks * 2 * hnsw_m * 4
    sparse = chunks * sparse_terms * 16 if schema.sparse else 0
    colbert = chunks * colbert_tokens * schema.colbert_dim * 2 if schema.colbert_dim else 0
    payload = chunks * payload_bytes
    per_dim = {Quantization.NONE: 0.0, Quantization.SCALAR: 1.0, Quantization.BINARY: 1 / 8}
    quantized = int(chunks * schema.dense_dim * per_dim[quant])
    # vectors on disk are read through the page cache; only the quantised copy stays in RAM
    in_ram = quantized if on_disk_vectors else dense + quantized + colbert
    return CollectionSize(
        chunks=chunks,
        dense_bytes=dense,
        hnsw_bytes=hnsw,
        sparse_bytes=sparse,
        colbert_bytes=colbert,
        payload_bytes=payload,
        quantized_bytes=quantized,
        ram_bytes=in_ram + hnsw + sparse,
    )
