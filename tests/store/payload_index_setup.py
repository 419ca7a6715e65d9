"""What the payload-index tests share: the built-in indexes and an embedded collection's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import qdrant_edge as qe

BUILT_IN = ["doc_id", "chunk_id", "encoder_id", "sparse_cut"]
"""The indexes every collection gets, in the order they are created."""
ARGS: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": None, "sparse": False}


def edge_schema(folder: Path) -> dict[str, Any]:
    shard = qe.EdgeShard.load(str(folder / ARGS["collection"]))
    try:
        return {k: v.data_type for k, v in shard.info().payload_schema.items()}
    finally:
        shard.close()
