"""``M3Reranker``: a LlamaIndex node postprocessor that reranks with BGE-M3's three heads.

Scores each (query, node text) pair as FlagEmbedding's ``compute_score`` does (see
:mod:`m3kit.rerank`): by default the weighted ``colbert+sparse+dense`` score with weights
``[0.4, 0.2, 0.4]``; each distinct node text is encoded once. Any node with text works (from
any retriever or vector store). As LlamaIndex's own rerankers do, a node is scored by
``node.get_content(MetadataMode.EMBED)`` (its text with the metadata it shows embedding
models; ``metadata_mode="none"`` scores the text alone).

Example:
    >>> import tempfile
    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> reranker = M3Reranker.from_encoder(enc, top_n=1)
    >>> nodes = [NodeWithScore(node=TextNode(text=t)) for t in ["Bees dance.", "Oxygen is 8."]]
    >>> [n.node.get_content() for n in reranker.postprocess_nodes(nodes, query_str="Oxygen is 8.")]
    ['Oxygen is 8.']
"""

from __future__ import annotations

from typing import Any

from typing_extensions import Self

from llamaindex_m3._encoder_fields import M3EncoderSettingsFields
from llamaindex_m3.events import rerank_event
from m3kit.encoder import M3Encoder
from m3kit.errors import missing_extra
from m3kit.field_types import WholeNumber
from m3kit.rerank import M3Reranker as CoreReranker
from m3kit.rerank import RerankConfig, RerankMode
from m3kit.scoring import DEFAULT_M3_WEIGHTS

try:
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex", e) from e

__all__ = ["M3Reranker"]

_ENCODER_CONTEXT_KEY = "m3kit_encoder"


class M3Reranker(M3EncoderSettingsFields, BaseNodePostprocessor):
    """Rerank nodes by their M3 score against the query; keep the ``top_n`` best.

    Build it from a checkpoint (``M3Reranker(model_name="BAAI/bge-m3", top_n=5)``, loading
    fields as :class:`~llamaindex_m3.M3Embedding`'s: ``device``, ``dtype``, ``backend``,
    ``max_batch_tokens``, ``max_length``, ``query_instruction``, ...) or share a loaded model
    (``M3Reranker.from_encoder(encoder, top_n=5)``). Returned nodes are the input nodes with
    ``score`` set to the rerank score, best first: ``mode``'s raw ``compute_score`` score, not
    mapped into [0, 1] (dense and ColBERT scores lie in [-1, 1], the sparse score is >= 0 and
    unbounded, so the default M3 score can exceed 1); compare it with thresholds measured on
    the same ``mode`` and ``weights`` (a ``SimilarityPostprocessor`` cutoff too).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    batch_size: WholeNumber = Field(
        frozen=True, default=32, ge=1, description="Most texts per forward pass."
    )
    top_n: WholeNumber | None = Field(default=2, ge=1, description="Nodes returned (None: all).")
    mode: RerankMode = Field(
        frozen=True,
        default=RerankMode.M3,
        description="Score that orders nodes: dense, sparse, colbert, sparse+dense or "
        "colbert+sparse+dense (a dense-only checkpoint needs 'dense').",
    )
    weights: tuple[float, float, float] = Field(
        frozen=True, default=DEFAULT_M3_WEIGHTS, description="[dense, sparse, colbert] weights."
    )
    max_query_length: WholeNumber | None = Field(
        frozen=True,
        default=None,
        ge=2,
        description="Longest query in tokens (default: 512, or the model's max_length if "
        "shorter; a longer one than the model's is refused).",
    )
    max_passage_length: WholeNumber | None = Field(
        frozen=True,
        default=None,
        ge=2,
        description="Longest node text in tokens (default: the model's; a longer one is refused).",
    )
    use_query_instruction: bool = Field(
        frozen=True, default=False, description="Prefix queries with the model's query instruction."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which text of a node is scored: 'embed' (default, as LlamaIndex's rerankers "
        "and M3Embedding: the text with the metadata it shows embedding models), 'none' (the "
        "text alone), 'llm' or 'all'.",
    )

    show_progress: bool = Field(
        default=False,
        description="A tqdm bar while the candidates are encoded (default off: a query "
        "engine reranks on every query).",
    )

    _reranker: CoreReranker = PrivateAttr()

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, weights: tuple[float, float, float]) -> tuple[float, float, float]:
        RerankConfig(weights=weights)  # raises ValueError naming the problem
        return weights

    def model_post_init(self, context: Any, /) -> None:
        """Load the checkpoint, or adopt the encoder passed by :meth:`from_encoder`."""
        super().model_post_init(context)
        encoder = context.get(_ENCODER_CONTEXT_KEY) if isinstance(context, dict) else None
        if encoder is None:
            encoder = self._load_with_settings(self.batch_size)
        self._reranker = CoreReranker(
            encoder,
            RerankConfig(
                mode=self.mode,
                weights=self.weights,
                max_query_length=self.max_query_length,
                max_passage_length=self.max_passage_length,
                query_instruction=self.use_query_instruction,
            ),
        )

    @classmethod
    def from_encoder(cls, encoder: M3Encoder, **fields: Any) -> Self:
        """Wrap an already loaded :class:`~m3kit.M3Encoder` (no second copy of the model).

        Args:
            encoder: The loaded encoder.
            **fields: The rerank fields (``top_n``, ``mode``, ``weights``, ...).
        """
        loaded = {**cls._settings_fields(encoder), "batch_size": encoder.batch_size}
        clash = sorted(set(fields) & set(loaded))
        if clash:
            raise ValueError(f"{clash} come from the encoder in from_encoder()")
        return cls.model_validate(loaded | fields, context={_ENCODER_CONTEXT_KEY: encoder})

    @classmethod
    def class_name(cls) -> str:
        return "M3Reranker"

    @property
    def reranker(self) -> CoreReranker:
        """The :class:`m3kit.rerank.M3Reranker` doing the scoring."""
        return self._reranker

    def _held_encoder(self) -> M3Encoder:
        return self._reranker.encoder

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("M3Reranker needs the query: pass query_bundle or query_str")
        for i, n in enumerate(nodes):
            if not isinstance(n, NodeWithScore):
                raise TypeError(f"nodes[{i}] is {type(n).__name__}, not a NodeWithScore")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        query, top_n = query_bundle.query_str, self.top_n
        kept = len(nodes) if top_n is None else top_n  # (the events' TOP_K is a count)
        with rerank_event(self.callback_manager, nodes, query, kept, self.model_name) as done:
            ranked = self._reranker.rerank(
                query, texts, top_n=top_n, show_progress=self.show_progress
            )
            out = [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
            done(out)
        return out
