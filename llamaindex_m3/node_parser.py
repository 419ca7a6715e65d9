"""``M3LateChunkingNodeParser``: LlamaIndex node parser that late-chunks documents with BGE-M3.

Each document is encoded once; its chunks come out as ``TextNode``\\ s that already carry their
vectors, so ``VectorStoreIndex`` does not embed them again:

- ``node.embedding``: the chunk's late-chunked dense vector.
- ``node.metadata["m3_sparse"]``: its sparse vector as ``{"indices": [...], "values": [...]}``
  (token ids ascending), listed in ``excluded_embed_metadata_keys`` and
  ``excluded_llm_metadata_keys``, so ``MetadataMode.EMBED`` / ``LLM`` texts leave it out.
  LlamaIndex's metadata extractors (``KeywordExtractor``, ``QuestionsAnsweredExtractor``,
  ``SummaryExtractor``) read ``MetadataMode.ALL`` by default, which shows every key: give them
  ``metadata_mode=MetadataMode.LLM`` to keep the vector out of their prompts.
- ``node.metadata["m3_late_chunk"]``: where the chunk came from (the chunker's signature, the
  chunk's index, token span and a hash of its text: a node edited after parsing is refused),
  also excluded from embedding and prompts.
- :func:`node_vectors` (``node.m3_vectors``): all heads as a one-row :class:`m3kit.M3Output`,
  ColBERT included. ColBERT is kept in memory only (a ``PrivateAttr``), never serialised: a
  ColBERT matrix is far too big for node metadata. A node rebuilt from JSON (a docstore, an
  ``IngestionPipeline`` cache) still has its late-chunked dense and sparse vectors. Hand them
  to m3kit's store with ``M3Store.upsert(chunk_records(nodes), replace=True)`` (``replace``
  deletes the chunks an older version of each document left: give all of a document's nodes
  in one call).
- ``node.metadata["m3_late_chunk"]`` also holds ``count`` (the document's number of chunks)
  and ``source`` (a hash of its text): :func:`chunk_records` versions the records with them.
- ``start_char_idx`` / ``end_char_idx``: the chunk's span in the document; the ``SOURCE``
  relationship points to the document, ``PREVIOUS`` / ``NEXT`` to the neighbouring chunks
  (their metadata without the two keys above: a node does not carry its neighbours' vectors).
- As the leaf level of ``HierarchicalNodeParser`` the parser is given the parent nodes: each
  leaf is late-chunked within its parent (the parent's text is its "document": its offsets,
  ``index``, ``count`` and ``source`` are the parent's, ``cut_from`` names the parent), its
  ``SOURCE`` is the document, and the parent's ``CHILD`` links carry no vectors.

Example::

    from llama_index.core import Document, VectorStoreIndex
    from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser

    embed = M3Embedding(model_name="BAAI/bge-m3")
    parser = M3LateChunkingNodeParser.from_encoder(embed.encoder, chunk_size=256)
    nodes = parser.get_nodes_from_documents([Document(text=long_text)])
    index = VectorStoreIndex(nodes, embed_model=embed)   # nodes are not re-embedded
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.node_parser import NodeParser
from llama_index.core.node_parser.node_utils import (
    IdFuncCallable,
    build_nodes_from_splits,
)
from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageDocument,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
)
from typing_extensions import Self

from llamaindex_m3._encoder_fields import M3EncoderSettingsFields
from llamaindex_m3.events import embedding_event, encoder_payload
from llamaindex_m3.late_nodes import (
    _INTERNAL_KEYS,
    LATE_METADATA_KEY,
    SPARSE_METADATA_KEY,
    EditedNodeError,
    M3TextNode,
    chunk_records,
    node_vectors,
)
from llamaindex_m3.parser_nodes import late_chunk_node
from llamaindex_m3.parser_rebuild import ENCODER_KEY, SIGNATURE_KEY, check_rebuilt, read_id_func
from llamaindex_m3.parser_spans import node_parser_spans
from m3kit.encoder import M3Encoder
from m3kit.field_types import WholeNumber
from m3kit.fingerprint import encoder_fingerprint
from m3kit.late_chunking import DensePooling, LateChunker, WindowPlacement
from m3kit.outputs import Head

__all__ = [
    "LATE_METADATA_KEY",
    "SPARSE_METADATA_KEY",
    "EditedNodeError",
    "M3LateChunkingNodeParser",
    "M3TextNode",
    "chunk_records",
    "node_parser_spans",
    "node_vectors",
]

_CHUNKER_CONTEXT_KEY = "m3kit_late_chunker"


def _build_chunker(
    encoder: M3Encoder,
    *,
    chunk_size: int | None,
    window: int | None,
    overlap: int | None,
    dense_pooling: DensePooling | None,
    splitter: Any,
    placement: WindowPlacement = WindowPlacement.CENTRED,
    late_heads: Sequence[Head | str] | None = None,
) -> LateChunker:
    if isinstance(splitter, NodeParser) and not hasattr(splitter, "split_text"):
        splitter = node_parser_spans(splitter)
    return LateChunker(
        encoder,
        chunk_size=chunk_size,
        splitter=splitter,
        window=window,
        overlap=overlap,
        dense_pooling=dense_pooling,
        placement=placement,
        late_heads=late_heads,
    )


class M3LateChunkingNodeParser(M3EncoderSettingsFields, NodeParser):
    """Split documents into chunks embedded in the context of the whole document (BGE-M3).

    Build it from a checkpoint (fields below; loading fields as
    :class:`~llamaindex_m3.M3Embedding`'s: ``device``, ``dtype``, ``backend``,
    ``max_batch_tokens``, ``max_length``, ``query_instruction``, ...) or share a loaded model
    with :meth:`from_encoder` / :meth:`from_chunker`. Give it the ``max_length`` and
    ``query_instruction`` of the store's embedding: with others it is another encoder, and the
    store refuses its nodes (naming the setting).

    :meth:`to_dict` (what ``IngestionPipeline`` builds its cache key from) also records what
    decides the chunks and their vectors, the chunker's signature (``splitter`` included, which
    is not serialised itself) and the encoder's identity, so parsers that differ there never
    share cached nodes; :meth:`from_dict` checks the parser it rebuilds against them.

    Unlike LlamaIndex's ``SentenceSplitter``, by design:

    - A node's vectors come from its document's text alone
      (``get_content(MetadataMode.NONE)``): the metadata a ``MetadataMode.EMBED`` text shows is
      not encoded, and ``chunk_size`` leaves no room for it (``include_metadata`` only decides
      whether nodes inherit the document's metadata).
    - An empty or whitespace-only document gives one node with its text (``SentenceSplitter``
      gives none for whitespace only): every document keeps a node, so storing a document that
      became empty replaces its older chunks (:func:`chunk_records`, ``replace=True``).
    - With the built-in sentence splitter chunks tile the document: a node's text keeps its
      trailing whitespace.
    - An ``ImageDocument`` is refused (``TypeError``): its nodes would be text nodes without
      the image (``SentenceSplitter`` makes ``ImageNode``\\ s of it).
    """

    batch_size: WholeNumber = Field(
        frozen=True,
        default=32,
        ge=1,
        description="Most sequences (windows) per forward pass.",
    )
    chunk_size: int | None = Field(
        frozen=True,
        default=None,
        ge=1,
        description="Token budget per chunk (default: 256, or fewer when the model's window "
        "holds fewer text tokens).",
    )
    window: int | None = Field(
        frozen=True,
        default=None,
        ge=3,
        description="Most tokens per forward pass (default: 2 * chunk_size + 2, at most "
        "max_length); smaller costs less.",
    )
    overlap: int | None = Field(
        frozen=True,
        default=None,
        ge=0,
        description="Text tokens shared by consecutive windows (default: an eighth of the window).",
    )
    placement: WindowPlacement = Field(
        frozen=True,
        default=WindowPlacement.CENTRED,
        description="'centred' (each token from the window where it is most central) or 'chunks'.",
    )
    late_heads: list[Head] | None = Field(
        frozen=True,
        default=None,
        description="Heads pooled late, the others encoded from the chunk alone (default: "
        "every head of a multi-head model, none of a dense-only one).",
    )
    dense_pooling: DensePooling | None = Field(
        frozen=True, default=None, description="Older spelling: 'mean' (dense late) or 'naive'."
    )
    splitter: Any = Field(
        frozen=True,
        default=None,
        exclude=True,
        description="Chunk boundaries instead of the sentence splitter: a LlamaIndex node "
        "parser or text splitter, or a callable str -> [(start, end)]. Not serialised "
        "(to_dict records it in the chunker's signature).",
    )

    _chunker: LateChunker = PrivateAttr()

    @classmethod
    def class_name(cls) -> str:
        return "M3LateChunkingNodeParser"

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The fields, ``class_name``, the chunker's signature and the encoder's identity."""
        data = super().to_dict(**kwargs)
        data[SIGNATURE_KEY] = self._chunker.signature
        data[ENCODER_KEY] = encoder_fingerprint(self._chunker.encoder).identity
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Self:  # type: ignore[override]
        """The parser :meth:`to_dict` describes (``kwargs`` override its fields).

        LlamaIndex serialises ``id_func`` by its name only: the default one is read back, any
        other must be given again (``id_func=...``).

        Raises:
            ValueError: The rebuilt parser would chunk or embed otherwise than the serialised
                one (its ``splitter`` is not serialised: pass it again as ``splitter=...``; or
                the checkpoint at ``model_name`` is another model now), not checked for what
                ``kwargs`` override; or a custom ``id_func`` was not given again.
        """
        fields = {k: v for k, v in data.items() if k not in (SIGNATURE_KEY, ENCODER_KEY)}
        if "id_func" not in kwargs:
            fields["id_func"] = read_id_func(fields.get("id_func"))
        parser = super().from_dict(fields, **kwargs)
        recorded = {key: data.get(key) for key in (SIGNATURE_KEY, ENCODER_KEY)}
        check_rebuilt(parser, recorded, overridden=set(kwargs))
        return parser

    def model_post_init(self, context: Any, /) -> None:
        """Build the chunker: adopt the one :meth:`from_chunker` passed, or load the model."""
        super().model_post_init(context)
        chunker = context.get(_CHUNKER_CONTEXT_KEY) if isinstance(context, dict) else None
        if chunker is None:
            encoder = self._load_with_settings(self.batch_size)
            chunker = _build_chunker(
                encoder,
                chunk_size=self.chunk_size,
                window=self.window,
                overlap=self.overlap,
                dense_pooling=self.dense_pooling,
                splitter=self.splitter,
                placement=self.placement,
                late_heads=self.late_heads,
            )
        self._chunker = chunker

    @classmethod
    def from_encoder(
        cls,
        encoder: M3Encoder,
        *,
        chunk_size: int | None = None,
        window: int | None = None,
        overlap: int | None = None,
        dense_pooling: DensePooling | str | None = None,
        splitter: Any = None,
        placement: WindowPlacement | str = WindowPlacement.CENTRED,
        late_heads: Sequence[Head | str] | None = None,
        include_metadata: bool = True,
        include_prev_next_rel: bool = True,
        callback_manager: CallbackManager | None = None,
        id_func: IdFuncCallable | None = None,
    ) -> Self:
        """Use an already loaded encoder (no second copy of the model); arguments as the fields.

        ``include_metadata``, ``include_prev_next_rel``, ``callback_manager`` and ``id_func``
        are LlamaIndex's ``NodeParser`` fields (defaults as LlamaIndex's).
        """
        chunker = _build_chunker(
            encoder,
            chunk_size=chunk_size,
            window=window,
            overlap=overlap,
            dense_pooling=None if dense_pooling is None else DensePooling(dense_pooling),
            splitter=splitter,
            placement=WindowPlacement(placement),
            late_heads=late_heads,
        )
        return cls.from_chunker(
            chunker,
            splitter=splitter,
            include_metadata=include_metadata,
            include_prev_next_rel=include_prev_next_rel,
            callback_manager=callback_manager,
            id_func=id_func,
        )

    @classmethod
    def from_chunker(
        cls,
        chunker: LateChunker,
        *,
        splitter: Any = None,
        include_metadata: bool = True,
        include_prev_next_rel: bool = True,
        callback_manager: CallbackManager | None = None,
        id_func: IdFuncCallable | None = None,
    ) -> Self:
        """Wrap a configured :class:`~m3kit.late_chunking.LateChunker` (fields read from it).

        The ``NodeParser`` fields (``include_metadata``, ...) as in :meth:`from_encoder`.
        """
        enc = chunker.encoder
        node_parser_fields: dict[str, Any] = {
            "include_metadata": include_metadata,
            "include_prev_next_rel": include_prev_next_rel,
        }
        if callback_manager is not None:
            node_parser_fields["callback_manager"] = callback_manager
        if id_func is not None:
            node_parser_fields["id_func"] = id_func
        fields = {
            **cls._settings_fields(enc),
            "batch_size": enc.batch_size,
            "chunk_size": chunker.chunk_size,
            "window": chunker.window,
            "overlap": chunker.overlap,
            "placement": chunker.placement,
            "late_heads": sorted(chunker.late_heads, key=lambda h: h.value),
            "splitter": splitter,
            **node_parser_fields,
        }
        return cls.model_validate(fields, context={_CHUNKER_CONTEXT_KEY: chunker})

    @property
    def chunker(self) -> LateChunker:
        """The :class:`~m3kit.late_chunking.LateChunker` doing the work."""
        return self._chunker

    def _held_encoder(self) -> M3Encoder:
        return self._chunker.encoder

    def __getstate__(self) -> dict[str, Any]:
        """As :class:`M3CheckpointFields`', plus the chunker's signature (checked on load)."""
        return {**super().__getstate__(), SIGNATURE_KEY: self._chunker.signature}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from the fields; refuse a parser that would chunk otherwise.

        Raises:
            ValueError: The rebuilt parser chunks otherwise (a chunker from
                :meth:`from_chunker` whose splitter was not given as ``splitter=``), or the
                checkpoint at ``model_name`` is another model now.
        """
        super().__setstate__(state)
        check_rebuilt(
            self, {SIGNATURE_KEY: state.get(SIGNATURE_KEY), ENCODER_KEY: None}, overridden=set()
        )

    # -- NodeParser ---------------------------------------------------------------------------
    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        _refuse_images(nodes)
        texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        with embedding_event(self.callback_manager, encoder_payload(self.model_name)) as report:
            per_doc = self._chunker.chunk(texts, show_progress=show_progress)
            report(texts)  # each document encoded whole, its chunks pooled from it
        out: list[BaseNode] = []
        for node, text, chunks in zip(nodes, texts, per_doc, strict=True):
            built = build_nodes_from_splits([c.text for c in chunks], node, id_func=self.id_func)
            source = hashlib.sha256(text.encode()).hexdigest()[:32]
            for base, chunk in zip(built, chunks, strict=True):
                out.append(late_chunk_node(base, chunk, self._chunker, source, len(chunks)))
        return out

    async def _aparse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        """:meth:`_parse_nodes` in a worker thread (LlamaIndex's runs it on the event loop,
        which would stall every other task while the model encodes)."""
        return await asyncio.to_thread(
            self._parse_nodes, nodes, show_progress=show_progress, **kwargs
        )

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]
    ) -> list[BaseNode]:
        """LlamaIndex's post-processing, keeping the chunker's exact spans.

        (The base class re-finds each node's text in the document, which can land on an
        earlier copy of a repeated passage.) The ``PREVIOUS`` / ``NEXT`` / ``SOURCE`` links it
        makes copy the linked node's metadata: the parser's own keys are dropped from them, so
        a node does not carry its neighbours' vectors. A node without a sparse vector (a
        dense-only model) drops the ``m3_sparse`` it inherited from the node it was cut from.
        """
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node in nodes:
            if isinstance(node, M3TextNode) and node._m3_chunk is not None:
                node.start_char_idx = node._m3_chunk.start
                node.end_char_idx = node._m3_chunk.end
                if Head.SPARSE not in node._m3_chunk.vectors.heads:
                    node.metadata.pop(SPARSE_METADATA_KEY, None)
        if self.include_prev_next_rel:
            _link_next(nodes)
        for node in nodes:
            _strip_related_metadata(node)
        return nodes


def _refuse_images(nodes: Sequence[BaseNode]) -> None:
    """Raise ``TypeError`` for an ``ImageDocument``: LlamaIndex's text splitters make
    ``ImageNode``\\ s of it (the image kept); this parser's nodes are text nodes, and would
    silently drop the image."""
    for i, node in enumerate(nodes):
        if isinstance(node, ImageDocument):
            raise TypeError(
                f"nodes[{i}] is an ImageDocument: M3LateChunkingNodeParser makes text nodes "
                "(LlamaIndex's SentenceSplitter makes ImageNodes of it), so its image would be "
                "lost. Parse image documents with another parser, or pass "
                "Document(text=doc.text, metadata=doc.metadata) to index the text alone"
            )


def _link_next(nodes: list[BaseNode]) -> None:
    """Give each node the ``NEXT`` link its successor's ``PREVIOUS`` link implies.

    LlamaIndex's post-processing moves a node's ``SOURCE`` from the node it was cut from to
    that node's own source before it compares the node with its successor, whose ``SOURCE`` is
    not moved yet: nodes cut from a node (``HierarchicalNodeParser`` levels below the first)
    got ``PREVIOUS`` links and no ``NEXT`` ones.
    """
    for node, after in pairwise(nodes):
        previous = after.relationships.get(NodeRelationship.PREVIOUS)
        if (
            NodeRelationship.NEXT not in node.relationships
            and isinstance(previous, RelatedNodeInfo)
            and previous.node_id == node.node_id
        ):
            node.relationships[NodeRelationship.NEXT] = after.as_related_node_info()


def _strip_related_metadata(node: BaseNode) -> None:
    """Drop the parser's own keys from the metadata ``node``'s relationships copied."""
    for related in node.relationships.values():
        for info in related if isinstance(related, list) else [related]:
            if any(key in info.metadata for key in _INTERNAL_KEYS):
                info.metadata = {k: v for k, v in info.metadata.items() if k not in _INTERNAL_KEYS}
