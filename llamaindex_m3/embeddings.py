"""LlamaIndex embeddings: M3 dense (:class:`M3Embedding`) and learned-sparse vectors.

:class:`M3Embedding` is a ``BaseEmbedding`` (``Settings.embed_model``, ``VectorStoreIndex``).
:class:`M3SparseEmbedding` is a ``BaseSparseEmbedding`` (``{token_id: weight}`` dicts).
:func:`m3_sparse_fns` gives the ``sparse_doc_fn`` / ``sparse_query_fn`` pair that
``llama_index.vector_stores.qdrant.QdrantVectorStore(enable_hybrid=True, ...)`` takes, so its
hybrid mode uses M3's own sparse head instead of a second (SPLADE / FastEmbed) model.

Example:
    >>> import tempfile
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> emb = M3Embedding.from_encoder(enc)
    >>> len(emb.get_text_embedding("Berlin is the capital of Germany.")) == enc.dense_dim
    True
    >>> doc_fn, query_fn = m3_sparse_fns(emb)
    >>> indices, values = doc_fn(["Berlin is the capital of Germany."])
    >>> len(indices[0]) == len(values[0]) > 0
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, PrivateAttr, field_validator
from typing_extensions import Self

from llamaindex_m3._async_embedding import ThreadedAsyncEmbedding
from llamaindex_m3._encoder_fields import M3EncoderFields
from llamaindex_m3._sparse_handoff import HandoffKey, SparseHandoff
from llamaindex_m3.embedding_origins import remember
from llamaindex_m3.late_nodes import LATE_METADATA_KEY
from llamaindex_m3.node_records import carried_vectors, is_late
from m3kit.encoder import M3Encoder
from m3kit.encoder_inputs import check_text, check_texts
from m3kit.errors import HeadNotAvailableError, missing_extra
from m3kit.field_types import WholeNumber
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Head, SparseVector
from m3kit.sparse_options import finite_sparse_min_weight

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
    from llama_index.core.schema import BaseComponent, BaseNode, MetadataMode
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex", e) from e

__all__ = [
    "HandoffKey",
    "M3Embedding",
    "M3SparseEmbedding",
    "QdrantSparseFn",
    "SparseHandoff",
    "m3_sparse_fns",
]

_DENSE = frozenset({Head.DENSE})
#: The fields deciding whether LlamaIndex's ``embeddings_cache`` serves the right vectors.
_CACHE_FIELDS = ("embeddings_cache", "text_instruction")

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]
"""What ``QdrantVectorStore``'s ``sparse_doc_fn`` / ``sparse_query_fn`` return."""


