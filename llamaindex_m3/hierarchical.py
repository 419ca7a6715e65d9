"""``M3HierarchicalNodeParser``: LlamaIndex's ``HierarchicalNodeParser`` with a full cache key.

``IngestionPipeline`` keys each step's cached output on ``str(step.to_dict())``. LlamaIndex's
``HierarchicalNodeParser`` serialises its ``node_parser_map`` by the declared type
(``NodeParser``), so each level shows only the base fields (``include_metadata``,
``include_prev_next_rel``, ``id_func``'s name, ``class_name``): a level's ``chunk_size``, its
splitter, and a :class:`~llamaindex_m3.M3LateChunkingNodeParser` leaf's model and chunking
are not in the key, and a pipeline with a cache returns the nodes (and late-chunked vectors)
of the old settings after they change (llama-index-core 0.14). This subclass serialises
every level with its own ``to_dict``. LlamaIndex's class also splits only in
``get_nodes_from_documents``: its ``aget_nodes_from_documents`` / ``acall``
(``IngestionPipeline.arun``) return the documents unsplit; this subclass splits there too, in
a worker thread (a late-chunking level runs the model). Otherwise it is
``HierarchicalNodeParser``.

Example::

    hierarchy = M3HierarchicalNodeParser.from_defaults(
        node_parser_ids=["parent", "leaf"],
        node_parser_map={
            "parent": SentenceSplitter(chunk_size=512, chunk_overlap=0),
            "leaf": M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=128),
        },
    )
    IngestionPipeline(transformations=[hierarchy, embed], cache=cache).run(documents=docs)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.node_parser import HierarchicalNodeParser
from llama_index.core.schema import BaseNode, Document

__all__ = ["M3HierarchicalNodeParser"]


class M3HierarchicalNodeParser(HierarchicalNodeParser):
    """``HierarchicalNodeParser`` whose ``to_dict`` (the pipeline's cache key) holds each level.

    Built as ``HierarchicalNodeParser`` is (``from_defaults(...)``, same arguments); the
    nodes are the same, also from ``aget_nodes_from_documents`` / ``acall`` (LlamaIndex's
    return the documents unsplit there). ``to_dict`` / ``to_json`` differ:
    ``node_parser_map`` maps each id to that level's own ``to_dict()`` (a
    :class:`~llamaindex_m3.M3LateChunkingNodeParser`'s includes its chunker's signature and
    encoder identity), so an ``IngestionPipeline`` cache never serves nodes a level with other
    settings, or another model, made. Like ``HierarchicalNodeParser`` (llama-index-core
    0.14), it is not rebuilt by ``from_dict``:
    build it again with ``from_defaults``.
    """

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3HierarchicalNodeParser"

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """``HierarchicalNodeParser``'s fields with each level serialised by its own ``to_dict``."""
        data = super().to_dict(**kwargs)
        data["node_parser_map"] = {
            level: parser.to_dict() for level, parser in self.node_parser_map.items()
        }
        return data

    async def aget_nodes_from_documents(
        self, documents: Sequence[Document], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        """:meth:`get_nodes_from_documents` in a worker thread (``acall`` and
        ``IngestionPipeline.arun`` end here): LlamaIndex's returns the documents unsplit."""
        return await asyncio.to_thread(
            self.get_nodes_from_documents, documents, show_progress=show_progress, **kwargs
        )
