"""Chunk records as Arrow tables: what the Ray pipeline's actors hand back to the driver.

Ragged vectors are list columns (sparse ids and weights, each chunk's ColBERT matrix
flattened with its token count), float32, exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from m3kit.outputs import Head, M3Output, SparseVector
from m3kit.store.records import ChunkRecord

__all__ = ["records_from_arrow", "records_to_arrow"]


def records_to_arrow(records: Sequence[ChunkRecord], heads: frozenset[Head]) -> Any:
    """Chunk records as a ``pyarrow.Table`` (ragged vectors as list columns, exact float32)."""
    import pyarrow as pa

    f32, i64 = pa.list_(pa.float32()), pa.list_(pa.int64())
    cols: dict[str, Any] = {
        "doc_id": pa.array([r.doc_id for r in records], pa.string()),
        "chunk_index": pa.array([r.chunk_index for r in records], pa.int64()),
        "text": pa.array([r.text for r in records], pa.string()),
        "metadata": pa.array([json.dumps(dict(r.metadata)) for r in records], pa.string()),
        "start": pa.array([r.start for r in records], pa.int64()),
        "end": pa.array([r.end for r in records], pa.int64()),
        "doc_hash": pa.array([r.doc_hash for r in records], pa.string()),
        "chunk_count": pa.array([r.chunk_count for r in records], pa.int64()),
        "chunking": pa.array(
            [None if r.chunking is None else json.dumps(dict(r.chunking)) for r in records],
            pa.string(),
        ),
        "extra": pa.array(
            [None if r.extra is None else json.dumps(dict(r.extra)) for r in records],
            pa.string(),
        ),
        "token_count": pa.array([r.vectors.token_counts[0] for r in records], pa.int64()),
        "dense": pa.array([r.vectors.dense[0] for r in records], f32),
    }
    if Head.SPARSE in heads:
        cols["sparse_ids"] = pa.array([r.vectors.sparse[0].indices for r in records], i64)
        cols["sparse_weights"] = pa.array([r.vectors.sparse[0].values for r in records], f32)
    if Head.COLBERT in heads:
        cols["colbert"] = pa.array([r.vectors.colbert[0].reshape(-1) for r in records], f32)
        cols["colbert_tokens"] = pa.array(
            [r.vectors.colbert[0].shape[0] for r in records], pa.int64()
        )
    return pa.table(cols)


def records_from_arrow(table: Any) -> list[ChunkRecord]:
    """The records of :func:`records_to_arrow`, exactly.

    Vector columns are read as numpy views of the table's buffers (``to_pylist`` made a
    Python float of every value: about 10x the batch's memory on the driver, and as long as
    the write itself for BGE-M3-sized chunks); scalar and text columns as Python values.
    """
    vector_columns = {"dense", "sparse_ids", "sparse_weights", "colbert"}
    cols = {
        name: table.column(name).to_pylist()
        for name in table.column_names
        if name not in vector_columns
    }
    dense = _ragged(table, "dense", np.float32)
    heads = {Head.DENSE}
    if "sparse_ids" in table.column_names:
        heads.add(Head.SPARSE)
        sparse_ids = _ragged(table, "sparse_ids", np.int64)
        sparse_weights = _ragged(table, "sparse_weights", np.float32)
    if "colbert" in table.column_names:
        heads.add(Head.COLBERT)
        colbert_rows = _ragged(table, "colbert", np.float32)
    out = []
    for i in range(table.num_rows):
        colbert = None
        if Head.COLBERT in heads:
            colbert = (colbert_rows[i].reshape(int(cols["colbert_tokens"][i]), -1),)
        sparse = None
        if Head.SPARSE in heads:
            sparse = (SparseVector(sparse_ids[i], sparse_weights[i]),)
        vectors = M3Output(
            heads=frozenset(heads),
            token_counts=(int(cols["token_count"][i]),),
            _dense=dense[i][None, :],
            _sparse=sparse,
            _colbert=colbert,
        )
        chunking, extra = cols["chunking"][i], cols["extra"][i]
        out.append(
            ChunkRecord(
                doc_id=cols["doc_id"][i],
                chunk_index=int(cols["chunk_index"][i]),
                text=cols["text"][i],
                metadata=json.loads(cols["metadata"][i]),
                vectors=vectors,
                start=cols["start"][i],
                end=cols["end"][i],
                doc_hash=cols["doc_hash"][i],
                chunk_count=cols["chunk_count"][i],
                chunking=None if chunking is None else json.loads(chunking),
                extra=None if extra is None else json.loads(extra),
            )
        )
    return out


def _ragged(table: Any, name: str, dtype: type[np.generic]) -> list[np.ndarray]:
    """Each row of list column ``name`` as a numpy array (views of one buffer, no copy when
    the column is one chunk of ``dtype`` already)."""
    column = table.column(name).combine_chunks()
    # ``values`` ignores a slice's offset and ``offsets`` index into it, so the two agree
    values = np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=dtype)
    offsets = column.offsets.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(column))]
