"""``M3Retriever``: three-way hybrid search (dense + sparse + ColBERT) over an m3kit collection.

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from m3kit import M3Encoder
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
    >>> retriever = M3Retriever.from_documents(
    ...     [
    ...         Document("Berlin is the capital of Germany.", metadata={"topic": "geo"}),
    ...         Document("Oxygen has atomic number 8.", metadata={"topic": "chem"}),
    ...     ],
    ...     enc,
    ...     k=1,
    ... )
    >>> [d.page_content for d in retriever.invoke("Oxygen has atomic number 8.")]
    ['Oxygen has atomic number 8.']
    >>> docs = retriever.invoke("capital", k=2, filter={"topic": "geo"})
    >>> [(d.metadata["topic"], d.metadata["chunk_index"]) for d in docs]
    [('geo', 0)]
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from qdrant_client import models

from langchain_m3._documents import (
    RETRIEVER_SHOWN,
    document_filter,
)
from langchain_m3._retriever_construction import RetrieverConstruction
from langchain_m3._search import (
    SETTINGS_ARGS,
    check_k,
    check_query,
    check_setting,
)
from m3kit.errors import missing_extra
from m3kit.outputs import Head
from m3kit.store import Fusion, Hit, M3Index
from m3kit.store.filters import to_filter
from m3kit.store.search_settings import check_score_threshold

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-core", "langchain", e) from e

if TYPE_CHECKING:
    pass

__all__ = ["M3Retriever"]

MetadataFilter = dict[str, Any] | models.Filter


class _NotGiven(enum.Enum):
    """A call's ``filter`` / ``score_threshold`` left out (``None`` given means "none")."""

    NOT_GIVEN = enum.auto()


_NOT_GIVEN = _NotGiven.NOT_GIVEN


