"""Late-chunked nodes in LlamaIndex's own machinery: relationships, ``IngestionPipeline``.

The parser's nodes carry their vectors; the links LlamaIndex makes between them, an embed model
after the parser in a pipeline and the pipeline's cache must neither copy nor replace them.
"""

from __future__ import annotations

from llama_index.core import Document
from llama_index.core.schema import NodeRelationship

from llamaindex_m3.node_parser import (
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    M3LateChunkingNodeParser,
)
from m3kit import M3Encoder

TEXT = " ".join(
    f"Sentence number {i} talks about topic {i % 3} and nothing else." for i in range(8)
)
INTERNAL = {LATE_METADATA_KEY, SPARSE_METADATA_KEY}


def _document() -> Document:
    return Document(text=TEXT, doc_id="d1", metadata={"topic": "numbers"})


def test_relationships_do_not_copy_the_neighbours_vectors(tiny_encoder: M3Encoder) -> None:
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    nodes = parser.get_nodes_from_documents([_document()])
    assert len(nodes) >= 3
    middle = nodes[1]
    for kind in (NodeRelationship.SOURCE, NodeRelationship.PREVIOUS, NodeRelationship.NEXT):
        info = middle.relationships[kind]
        assert not INTERNAL & set(info.metadata), kind  # type: ignore[union-attr]
    # the user's metadata is still linked, the neighbours keep their own vectors
    assert middle.relationships[NodeRelationship.PREVIOUS].metadata == {"topic": "numbers"}  # type: ignore[union-attr]
    assert set(nodes[0].metadata) >= INTERNAL and set(nodes[2].metadata) >= INTERNAL
    assert middle.to_json().count(f'"{SPARSE_METADATA_KEY}": {{') == 1
