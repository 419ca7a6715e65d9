"""The query path of :class:`~llamaindex_m3.M3VectorStore`: query modes, settings, filters.

Split from :mod:`llamaindex_m3.vector_store` (whose module doc describes the query modes and
ranking settings): :func:`query_hits` runs one ``VectorStoreQuery`` and :func:`query_settings`
resolves its ranking, reading the store's fields and its index.
"""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3.embedding_origins import check_origin
from llamaindex_m3.filters import to_store_filter
from llamaindex_m3.sourceless import ref_docs_filter
from m3kit.chunk_spans import is_blank
from m3kit.outputs import Head, SparseVector
from m3kit.store import Fusion, Hit, SearchSettings
from m3kit.store.filters import and_filters, chunk_ids_filter, distinct_ids, to_filter
from m3kit.store.index_search import dense_query

if TYPE_CHECKING:
    from llamaindex_m3.vector_store import M3VectorStore

__all__ = ["check_mode", "query_budget", "query_hits", "query_settings", "query_text_state"]

_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID)


def query_text_state(text: str | None) -> str | None:
    """What is wrong with ``VectorStoreQuery.query_str`` for a search that encodes it (a blank
    text encodes to an empty sparse vector): ``"is missing"``, ``"is empty (...)"``, or
    ``None`` when it is a text.

    >>> query_text_state("rivers"), query_text_state(None), query_text_state("  ")
    (None, 'is missing', "is empty ('  ')")
    """
    if text is None:
        return "is missing"
    return f"is empty ({text!r})" if is_blank(text) else None


def check_mode(query: VectorStoreQuery, store: str) -> VectorStoreQueryMode:
    """The query's mode, refused unless it is one m3kit's stores run (default, sparse, hybrid).

    Args:
        query: The LlamaIndex query.
        store: The refusing store's class name, for the message.

    Raises:
        NotImplementedError: Another mode (MMR, text search, SVM...), named.
    """
    mode = VectorStoreQueryMode(query.mode)
    if mode not in _MODES:
        names = ", ".join(m.value for m in _MODES)
        raise NotImplementedError(
            f"query mode {mode.value!r} is not supported by {store}; use {names}"
        )
    return mode


def query_hits(store: M3VectorStore, query: VectorStoreQuery, given: dict[str, Any]) -> list[Hit]:
    """The hits of ``query`` (see :meth:`M3VectorStore.query`); ``given``: checked kwargs."""
    index = store.client
    index.check_encoder()  # the store checks its holder's encoder, maybe another index's
    mode = check_mode(query, "M3VectorStore")
    where = _query_filter(query)  # checked before anything is encoded
    heads = index.store.heads
    dense_wanted = mode is not VectorStoreQueryMode.SPARSE
    sparse_wanted = mode is not VectorStoreQueryMode.DEFAULT
    if sparse_wanted and Head.SPARSE not in heads:
        raise ValueError(
            f"{mode.value} mode needs sparse vectors; this collection has none (a dense-only "
            "model): query in default mode"
        )
    settings = query_settings(store, query, mode, given)
    colbert = bool(settings.rerank)
    encode = {Head.SPARSE} if sparse_wanted else set()
    if colbert:
        encode.add(Head.COLBERT)
    if dense_wanted and query.query_embedding is None:
        encode.add(Head.DENSE)
    out = None
    if encode:
        text = query.query_str
        state = query_text_state(text)
        if state is not None or text is None:  # (text None: state "is missing")
            needed = sorted(h.value for h in encode)
            raise ValueError(
                f"{mode.value} mode encodes the query text for {needed}: "
                f"VectorStoreQuery.query_str {state}"
            )
        out = index.encoder.encode([text], heads=sorted(encode), query=True, show_progress=False)
    dense = None
    if dense_wanted and Head.DENSE not in encode:  # LlamaIndex's embedding: checked, unit
        what = "VectorStoreQuery.query_embedding"
        check_origin(query.query_embedding, index.fingerprint, what)
        dense = dense_query(
            query.query_embedding, index.store.schema.dense_dim, "VectorStoreQuery.query_embedding"
        )
    elif dense_wanted and out is not None:
        dense = out.dense
    sparse: SparseVector | None = out.sparse[0] if out is not None and sparse_wanted else None
    cut = index.store.sparse_cut
    if sparse is not None and cut is not None:
        sparse = cut.apply(sparse)  # as the store cuts it: judged empty or not after the cut
    if mode is VectorStoreQueryMode.SPARSE and sparse is not None and len(sparse) == 0:
        return []  # no query token has a weight (the index's sparse cut keeps): nothing matches
    if mode is VectorStoreQueryMode.SPARSE:
        k = query_budget(query, "sparse_top_k") or query.similarity_top_k
    elif mode is VectorStoreQueryMode.HYBRID:
        k = query_budget(query, "hybrid_top_k") or query.similarity_top_k
    else:
        k = query.similarity_top_k
    candidates = settings.candidates
    if (
        mode is VectorStoreQueryMode.HYBRID
        and query.similarity_top_k > k
        and not given.get("candidates")
    ):
        # hybrid_top_k set below it: LlamaIndex's QdrantVectorStore fetches similarity_top_k
        # dense candidates, so a search here fetches no fewer (it was not read at all)
        budget = index.store.query_options.per_retriever(k, candidates)
        candidates = max(budget, query.similarity_top_k)
    return index.store.query(
        dense=dense,
        sparse=sparse,
        colbert=out.colbert[0] if out is not None and colbert else None,
        k=k,
        fusion=settings.fusion,
        rerank=colbert,
        filter=where,
        weights=_m3_weights(query.alpha, mode, colbert, settings),
        candidates=candidates,
    )


