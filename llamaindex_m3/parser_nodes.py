"""The nodes :class:`~llamaindex_m3.M3LateChunkingNodeParser` makes from late chunks.

:func:`late_chunk_node` turns one :class:`~m3kit.outputs.Chunk` and the ``TextNode``
LlamaIndex built for its text into an :class:`~llamaindex_m3.late_nodes.M3TextNode`: the
late-chunked dense vector as ``embedding``, the chunk's provenance under
:data:`~llamaindex_m3.late_nodes.LATE_METADATA_KEY`, its sparse vector under
:data:`~llamaindex_m3.late_nodes.SPARSE_METADATA_KEY` (both kept from embedding and prompts)
and the chunk itself (ColBERT included) in memory. See :mod:`llamaindex_m3.node_parser`.
"""

from __future__ import annotations

from llama_index.core.schema import TextNode

from llamaindex_m3.embedding_origins import remember_late
from llamaindex_m3.late_nodes import (
    _INTERNAL_KEYS,
    ENCODER_SETTINGS,
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    M3TextNode,
    _text_key,
)
from m3kit.fingerprint import encoder_fingerprint
from m3kit.late_chunking import LateChunker
from m3kit.outputs import Chunk, Head

__all__ = ["late_chunk_node"]


def late_chunk_node(
    base: TextNode, chunk: Chunk, chunker: LateChunker, source: str, count: int
) -> M3TextNode:
    """``base`` (the node LlamaIndex built for ``chunk``'s text) as an ``M3TextNode``.

    ``source`` is a hash of the document's text, ``count`` its number of chunks.
    """
    data = base.model_dump(exclude={"embedding", "start_char_idx", "end_char_idx"})
    data["relationships"] = base.relationships
    node = M3TextNode(
        **data,
        embedding=chunk.dense.tolist(),
        start_char_idx=chunk.start,
        end_char_idx=chunk.end,
    )
    remember_late(node.embedding)  # not taken for a text-alone one (embedding_origins)
    fingerprint = encoder_fingerprint(chunker.encoder)
    node.metadata[LATE_METADATA_KEY] = {
        "chunker": chunker.signature,
        # which model made the vectors: a store of another model refuses the node
        "encoder": fingerprint.identity,
        # its settings in that identity, named when a store refuses the node
        "encoder_settings": {k: getattr(fingerprint, k) for k in ENCODER_SETTINGS},
        "index": chunk.index,
        "count": count,  # chunks of the document: a store deletes its chunks beyond them
        "source": source,  # hash of the document's text: the version a store keeps
        "token_start": chunk.token_start,
        "token_end": chunk.token_end,
        "text": _text_key(chunk.text),  # a node edited since is refused (node_vectors)
        "cut_from": base.ref_doc_id,  # the document or node parsed (see chunk_records)
    }
    node._m3_record = dict(node.metadata[LATE_METADATA_KEY])  # kept if metadata is replaced
    if Head.SPARSE in chunk.vectors.heads:
        node.metadata[SPARSE_METADATA_KEY] = {
            "indices": chunk.sparse.indices.tolist(),
            "values": chunk.sparse.values.tolist(),
        }
    for key in _INTERNAL_KEYS:
        for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
            if key in node.metadata and key not in keys:
                keys.append(key)
    node._m3_chunk = chunk
    return node
