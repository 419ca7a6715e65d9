"""Encoding LlamaIndex nodes for the store: one encoder pass, the node's own dense vector kept.

Split from :mod:`llamaindex_m3.node_writes`; used by both write paths (``M3VectorStore.add``
and ``M3Retriever.add_nodes``).
"""

from __future__ import annotations

import numpy as np
from llama_index.core.schema import BaseNode

from llamaindex_m3.embedding_origins import check_origin
from llamaindex_m3.node_records import embed_text
from m3kit.outputs import Head, M3Output
from m3kit.store import M3Index, output_row

__all__ = ["SAME_MODEL_COSINE", "check_nodes_to_encode", "encode_nodes"]


#: A node's own ``embedding`` must be this close (cosine) to the store's dense vector of the
#: node's text: the same model in another precision or batch stays above 0.99, another model
#: of the same size falls far below.
SAME_MODEL_COSINE = 0.9


def encode_nodes(
    index: M3Index, todo: list[BaseNode], text_instruction: str | None, show: bool | None
) -> list[M3Output]:
    """One-row outputs for nodes that carry no late-chunked vectors (see the module doc).

    Every node's text is encoded once for every head the store holds; a node's own
    ``embedding`` (what the VectorStoreIndex's embed model made) is kept as its dense vector
    after checking it against the store's (:data:`SAME_MODEL_COSINE`).

    Raises:
        ValueError: An ``ImageNode`` without text; a node's ``embedding`` was made by another
            model (a ``FingerprintMismatchError`` when an ``M3Embedding`` of another encoder
            made it: :mod:`llamaindex_m3.embedding_origins`).
    """
    if not todo:
        return []
    _refuse_textless_images(todo)
    heads = index.store.heads
    texts = [embed_text(n, text_instruction) for n in todo]
    encoded = index.encoder.encode(texts, heads=sorted(heads), show_progress=show)
    out: list[M3Output] = []
    for row, node in enumerate(todo):
        part = output_row(encoded, row)
        dense = part.dense
        if node.embedding is not None:
            what = f"the embedding of node {node.node_id!r}"
            check_origin(node.embedding, index.fingerprint, what)
            dense = np.asarray([node.embedding], dtype=np.float32)
            _check_same_model(node, dense[0], part.dense[0])
        out.append(
            M3Output(
                heads=heads,
                token_counts=part.token_counts,
                _dense=dense,
                _sparse=part.sparse if Head.SPARSE in heads else None,
                _colbert=part.colbert if Head.COLBERT in heads else None,
            )
        )
    return out


def check_nodes_to_encode(
    index: M3Index, nodes: list[BaseNode], text_instruction: str | None
) -> None:
    """What :func:`encode_nodes` refuses without encoding, for every node of a write before
    its first group is encoded (a node of a later group refused after the groups before it
    were written): a textless ``ImageNode``, a text that is not UTF-8, an ``embedding`` an
    ``M3Embedding`` of another encoder made or of another size (what only the encoder's
    output tells, another model of the same size, is checked as each group is encoded).

    Raises:
        ValueError: Names the node.
        FingerprintMismatchError: An ``M3Embedding`` of another encoder made its embedding.
    """
    from m3kit.store.points import check_text

    _refuse_textless_images(nodes)
    size = index.encoder.dense_dim
    for node in nodes:
        check_text(embed_text(node, text_instruction), f"the text of node {node.node_id!r}")
        if node.embedding is not None:
            check_origin(
                node.embedding, index.fingerprint, f"the embedding of node {node.node_id!r}"
            )
            if len(node.embedding) != size:
                _check_same_model(node, np.asarray(node.embedding), np.zeros(size))


def _refuse_textless_images(nodes: list[BaseNode]) -> None:
    """Refuse an ``ImageNode`` with no text: M3 encodes text only, so its image was stored
    as a blank text's vectors, which every query matches alike.

    Raises:
        ValueError: Names the node.
    """
    from llama_index.core.schema import ImageNode

    for node in nodes:
        if isinstance(node, ImageNode) and not (node.text or "").strip():
            raise ValueError(
                f"node {node.node_id!r} is an ImageNode without text: M3 encodes text only, so "
                "its image would be stored as a blank text's vectors (matched by every query "
                "alike). Give it a caption or OCR text (ImageNode(text=...)); nothing was written"
            )


def _check_same_model(node: BaseNode, given: np.ndarray, ours: np.ndarray) -> None:
    if given.shape != ours.shape:
        raise ValueError(
            f"node {node.node_id!r} has a {given.shape[0]}-dimensional embedding, but this "
            f"store's model gives {ours.shape[0]}: it was embedded by another model. Give "
            "VectorStoreIndex the store's model (M3Embedding) as embed_model"
        )
    norm = float(np.linalg.norm(given) * np.linalg.norm(ours))
    cosine = float(given @ ours) / norm if norm > 0 else 0.0
    if cosine < SAME_MODEL_COSINE:
        raise ValueError(
            f"node {node.node_id!r} has an embedding at cosine {cosine:.3f} to this store's "
            "dense vector of the same text: it was embedded by another model (or with another "
            "text instruction), and its sparse / ColBERT vectors would come from this one. Give "
            "VectorStoreIndex the store's model (M3Embedding) as embed_model"
        )
