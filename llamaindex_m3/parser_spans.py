"""Chunk spans from any LlamaIndex node parser, for late chunking (``node_parser_spans``).

Re-exported by :mod:`llamaindex_m3.node_parser`, where :class:`M3LateChunkingNodeParser`
wraps a node parser given as its ``splitter`` with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llama_index.core.node_parser import NodeParser
from llama_index.core.schema import BaseNode, Document, MetadataMode, TextNode

from m3kit.piece_spans import spans_of_pieces

__all__ = ["node_parser_spans"]


def node_parser_spans(parser: NodeParser) -> Callable[[str], list[tuple[int, int]]]:
    """Character spans of any LlamaIndex node parser, for :class:`m3kit.late_chunking.LateChunker`.

    Finds each node's text in the document with :func:`m3kit.piece_spans.spans_of_pieces`
    (in order, covering the whole document), not from the nodes' ``start_char_idx``: LlamaIndex
    sets those by searching from just after the previous node's start, which lands on an
    earlier copy of a repeated passage. Nodes a parser returns out of document order are
    first ordered by their ``start_char_idx``.

    A parser whose nodes nest (``HierarchicalNodeParser`` with several ``chunk_sizes``: parent
    nodes holding their leaves) is refused: late chunking gives one flat sequence of chunks and
    could keep neither the parents nor their links to the leaves.

    Raises:
        ValueError: A node's text is not in the document, the nodes leave text out, or the
            nodes nest (parents and children).
    """

    def spans(text: str) -> list[tuple[int, int]]:
        nodes = parser.get_nodes_from_documents([Document(text=text)])
        _refuse_nested(parser, nodes)
        starts = [n.start_char_idx for n in nodes if isinstance(n, TextNode)]
        placed = [s for s in starts if s is not None]
        if len(placed) == len(nodes) and placed != sorted(placed):  # not in document order
            nodes = [n for _, n in sorted(zip(placed, nodes, strict=True), key=lambda p: p[0])]
        contents = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        try:
            return spans_of_pieces(text, contents)
        except ValueError as e:
            raise ValueError(f"{type(parser).__name__}: {e}") from e

    spans.places_pieces = True  # type: ignore[attr-defined]  # in the chunker's signature
    return spans


def _refuse_nested(parser: NodeParser, nodes: Sequence[BaseNode]) -> None:
    """Raise when some of ``nodes`` are the parents of others (a hierarchy, not a sequence)."""
    ids = {node.node_id for node in nodes}
    for node in nodes:
        if any(child.node_id in ids for child in node.child_nodes or []):
            raise ValueError(
                f"{type(parser).__name__} returned nested nodes (parents and their children, "
                "e.g. HierarchicalNodeParser with several chunk_sizes): late chunking makes one "
                "flat sequence of chunks and cannot keep the hierarchy. Pass a parser of one "
                "level as splitter (e.g. HierarchicalNodeParser.from_defaults(chunk_sizes=[128]) "
                "or SentenceSplitter(chunk_size=128)); for auto-merging retrieval over parents, "
                "parse with HierarchicalNodeParser itself and store its nodes without late "
                "chunking"
            )