class M3Embedding(ThreadedAsyncEmbedding, M3EncoderFields, BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` giving M3 (or any BGE / sentence-transformers) dense vectors.

    The checkpoint is loaded when the object is built and kept in a private attribute
    (:attr:`encoder`); share one loaded model between classes with :meth:`from_encoder`.
    Vectors are L2-normalised, so cosine and dot product agree. Queries get
    ``query_instruction``, documents ``text_instruction`` (both none for BGE-M3). The async
    methods run the sync ones in a worker thread. LlamaIndex's ``embeddings_cache`` keys a
    vector by its text alone, so it is refused unless both prefixes are the same.

    As a transformation after :class:`~llamaindex_m3.M3LateChunkingNodeParser` on the same
    model (``IngestionPipeline(transformations=[parser, embed])``), it keeps the late-chunked
    embeddings the nodes carry and embeds only the other nodes. Its ``to_dict`` (the key of
    the pipeline's cache) records the encoder's fingerprint identity, so a cache never serves
    another model's vectors. Each vector it returns is remembered with that identity
    (:mod:`llamaindex_m3.embedding_origins`), so an :class:`~llamaindex_m3.M3VectorStore` of
    another encoder (a fine-tune's old model) refuses it as a node's or a query's embedding.

    Example:
        >>> import tempfile
        >>> from m3kit.testing import build_tiny_m3_checkpoint
        >>> path = build_tiny_m3_checkpoint(tempfile.mkdtemp())
        >>> emb = M3Embedding(model_name=str(path), dtype="fp32")
        >>> vectors = emb.get_text_embedding_batch(["Oxygen is O.", "Iron is Fe."])
        >>> len(vectors), len(emb.get_query_embedding("oxygen")) == len(vectors[0])
        (2, True)
    """

    _sparse_handoff: SparseHandoff | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3Embedding"

    def model_post_init(self, context: Any, /) -> None:
        """Load the checkpoint (or adopt the encoder), then check ``embeddings_cache``."""
        super().model_post_init(context)
        self._check_embeddings_cache(self.embeddings_cache, self.text_instruction)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field; an ``embeddings_cache`` or ``text_instruction`` is checked first.

        Raises:
            ValueError: The cache would serve queries documents' vectors (see
                :meth:`_check_embeddings_cache`).
        """
        if name in _CACHE_FIELDS:
            fields = {f: getattr(self, f) for f in _CACHE_FIELDS} | {name: value}
            self._check_embeddings_cache(**fields)
        super().__setattr__(name, value)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy sharing the loaded model; ``update`` is checked as an assignment is."""
        copied = super().model_copy(update=update, deep=deep)
        copied._check_embeddings_cache(copied.embeddings_cache, copied.text_instruction)
        return copied

    def _check_embeddings_cache(self, embeddings_cache: Any, text_instruction: str | None) -> None:
        """Refuse LlamaIndex's ``embeddings_cache`` where a query is embedded otherwise than a
        document of the same text.

        Raises:
            ValueError: The cache is set and the query prefix (the encoder's
                ``query_instruction``) is not the document prefix (``text_instruction``): the
                cache keys a vector by its text alone, so a query would be served the vector
                of a document of its text, or a document the vector of a query.
        """
        query = self.encoder.query_instruction or ""
        if embeddings_cache is not None and query != (text_instruction or ""):
            raise ValueError(
                "embeddings_cache keys each vector by its text alone, for queries and "
                f"documents alike, and this model embeds a query after {query!r} but a "
                f"document after {text_instruction or ''!r}: a query would be served a "
                "document's vector (or a document a query's). Leave embeddings_cache unset "
                "(IngestionPipeline(cache=...) keys its cache on the model and its settings)"
            )

    def sparse_handoff(self) -> SparseHandoff:
        """Start computing sparse vectors with the dense ones, for :func:`m3_sparse_fns`.

        Called by :func:`m3_sparse_fns` when given this object; from then on each document
        batch is encoded once with both heads.
        """
        _require_sparse(self.encoder, "the sparse handoff")
        if self._sparse_handoff is None:
            self._sparse_handoff = SparseHandoff()
        return self._sparse_handoff

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> M3Embedding:
        """A deep copy sharing the model; it starts without the sparse handoff (the store's
        ``sparse_doc_fn`` reads the original's), so it computes dense vectors only."""
        memo = {} if memo is None else memo
        if self._sparse_handoff is not None:
            memo.setdefault(id(self._sparse_handoff), None)
        return super().__deepcopy__(memo)

    def _get_query_embedding(self, query: str) -> Embedding:
        check_text(query, method="get_query_embedding")
        out = self.encoder.encode(
            [query], heads=Head.DENSE, query=True, max_length=self.max_length, show_progress=False
        )
        vector: Embedding = out.dense[0].tolist()
        remember([vector], encoder_fingerprint(self.encoder))
        return vector

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([check_text(text, method="get_text_embedding")])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        handoff = self._sparse_handoff
        documents = self._documents(texts)
        out = self.encoder.encode(
            documents,
            heads=[Head.DENSE, Head.SPARSE] if handoff is not None else Head.DENSE,
            max_length=self.max_length,
            show_progress=False,
        )
        if handoff is not None:
            handoff.put([(d, self.max_length) for d in documents], out.sparse)
        vectors: list[Embedding] = [row.tolist() for row in out.dense]
        remember(vectors, encoder_fingerprint(self.encoder))
        return vectors

    # -- as a transformation (IngestionPipeline) ----------------------------------------------
    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Embed the nodes, keeping the late-chunked vectors nodes of this model carry.

        A node from :class:`~llamaindex_m3.M3LateChunkingNodeParser` on this model keeps its
        embedding (pooled in its document's context, like the sparse vector it carries); the
        other nodes are embedded from their ``MetadataMode.EMBED`` text.

        Raises:
            ValueError: A node was late-chunked by another model, or lost its late-chunked
                embedding, or is late-chunked while ``text_instruction`` is set (its vectors
                have no prefix; names the node).
        """
        todo = self._nodes_to_embed(nodes)
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in todo]
        _set_embeddings(todo, self.get_text_embedding_batch(texts, **kwargs))
        return nodes

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """:meth:`__call__`, the embedding done by ``aget_text_embedding_batch``."""
        todo = self._nodes_to_embed(nodes)
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in todo]
        _set_embeddings(todo, await self.aget_text_embedding_batch(texts, **kwargs))
        return nodes

    def _nodes_to_embed(self, nodes: Sequence[BaseNode]) -> list[BaseNode]:
        """The nodes carrying no late-chunked vectors; the others get their carried one."""
        fingerprint = encoder_fingerprint(self.encoder)
        todo = []
        for node in nodes:
            carried = carried_vectors(
                node,
                _DENSE,
                fingerprint,
                holder="embedding model",
                text_instruction=self.text_instruction,
            )
            if carried is not None:
                node.embedding = carried.dense[0].tolist()
            elif is_late(node):
                raise ValueError(
                    f"node {node.node_id} came from M3LateChunkingNodeParser but lost its "
                    "late-chunked embedding; embedding its text alone would lose its "
                    "document's context while its sparse vector keeps it. Run the parser "
                    f"again on its document, or drop metadata[{LATE_METADATA_KEY!r}] to have "
                    "the node embedded on its own text"
                )
            else:
                todo.append(node)
        return todo


def _set_embeddings(nodes: Sequence[BaseNode], vectors: Sequence[Embedding]) -> None:
    for node, vector in zip(nodes, vectors, strict=True):
        node.embedding = vector


# both bases add class_name in a model serializer; BaseSparseEmbedding's (first) is used
class M3SparseEmbedding(  # type: ignore[misc]
    ThreadedAsyncEmbedding, M3EncoderFields, BaseSparseEmbedding, BaseComponent
):
    """LlamaIndex ``BaseSparseEmbedding`` giving M3 learned-sparse vectors ``{token_id: weight}``.

    Keys are Python ``int`` token ids of the checkpoint's tokenizer, values positive
    ``float`` weights. Needs a checkpoint with the sparse head (``sparse_linear.pt``, e.g.
    ``BAAI/bge-m3``); a dense-only one raises :class:`~m3kit.errors.HeadNotAvailableError`.

    LlamaIndex's ``BaseSparseEmbedding`` is no ``BaseComponent``; this class is one too, so it
    serialises (``to_dict`` / ``from_dict``, JSON) and pickles as :class:`M3Embedding` does:
    unpickling loads the checkpoint again from ``model_name``.
    """

    sparse_top_k: WholeNumber | None = Field(
        default=None, ge=1, description="Keep only the k highest weights per text."
    )
    sparse_min_weight: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Drop weights at or below this value (a finite number >= 0).",
    )

    _finite_min_weight = field_validator("sparse_min_weight", mode="before")(
        finite_sparse_min_weight
    )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3SparseEmbedding"

    @classmethod
    def _check_encoder(cls, encoder: M3Encoder) -> None:
        _require_sparse(encoder, cls.__name__)

    def _encode(self, texts: list[str], *, query: bool) -> list[SparseEmbedding]:
        if not texts:
            return []
        out = self.encoder.encode(
            texts if query else self._documents(texts),
            heads=Head.SPARSE,
            query=query,
            max_length=self.max_length,
            sparse_top_k=self.sparse_top_k,
            sparse_min_weight=self.sparse_min_weight,
            show_progress=False,
        )
        return [v.to_dict() for v in out.sparse]

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        return self._encode([check_text(query, method="get_query_embedding")], query=True)[0]

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._encode([check_text(text, method="get_text_embedding")], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return self._encode(texts, query=False)


@dataclass(frozen=True)
class QdrantSparseFn:
    """A ``sparse_doc_fn`` / ``sparse_query_fn`` for LlamaIndex's ``QdrantVectorStore``.

    Called with a list of texts, it returns ``(indices, values)``: one list of token ids and
    one list of weights per text, which the store turns into Qdrant sparse vectors.

    Attributes:
        encoder: The loaded encoder (must have the sparse head).
        query: Encode as queries (adds the query instruction) rather than documents.
        text_instruction: Prefix for documents (ignored for queries).
        max_length: Truncate longer texts to this many tokens.
        sparse_top_k: Keep only the k highest weights per text.
        sparse_min_weight: Drop weights at or below this value.
    """

    encoder: M3Encoder
    query: bool
    text_instruction: str | None = None
    max_length: int | None = None
    sparse_top_k: int | None = None
    sparse_min_weight: float = 0.0
    handoff: SparseHandoff | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _require_sparse(self.encoder, "m3_sparse_fns")

    def __call__(self, texts: list[str]) -> BatchSparseEncoding:
        """Sparse vectors of ``texts`` as ``(indices per text, values per text)``.

        Raises:
            TypeError: ``texts`` is a single string (each of its characters would be encoded)
                or holds a non-string.
        """
        texts = check_texts(texts, method="sparse_query_fn" if self.query else "sparse_doc_fn")
        if not self.query and self.text_instruction:
            texts = [self.text_instruction + t for t in texts]
        vectors: list[SparseVector | None] = [None] * len(texts)
        if self.handoff is not None and not self.query:
            # a vector of this text, prefix and max_length only (not a copy's other settings),
            # computed uncut by the embedding: cut here as this function cuts its own
            taken = [self.handoff.take((t, self.max_length)) for t in texts]
            vectors = [None if v is None else self.prune(v) for v in taken]
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            todo = [texts[i] for i in missing]
            out = self.encoder.encode(
                todo,
                heads=Head.SPARSE,
                query=self.query,
                max_length=self.max_length,
                sparse_top_k=self.sparse_top_k,
                sparse_min_weight=self.sparse_min_weight,
                show_progress=False,
            )
            for i, vector in zip(missing, out.sparse, strict=True):
                vectors[i] = vector
        done = [v for v in vectors if v is not None]
        return [v.indices.tolist() for v in done], [v.values.tolist() for v in done]

    def prune(self, vector: SparseVector) -> SparseVector:
        """``vector`` cut as this function cuts its own (``sparse_top_k``, ``sparse_min_weight``).

        For a sparse vector computed elsewhere (a late-chunked node's), so it is stored as
        sparse as the vectors this function gives.
        """
        return self.encoder.sparse_vector(
            vector.indices,
            vector.values,
            top_k=self.sparse_top_k,
            min_weight=self.sparse_min_weight,
        )


def m3_sparse_fns(
    source: M3Encoder | M3Embedding | M3SparseEmbedding,
) -> tuple[QdrantSparseFn, QdrantSparseFn]:
    """The ``(sparse_doc_fn, sparse_query_fn)`` pair for LlamaIndex's ``QdrantVectorStore``.

    Pass the :class:`M3Embedding` you give ``VectorStoreIndex`` as ``embed_model``: dense and
    sparse vectors then come from one checkpoint, one copy of it in memory and one forward
    pass per document (the sparse half waits in a :class:`SparseHandoff` until the store
    asks for it)::

        embed = M3Embedding(model_name="BAAI/bge-m3")
        doc_fn, query_fn = m3_sparse_fns(embed)
        store = QdrantVectorStore(
            client=client, collection_name="docs", enable_hybrid=True,
            sparse_doc_fn=doc_fn, sparse_query_fn=query_fn,
        )

    These functions see texts only, so the store would re-encode a late-chunked node's text
    alone and lose its late-chunked sparse vector: for nodes from
    :class:`~llamaindex_m3.M3LateChunkingNodeParser` use
    :class:`~llamaindex_m3.M3QdrantVectorStore`, which builds these functions itself and keeps
    the vectors the nodes carry.

    To search a collection that ``langchain_qdrant.QdrantVectorStore`` wrote in hybrid mode
    (``M3Embeddings`` + ``M3SparseEmbeddings``, ``vector_name="dense"``,
    ``sparse_vector_name="sparse"``) or one m3kit wrote with ``backend="client"``, add
    ``dense_vector_name="dense", sparse_vector_name="sparse", text_key="page_content"``;
    the metadata is then nested (filter on ``metadata.<key>``).

    Args:
        source: A loaded encoder, or an :class:`M3Embedding` / :class:`M3SparseEmbedding`
            (its ``text_instruction``, ``max_length`` and, for the sparse one, its
            ``sparse_top_k`` / ``sparse_min_weight`` are kept). An ``M3Embedding`` starts
            computing sparse vectors with its dense ones (:meth:`M3Embedding.sparse_handoff`).

    Returns:
        ``(doc_fn, query_fn)``; each maps ``list[str]`` to ``(indices, values)``.

    Raises:
        HeadNotAvailableError: The checkpoint has no sparse head.
    """
    if isinstance(source, M3Encoder):
        doc_fn = QdrantSparseFn(source, query=False)
    elif isinstance(source, M3Embedding):
        doc_fn = QdrantSparseFn(
            source.encoder,
            query=False,
            text_instruction=source.text_instruction,
            max_length=source.max_length,
            handoff=source.sparse_handoff(),
        )
    else:
        doc_fn = QdrantSparseFn(
            source.encoder,
            query=False,
            text_instruction=source.text_instruction,
            max_length=source.max_length,
            sparse_top_k=source.sparse_top_k,
            sparse_min_weight=source.sparse_min_weight,
        )
    return doc_fn, dataclasses.replace(doc_fn, query=True, handoff=None)


def _require_sparse(encoder: M3Encoder, who: str) -> None:
    if Head.SPARSE not in encoder.available_heads:
        where = encoder.info.path if encoder.info else "this checkpoint"
        raise HeadNotAvailableError(
            f"{where} is a dense-only checkpoint (no sparse_linear.pt); {who} needs an M3 "
            "checkpoint such as BAAI/bge-m3"
        )