def query_budget(query: VectorStoreQuery, name: str) -> int | None:
    """``query.<name>`` (``sparse_top_k`` / ``hybrid_top_k``) where the mode uses it: ``None``
    (the query's ``similarity_top_k`` then) or an int >= 1; a 0 was silently read as unset.

    Raises:
        ValueError: Names the field.
    """
    value = getattr(query, name)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
    ):
        raise ValueError(f"VectorStoreQuery.{name} must be an int >= 1 or None, not {value!r}")
    return None if value is None else int(value)


def query_settings(
    store: M3VectorStore, query: VectorStoreQuery, mode: VectorStoreQueryMode, given: dict[str, Any]
) -> SearchSettings:
    """The query's settings, then the store's fields, then the index's defaults."""

    index = store.client
    heads = index.store.heads
    held = {name: getattr(store, name) for name in SearchSettings.NAMES}
    call = {name: given.get(name) for name in held}
    rerank = call["rerank"] if call["rerank"] is not None else held["rerank"]
    if rerank and Head.COLBERT not in heads:
        raise ValueError("rerank=True needs ColBERT vectors; this collection has none")
    hybrid = mode is VectorStoreQueryMode.HYBRID and Head.COLBERT in heads
    if rerank is None and not hybrid:  # no ColBERT outside hybrid mode: the query decides
        call["rerank"] = False
    if call["candidates"] is None and mode is VectorStoreQueryMode.HYBRID:
        call["candidates"] = query_budget(query, "sparse_top_k")
    # the store's weights are dropped where the query's mode or arguments choose rrf / dbsf
    args = index.layered_settings(call, held)
    if args["rerank"] is None:  # hybrid mode: ColBERT as the index's defaults decide
        args["rerank"] = index.search_settings(**args).reranks(heads)
    settings = index.search_settings(**args)
    if args.get("weights") is None and mode is not VectorStoreQueryMode.HYBRID:
        settings = _one_head_weights(settings, mode)
    return settings


