"""The sparse vector a late-chunked LlamaIndex node carries into
:class:`~llamaindex_m3.M3QdrantVectorStore` (split from :mod:`llamaindex_m3.qdrant_store`)."""

from __future__ import annotations

from llama_index.core.schema import BaseNode

from llamaindex_m3.embeddings import QdrantSparseFn
from llamaindex_m3.late_nodes import (
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    M3TextNode,
    node_vectors,
)
from llamaindex_m3.node_records import check_late_encoder
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Head, SparseVector

__all__ = ["carried_sparse"]


def carried_sparse(node: BaseNode, doc_fn: QdrantSparseFn) -> SparseVector | None:
    """The late-chunked sparse vector a node carries, or ``None`` for any other node.

    A node from :class:`~llamaindex_m3.M3LateChunkingNodeParser` (in memory, or rebuilt from
    JSON: ``metadata["m3_sparse"]``) carries one when its encoder has the sparse head; one made
    in this process is that node whatever its metadata became (a transform that dropped its
    ``m3_late_chunk`` marker), so its text is still checked, as ``M3VectorStore`` does. It is
    cut as ``doc_fn`` cuts the vectors it computes (:meth:`QdrantSparseFn.prune`: its
    ``sparse_top_k`` / ``sparse_min_weight``), so late chunks are as sparse as other nodes.

    Args:
        node: The node.
        doc_fn: The store's document function (its encoder must have made the node).

    Raises:
        ValueError: The node was late-chunked by another model than ``doc_fn``'s, or
            ``doc_fn`` prefixes documents (``text_instruction``: the node has none), or carries
            no sparse vector (its chunker's encoder was dense-only), so it cannot go into an M3
            hybrid store as it is; or its text was changed after parsing
            (:class:`~llamaindex_m3.node_parser.EditedNodeError`).
    """
    live = isinstance(node, M3TextNode) and node._m3_chunk is not None
    if not live and not isinstance(node.metadata.get(LATE_METADATA_KEY), dict):
        return None
    check_late_encoder(
        node,
        encoder_fingerprint(doc_fn.encoder),
        holder="store",
        text_instruction=doc_fn.text_instruction,
    )
    vectors = node_vectors(node)
    if Head.SPARSE not in vectors.heads:
        raise ValueError(
            f"node {node.node_id} is late-chunked without a sparse vector (no "
            f"{SPARSE_METADATA_KEY!r}; its encoder is dense-only), so an M3 hybrid store cannot "
            "take it without re-encoding it out of its document's context; parse it with an "
            "M3 checkpoint that has the sparse head"
        )
    return doc_fn.prune(vectors.sparse[0])
