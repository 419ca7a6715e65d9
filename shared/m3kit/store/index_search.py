"""The search half of :class:`~m3kit.store.M3Index`: default ranking, query plan and search.

Split from :mod:`m3kit.store.index`: :class:`IndexSearch` is a base class of ``M3Index``
holding :meth:`~m3kit.store.M3Index.search_settings`, :meth:`~m3kit.store.M3Index.search`,
:meth:`~m3kit.store.M3Index.search_mean` and :meth:`~m3kit.store.M3Index.asearch`;
``M3Index.__init__`` sets the attributes it reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from m3kit.encoder_inputs import check_query
from m3kit.outputs import Head, SparseVector
from m3kit.store.filters import FilterLike
from m3kit.store.fusion_calibration import FusionCalibration
from m3kit.store.records import Fusion, Hit
from m3kit.store.search_overrides import SearchOverrides
from m3kit.store.search_settings import (
    BGE_M3_PUBLISHED,
    SearchSettings,
    check_count,
    check_score_threshold,
    is_bge_m3_architecture,
)

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.store import M3Store

__all__ = ["IndexSearch", "dense_query"]

logger = logging.getLogger(__name__)


class IndexSearch:
    """The search methods of :class:`~m3kit.store.M3Index` (its base; ``M3Index`` sets these).

    Attributes:
        encoder: Encodes the queries.
        store: Runs the queries.
        calibration: The checkpoint's own search calibration (``None``: none for its weights).
        search_source: Where the search defaults come from (see ``M3Index``).
    """

    encoder: M3Encoder
    store: M3Store
    calibration: FusionCalibration | None
    search_source: str
    _search: SearchSettings | SearchOverrides | None
    fingerprint: EncoderFingerprint
    _announces: ClassVar[bool]

    if TYPE_CHECKING:  # defined by M3Index

        def check_encoder(self) -> None: ...

    def _settle_search_defaults(self, search: SearchSettings | SearchOverrides | None) -> None:
        """Set :attr:`calibration`, :attr:`search_source` and the ``search=`` defaults (at
        open), refusing an override the defaults cannot take."""
        info = getattr(self.encoder, "info", None)
        #: The checkpoint's own search calibration (``None``: it has none for this encoder:
        #: these weights loaded with these settings).
        self.calibration = FusionCalibration.for_encoder(
            getattr(info, "path", None), self.fingerprint
        )
        if search is not None and not isinstance(search, (SearchSettings, SearchOverrides)):
            raise TypeError(
                f"search must be a SearchSettings or SearchOverrides, not {type(search).__name__}"
            )
        self._search = search
        #: Where the search defaults come from: ``"given"`` (``search=``), ``"calibrated"``
        #: (the checkpoint's ``m3kit_search.json``), ``"bge-m3"`` (FlagEmbedding's published
        #: weights for a BGE-M3-shaped model) or ``"built-in"`` (RRF + ColBERT rerank).
        self.search_source = (
            "given"
            if isinstance(search, SearchSettings)
            else "calibrated"
            if self.calibration is not None
            else "bge-m3"
            if is_bge_m3_architecture(self.encoder)
            else "built-in"
        )
        given = f", {search.describe()} given" if isinstance(search, SearchOverrides) else ""
        defaults = self.search_settings()  # (an override it cannot take: refused here)
        if self._announces:
            logger.info(
                "search defaults (%s%s): %s", self.search_source, given, defaults.describe()
            )
        if isinstance(search, SearchOverrides) and {Head.SPARSE, Head.COLBERT} <= self.store.heads:
            # ... and the dense + sparse group a search without rerank takes (its calibrated
            # fusion may be another): refused here, not at the first such search
            self.search_settings(rerank=False)

    def search_settings(
        self,
        *,
        fusion: Fusion | str | None = None,
        weights: Sequence[float] | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
    ) -> SearchSettings:
        """The ranking a :meth:`search` with these arguments uses (``None``: the default).

        Defaults come from ``search=`` at open (a ``SearchOverrides`` changing only what it
        names in what follows), else from the checkpoint's calibration for
        what this collection holds (and the rerank choice), else — for a BGE-M3-shaped model
        — FlagEmbedding's published weights (``m3``, 0.4 / 0.2 / 0.4), else RRF with ColBERT
        rerank (:attr:`search_source` says which).

        ``weights`` set the ``m3`` weighted sum only: given (not ``None``) with a fusion that
        resolves to another (given, or the default), they would play no part, so it is an
        error rather than a silent no-op. Defaults from ``search=`` or a calibration are not
        "given": their weights simply go unused by ``rrf`` / ``dbsf``.

        Raises:
            ValueError: A bad setting (see :class:`~m3kit.store.SearchSettings`), or
                ``weights`` given while the search fuses with ``rrf`` or ``dbsf``.
        """
        given = self._search
        base = given if isinstance(given, SearchSettings) else None
        if base is None and self.calibration is not None:
            # the rerank choice picks the calibrated group (all heads, or dense + sparse)
            wanted = rerank
            if wanted is None and isinstance(given, SearchOverrides):
                wanted = given.rerank
            base = self.calibration.settings_for(self.store.heads, wanted)
        elif base is None and self.search_source == "bge-m3" and Head.SPARSE in self.store.heads:
            base = BGE_M3_PUBLISHED
        base = base or SearchSettings()
        if isinstance(given, SearchOverrides):
            base = given.over(base)
        merged = base.merged(fusion=fusion, weights=weights, rerank=rerank, candidates=candidates)
        if weights is not None and merged.fusion is not Fusion.M3:
            chosen = "given" if fusion is not None else f"the index's default, {self.search_source}"
            raise ValueError(
                f"weights {list(merged.weights)} set the m3 weighted sum, but this search fuses "
                f"with {merged.fusion.value!r} ({chosen}), which does not use them: pass "
                "fusion='m3' (m3kit search: --fusion m3) or leave weights unset"
            )
        return merged

    def layered_settings(self, call: Mapping[str, Any], held: Mapping[str, Any]) -> dict[str, Any]:
        """A search's ``fusion`` / ``weights`` / ``rerank`` / ``candidates`` for :meth:`search`:
        a call's values, else those an object holds (a retriever's or vector store's fields).

        Weights the object holds are left out when the call's own ``fusion`` or ``rerank``
        makes the search fuse with ``rrf`` / ``dbsf``: the call chose a ranking that does not
        use them (``M3Retriever(fusion="m3", weights=w).invoke(q, fusion="rrf")``). Weights
        the call gives, or held ones that the object's own fusion (or the index's default)
        never uses, are an error (:meth:`search_settings`).

        The result is checked where it is used: :meth:`search_settings` (which :meth:`search`
        calls before encoding the query) raises for it.

        Raises:
            ValueError: A bad ``fusion`` or ``rerank`` (checked when they decide whether held
                weights are left out).
        """
        args = {
            n: call[n] if call.get(n) is not None else held.get(n) for n in SearchSettings.NAMES
        }
        overridden = call.get("fusion") is not None or call.get("rerank") is not None
        if call.get("weights") is None and args["weights"] is not None and overridden:
            chosen = self.search_settings(fusion=args["fusion"], rerank=args["rerank"])
            if chosen.fusion is not Fusion.M3:
                args["weights"] = None
        return args

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        fusion: Fusion | str | None = None,
        filter: FilterLike | None = None,
        score_threshold: float | None = None,
        rerank: bool | None = None,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> list[Hit]:
        """Encode the query with every head the store holds and run a hybrid search.

        Arguments left ``None`` take the index's defaults (:meth:`search_settings`).

        Args:
            query: The query text (the encoder's query instruction is added).
            k: Number of hits.
            fusion: ``rrf``, ``dbsf`` or ``m3``.
            filter: Metadata mapping or ``qdrant_client.models.Filter``.
            score_threshold: Minimum final score.
            rerank: ColBERT rerank (default: on when the store holds ColBERT vectors).
            weights: ``[dense, sparse, colbert]`` of the ``m3`` fusion (an error with a
                fusion that resolves to ``rrf`` or ``dbsf``).
            candidates: Candidates per retriever before fusion and rerank.

        Raises:
            TypeError: ``query`` is not a str.
            ValueError: ``query`` is empty or whitespace-only (it would encode to an empty
                sparse vector, which matches nothing); ``k`` or ``candidates`` is not an
                int >= 1 (``True`` is refused, not taken as 1); ``score_threshold`` is not a
                finite number (NaN kept no hit; ``True`` is refused); ``rerank=True`` without
                ColBERT vectors, or a bad ranking setting (:meth:`search_settings`).
            FingerprintMismatchError: Another encoder's index took the store over, or this
                index's encoder changed in memory (:meth:`~m3kit.store.M3Index.check_encoder`):
                nothing was searched.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_query(query)
        return self.search_mean(
            [query],
            k=k,
            fusion=fusion,
            filter=filter,
            score_threshold=score_threshold,
            rerank=rerank,
            weights=weights,
            candidates=candidates,
        )

    def search_mean(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        fusion: Fusion | str | None = None,
        filter: FilterLike | None = None,
        score_threshold: float | None = None,
        rerank: bool | None = None,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
        dense: Any = None,
    ) -> list[Hit]:
        """One search whose query vectors are the mean of several query texts' (arguments as
        :meth:`search`).

        LlamaIndex's vector retriever averages the embeddings of several texts (HyDE's
        hypothetical document and the query) into one query; here every head does: dense the
        normalised mean (Qdrant's cosine normalises a plain mean the same way), sparse the
        mean weights (its score is the mean of the texts' sparse scores; with a sparse cut,
        the mean of the uncut weights is cut, as one query's are), ColBERT the texts'
        tokens together (MaxSim averaged over all of them: the token-weighted mean of the
        texts' ColBERT scores). Scores are on the scale of a one-text search with the same
        settings, so ``score_threshold`` means the same for one text or several; one text is
        exactly :meth:`search`.

        ``dense`` (a caller's precomputed query embedding, e.g. LlamaIndex's
        ``QueryBundle.embedding``) is the dense query instead of the texts' (normalised, as
        Qdrant's cosine does); the texts then give only the sparse and ColBERT vectors.

        Raises:
            TypeError: ``queries`` is a str or holds a non-str.
            ValueError: No query; a blank query text that would be encoded (every one, unless
                ``dense`` is given to a dense-only collection); ``dense`` is not a vector of
                the collection's dense size, or is all zeros; or as :meth:`search`.
        """
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a sequence of str (search() takes one str)")
        if not queries:
            raise ValueError("search_mean needs at least one query")
        check_count("k", k)  # before anything is encoded
        check_score_threshold(score_threshold)
        self.check_encoder()  # (the store checks its holder's encoder: maybe another index's)
        texts = list(queries)
        heads = self.store.heads
        if rerank and Head.COLBERT not in heads:
            raise ValueError("rerank=True needs ColBERT vectors; this store has none")
        settings = self.search_settings(
            fusion=fusion, weights=weights, rerank=rerank, candidates=candidates
        )
        use_colbert = settings.reranks(heads)
        wanted = heads if use_colbert else heads - {Head.COLBERT}
        given = None if dense is None else dense_query(dense, self.store.schema.dense_dim)
        if given is not None:
            wanted = wanted - {Head.DENSE}
        if wanted:  # the texts are encoded: a blank one would search by noise
            for i, text in enumerate(texts):
                check_query(text, "the query" if len(texts) == 1 else f"queries[{i}]")
        out = (
            self.encoder.encode(texts, heads=sorted(wanted), query=True, show_progress=False)
            if wanted  # none: a dense-only collection searched with the caller's vector
            else None
        )
        if given is None and out is not None:
            given = out.dense[0] if len(texts) == 1 else _mean_dense(out.dense)
        sparse = colbert = None
        if out is not None and Head.SPARSE in wanted:
            sparse = out.sparse[0] if len(texts) == 1 else _mean_sparse(out.sparse)
        if out is not None and use_colbert:
            colbert = out.colbert[0] if len(texts) == 1 else np.concatenate(out.colbert)
        return self.store.query(
            dense=given,
            sparse=sparse,
            colbert=colbert,
            k=k,
            fusion=settings.fusion,
            rerank=use_colbert,
            filter=filter,
            score_threshold=score_threshold,
            weights=settings.weights if settings.fusion is Fusion.M3 else None,
            candidates=settings.candidates,
        )

    async def asearch(
        self,
        query: str,
        *,
        k: int = 10,
        fusion: Fusion | str | None = None,
        filter: FilterLike | None = None,
        score_threshold: float | None = None,
        rerank: bool | None = None,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> list[Hit]:
        """:meth:`search` in a worker thread."""
        return await asyncio.to_thread(
            self.search,
            query,
            k=k,
            fusion=fusion,
            filter=filter,
            score_threshold=score_threshold,
            rerank=rerank,
            weights=weights,
            candidates=candidates,
        )


def dense_query(dense: Any, size: int, what: str = "the dense query embedding") -> Any:
    """A caller's dense query vector, checked against the collection's size and normalised.

    Args:
        dense: The vector (a list of floats or an array).
        size: The collection's dense size.
        what: What the vector is, for messages (e.g. ``"QueryBundle.embedding"``).

    Raises:
        ValueError: Not a 1-D vector of ``size`` numbers, or all zeros (or not finite).
    """
    vector = np.asarray(dense, dtype=np.float64)
    if vector.ndim != 1 or vector.shape[0] != size:
        got = vector.shape[0] if vector.ndim == 1 else f"shape {vector.shape}"
        raise ValueError(
            f"{what} has {got} dimensions; this collection's dense vectors have {size}: "
            "embed the query with the collection's model"
        )
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"{what} is all zeros (or not finite): it has no direction to search")
    return (vector / norm).astype(np.float32)


def _mean_dense(vectors: Any) -> Any:
    """The normalised mean of unit dense vectors (float32)."""
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def _mean_sparse(vectors: Sequence[SparseVector]) -> SparseVector:
    """The mean of sparse vectors (a token a vector lacks weighs 0 there)."""
    indices = np.concatenate([v.indices for v in vectors])
    values = np.concatenate([v.values for v in vectors]).astype(np.float64) / len(vectors)
    ids, where = np.unique(indices, return_inverse=True)
    sums = np.zeros(len(ids), dtype=np.float64)
    np.add.at(sums, where, values)
    return SparseVector(ids, sums.astype(np.float32))