def _one_head_weights(settings: SearchSettings, mode: VectorStoreQueryMode) -> SearchSettings:
    """Default ``m3`` weights (a checkpoint's calibrated fusion, or FlagEmbedding's) that give
    the one head a default or sparse mode query scores with weight 0 (a dense + sparse
    calibration that ranks by sparse alone, ``(0, 1, 0)``) are that head's own score: such a
    query failed with "m3 weights ... give every head this search scores with weight 0",
    though the caller gave no weights. Weights a caller gives are kept (and refused so)."""
    if settings.fusion is not Fusion.M3:
        return settings
    one = 0 if mode is VectorStoreQueryMode.DEFAULT else 1  # the head the mode scores with
    if settings.weights[one] > 0:
        return settings
    weights = [0.0, 0.0, settings.weights[2]]
    weights[one] = 1.0
    return replace(settings, weights=(weights[0], weights[1], weights[2]))


def _query_filter(query: VectorStoreQuery) -> Any:
    """The query's ``filters``, ``doc_ids`` and ``node_ids`` as one store filter (AND).

    An id list is checked (a single string is refused, not read as its characters); an empty
    one restricts nothing, as in LlamaIndex's Qdrant store (``VectorStoreIndex.as_retriever``
    passes ``node_ids=[]`` for a store that keeps the text: every node). ``doc_ids``
    select the nodes of these documents, not a node without a source stored under one of
    these ids (its ``ref_doc_id`` is ``"None"``: :mod:`~llamaindex_m3.sourceless`).
    """
    conditions = [to_filter(to_store_filter(query.filters))]
    doc_ids = _id_list(query.doc_ids, "doc_ids")
    if doc_ids:
        conditions.append(ref_docs_filter(doc_ids))
    node_ids = _id_list(query.node_ids, "node_ids")
    if node_ids:  # the nodes' own ids or chunks' point ids
        conditions.append(chunk_ids_filter(node_ids))
    return and_filters(*conditions)


def _id_list(ids: Any, name: str) -> list[str] | None:
    """``VectorStoreQuery.<name>`` as a list of distinct ids (``None``: not given).

    Raises:
        TypeError: A single string (``"d1"`` was searched as the ids ``d`` and ``1``), or a
            non-string id.
    """
    return None if ids is None else distinct_ids(ids, f"VectorStoreQuery.{name}")


def _m3_weights(
    alpha: float | None, mode: VectorStoreQueryMode, colbert: bool, settings: SearchSettings
) -> tuple[float, float, float] | None:
    """M3 weights ``[dense, sparse, colbert]`` of the query (``None`` for ``rrf`` / ``dbsf``,
    which use none); the store divides them by the sum of those of the heads ``mode`` scores
    with, once, as every ``m3`` search (dividing here too changed their last bit, which
    decides ties at a score's 9th digit).

    Default mode scores by dense (and ColBERT when it reranks), sparse mode by sparse (and
    ColBERT): one head alone scores its own similarity, as in LlamaIndex's Qdrant store. In
    hybrid mode ``alpha`` splits vector (dense + ColBERT, in the weights' proportion) against
    sparse; outside hybrid mode it is not used (as in LlamaIndex's Qdrant store).
    """
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    hybrid = mode is VectorStoreQueryMode.HYBRID
    if alpha is not None and hybrid and settings.fusion is not Fusion.M3:
        raise ValueError(
            f"alpha weighs dense against sparse in M3's weighted sum; this store fuses with "
            f"{settings.fusion.value!r}: build it with fusion='m3' or leave alpha unset"
        )
    if settings.fusion is not Fusion.M3:
        return None  # rank fusion: no weights
    if alpha is not None and hybrid:
        w_dense, _, w_colbert = settings.weights
        vector = w_dense + w_colbert
        share = w_dense / vector if colbert and vector > 0 else 1.0
        settings = replace(settings, weights=(alpha * share, 1.0 - alpha, alpha * (1.0 - share)))
    settings.m3_scoring_weights(  # weights that zero every head this mode scores: refused
        dense=mode is not VectorStoreQueryMode.SPARSE,
        sparse=mode is not VectorStoreQueryMode.DEFAULT,
        colbert=colbert,
    )
    return settings.weights
