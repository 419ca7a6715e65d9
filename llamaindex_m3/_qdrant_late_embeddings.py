"""Late-chunked nodes a :class:`~llamaindex_m3.M3QdrantVectorStore` query returns, with their
stored dense vectors.

``QdrantVectorStore``'s queries return nodes without ``embedding`` (they ask Qdrant for no
vectors). ``VectorStoreIndex.insert_nodes`` embeds every node without one from its text, and
the embedding model sees texts only: a late-chunked node read back from a query and inserted
again (its metadata edited, say) was stored with a dense vector of its text alone while its
sparse vector (carried in its metadata) kept its document's context, silently. The nodes of a
result that carry the late-chunking marker get the dense vector the collection holds for them
(one ``retrieve`` of those points' dense vectors; other nodes are left as ``QdrantVectorStore``
returns them), as ``get_nodes`` returns every node's.
A node whose point is gone by then (deleted since the query) is returned without one, with a
warning: the query's answer stands, but inserting that node again would embed its text alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQueryResult

from llamaindex_m3.late_nodes import LATE_METADATA_KEY

__all__ = ["dense_of", "late_without_embedding"]

logger = logging.getLogger(__name__)


def late_without_embedding(result: VectorStoreQueryResult) -> dict[str, BaseNode]:
    """``{point id: node}`` of the late-chunked nodes in ``result`` without an embedding."""
    nodes = result.nodes or []
    ids = result.ids or [node.node_id for node in nodes]
    return {
        point_id: node
        for point_id, node in zip(ids, nodes, strict=True)
        if node.embedding is None and isinstance(node.metadata.get(LATE_METADATA_KEY), dict)
    }


def dense_of(points: Sequence[Any], vector_name: str, late: Mapping[str, BaseNode]) -> None:
    """Give each node of ``late`` the dense vector ``vector_name`` of its point in ``points``
    (a node whose point is missing keeps none, with a warning naming it)."""
    vectors = {}
    for point in points:
        vector = point.vector
        if isinstance(vector, dict):
            vector = vector.get(vector_name)
        if vector is not None:
            vectors[str(point.id)] = list(vector)
    for point_id, node in late.items():
        if point_id in vectors:
            node.embedding = vectors[point_id]
        else:
            logger.warning(
                "late-chunked node %s, returned by a query, has no dense vector %r in the "
                "collection any more (deleted since the query?): it is returned without its "
                "embedding, and inserting it again would embed its text alone",
                node.node_id,
                vector_name,
            )