class M3Retriever(RetrieverConstruction, BaseRetriever):
    """LangChain retriever over an :class:`~m3kit.store.M3Index` (BGE-M3 in Qdrant).

    Each query is encoded once (all heads the checkpoint has); Qdrant gathers dense and sparse
    candidates, fuses them (``fusion``) and, with a ColBERT head, reranks them by MaxSim.
    A dense-only checkpoint (e.g. MiniLM) does plain dense search.

    ``k``, ``fusion``, ``weights``, ``rerank``, ``candidates``, ``filter`` and
    ``score_threshold`` are defaults that one call can override:
    ``retriever.invoke("query", k=3, filter={"lang": "en"}, candidates=200)``. Ranking
    settings left ``None`` are the index's (:meth:`~m3kit.store.M3Index.search_settings`):
    the checkpoint's calibrated fusion (``m3kit_search.json``) when it has one.

    A call's ``filter=None`` / ``score_threshold=None`` means no filter / no threshold for
    that call (as LangChain's ``VectorStoreRetriever`` merges a call's keywords over its
    ``search_kwargs``); a call that leaves them out uses the retriever's. A call's ``None``
    for ``k``, ``fusion``, ``weights``, ``rerank`` or ``candidates`` keeps the retriever's
    value: there is no "no ``k``", and a ranking setting's ``None`` ("the index's") is what
    the retriever's own ``None`` already means (to use the index's ranking over a retriever's
    own setting for one call, pass the index's values). ``filter={}`` is an error (it would
    match everything): pass ``filter=None``.

    Each returned :class:`~langchain_core.documents.Document` has the chunk's text, its
    document's id as ``id`` (what :meth:`add_documents` returns and :meth:`delete` takes; the
    chunks of one document share it) and its metadata plus ``score``, ``doc_id`` (the same id)
    and ``chunk_index`` (these three keys overwrite user metadata of the same name; added back
    with :meth:`add_documents`, such a document is stored without them, as it was).

    Example:
        >>> import tempfile
        >>> from m3kit import M3Encoder
        >>> from m3kit.store import M3Index
        >>> from m3kit.testing import build_tiny_m3_checkpoint
        >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
        >>> retriever = M3Retriever(index=M3Index.open(enc, ":memory:"), k=2, fusion="m3")
        >>> ids = retriever.add_texts(["Jupiter is a gas giant.", "Honeybees dance."])
        >>> hit = retriever.invoke("Honeybees dance.")[0]
        >>> hit.page_content, sorted(hit.metadata)
        ('Honeybees dance.', ['chunk_index', 'doc_id', 'score'])
        >>> hit.id == hit.metadata["doc_id"] == ids[1]
        True
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    index: M3Index
    """The encoder + Qdrant collection searched (and written by :meth:`add_documents`)."""
    k: int = Field(default=4, ge=1)
    """Number of documents returned."""
    fusion: Fusion | None = None
    """``rrf``, ``dbsf`` or ``m3`` (FlagEmbedding's weighted dense/sparse/ColBERT score);
    ``None``: the index's (a calibrated checkpoint's fusion, see above)."""
    weights: tuple[float, float, float] | None = None
    """``[dense, sparse, colbert]`` of the ``m3`` fusion; ``None``: the index's."""
    rerank: bool | None = None
    """ColBERT rerank; ``None``: the index's (on when the collection holds ColBERT vectors)."""
    candidates: int | None = None
    """Candidates per retriever before fusion and rerank; ``None``: the index's
    (``max(4 * k, 50)`` uncalibrated)."""
    filter: MetadataFilter | None = None
    """Metadata equality (``{"key": value}``, a list value = any of) or a qdrant ``Filter``."""
    score_threshold: float | None = None
    """Drop results scoring below this (on the scale of the last stage's score)."""

    _owns_index: bool = PrivateAttr(default=False)  # opened by from_documents: close() closes it

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, value: Any) -> int:
        return check_k(value)  # as a call's k: True / 2.0 / "3" are not read as a count

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_score_threshold(cls, value: Any) -> float | None:
        return check_score_threshold(value)  # True / "0.5" / NaN are refused, as at search

    @field_validator("fusion", "weights", "rerank", "candidates", mode="before")
    @classmethod
    def _check_setting(cls, value: Any, info: ValidationInfo) -> Any:
        return check_setting(str(info.field_name), value)

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: MetadataFilter | None) -> MetadataFilter | None:
        to_filter(document_filter(value, RETRIEVER_SHOWN))  # raises as a search would
        return value

    @model_validator(mode="after")
    def _check_held_settings(self) -> M3Retriever:
        if self.rerank and Head.COLBERT not in self.index.store.heads:
            raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
        # weights this retriever's own fusion (or the index's default) never uses: every
        # search without a call's own fusion would raise, so refuse them here, as the search
        # would (a call choosing rrf / dbsf over held m3 weights leaves them out instead)
        self.index.search_settings(fusion=self.fusion, weights=self.weights, rerank=self.rerank)
        return self

    # -- retrieval ----------------------------------------------------------------------------
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: MetadataFilter | _NotGiven | None = _NOT_GIVEN,
        score_threshold: float | _NotGiven | None = _NOT_GIVEN,
        **settings: Any,
    ) -> list[Document]:
        args = self._search_args(k, filter, score_threshold, settings)
        hits = self.index.search(check_query(query), **args)
        return [_document(h) for h in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: MetadataFilter | _NotGiven | None = _NOT_GIVEN,
        score_threshold: float | _NotGiven | None = _NOT_GIVEN,
        **settings: Any,
    ) -> list[Document]:
        args = self._search_args(k, filter, score_threshold, settings)
        hits = await self.index.asearch(check_query(query), **args)
        return [_document(h) for h in hits]

    def _search_args(
        self,
        k: int | None,
        filter: MetadataFilter | _NotGiven | None,
        score_threshold: float | _NotGiven | None,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """``index.search`` arguments: a call's values, else this retriever's defaults.

        ``filter`` / ``score_threshold``: :data:`_NOT_GIVEN` (left out of the call) is the
        retriever's; a given ``None`` is none. ``k`` and ``settings`` (a call's ``fusion``,
        ``weights``, ``rerank``, ``candidates``, checked by the index; anything else is an
        error): ``None`` is the retriever's.
        """
        unknown = set(settings) - SETTINGS_ARGS
        if unknown:
            raise TypeError(f"unknown search argument(s) {sorted(unknown)}")
        defaults = {name: getattr(self, name) for name in SETTINGS_ARGS}
        return {
            **self.index.layered_settings(settings, defaults),
            "k": check_k(self.k if k is None else k),
            "filter": document_filter(
                self.filter if filter is _NOT_GIVEN else filter, RETRIEVER_SHOWN
            ),
            "score_threshold": self.score_threshold
            if score_threshold is _NOT_GIVEN
            else score_threshold,
        }


def _document(hit: Hit) -> Document:
    """A hit as a ``Document`` whose ``id`` is its document's id, as ``add_documents``
    returns and ``delete`` takes (and as ``M3VectorStore`` gives); the chunks of one
    document share it and differ by ``metadata["chunk_index"]``."""
    meta = {
        **hit.metadata,
        "score": hit.score,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
    }
    return Document(id=hit.doc_id, page_content=hit.text, metadata=meta)
