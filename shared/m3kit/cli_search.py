"""``m3kit search`` ranking flags and output: what a user tunes and what the search ran with.

- ``--fusion``, ``--weights D S C``, ``--candidates N`` and ``--rerank/--no-rerank`` become the
  arguments of :meth:`m3kit.store.M3Index.search`; a flag left out takes the index's default:
  the model's calibrated fusion (``m3kit_search.json`` beside its weights, see
  :mod:`m3kit.store.fusion_calibration`) when it has one, else FlagEmbedding's published ``m3``
  weights for a BGE-M3-shaped model, else RRF with ColBERT rerank.
- ``--weights`` set the ``m3`` weighted sum: with a fusion that resolves to ``rrf`` or
  ``dbsf`` (``--fusion``, or the index's default) they are an error, not silently unused.
- ``--json`` prints ``{"search": {...}, "hits": [...]}``: the settings the search ran with
  (fusion, weights — only for ``m3``, the one fusion that uses them —, rerank, candidates,
  ``defaults``: where the settings not given came from, ``sparse_cut``: the collection's
  sparse cut or ``null``), then the hits.

Example (shell)::

    m3kit search "late chunking" --collection demo --fusion m3 --weights 0.4 0.2 0.4 \\
        --candidates 200 --json
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.store import Hit, M3Index

__all__ = [
    "FUSIONS",
    "add_ranking_arguments",
    "add_weights_argument",
    "hit_dict",
    "hit_text",
    "ranking",
    "score_threshold",
    "search_report",
]

FUSIONS = ("rrf", "dbsf", "m3")
_SNIPPET_CHARS = 240


def add_weights_argument(parser: Any, help: str) -> None:
    """``--weights DENSE SPARSE COLBERT`` (three floats, default ``None``), the syntax every
    m3kit command that takes m3 weights shares (``search``, ``eval``)."""
    parser.add_argument(
        "--weights",
        nargs=3,
        type=float,
        default=None,
        metavar=("DENSE", "SPARSE", "COLBERT"),
        help=help,
    )


def score_threshold(text: str) -> float:
    """``--score-threshold``: a finite number, refused before any model loads.

    >>> score_threshold("0.5")
    0.5
    """
    from m3kit.store.search_settings import check_score_threshold

    try:
        value = check_score_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}") from None
    assert value is not None
    return value


def add_ranking_arguments(search: argparse.ArgumentParser) -> None:
    """``--fusion``, ``--weights``, ``--candidates`` and ``--rerank/--no-rerank``."""
    group = search.add_argument_group(
        "ranking (default: the model's calibrated fusion, m3kit_search.json; else m3 0.4/0.2/0.4 "
        "for a BGE-M3-shaped model; else rrf with ColBERT rerank)"
    )
    group.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="rrf (rank fusion), dbsf (score fusion) or m3 (weighted M3 score); default: the "
        "model's calibrated fusion, else m3 for a BGE-M3-shaped model, else rrf",
    )
    add_weights_argument(
        group,
        "weights of the m3 fusion (default: the calibrated ones, else 0.4 0.2 0.4); an "
        "error when the fusion is not m3",
    )
    group.add_argument(
        "--candidates",
        type=int,
        default=None,
        metavar="N",
        help="candidates per retriever (dense, sparse) before fusion and rerank, at least k; "
        "more: better recall, slower (default: the calibrated budget, else max(4k, 50))",
    )
    group.add_argument(
        "--rerank",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ColBERT rerank of the fused candidates (default: on when the collection holds "
        "ColBERT vectors, unless the calibration says otherwise)",
    )


def ranking(args: argparse.Namespace) -> dict[str, Any]:
    """``M3Index.search`` keyword arguments of the ranking flags (``None``: not given).

    Raises:
        ValueError: A value :class:`~m3kit.store.SearchSettings` refuses (its message).
    """
    from m3kit.store import SearchSettings

    given = {
        "fusion": args.fusion,
        "weights": None if args.weights is None else tuple(args.weights),
        "rerank": args.rerank,
        "candidates": args.candidates,
    }
    SearchSettings().merged(**given)  # the rules of every entry point, checked before loading
    return given


def search_report(index: M3Index, given: dict[str, Any], k: int) -> dict[str, Any]:
    """What a search of ``k`` hits with the ranking arguments ``given`` runs with (the
    ``"search"`` object).

    ``weights`` is there only for the ``m3`` fusion (``rrf`` and ``dbsf`` do not use them);
    ``rerank`` is whether ColBERT re-scores the candidates; ``candidates`` is what each
    retriever fetches (a budget below ``k``, given or calibrated, is raised to ``k``), ``null``
    the store's rule (``max(4 * k, 50)``); ``defaults`` says where settings not given came from
    (:attr:`~m3kit.store.M3Index.search_source`: ``"calibrated"``, the model's
    ``m3kit_search.json``; ``"bge-m3"``, FlagEmbedding's published weights; ``"built-in"``);
    ``sparse_cut`` is the collection's sparse cut, ``{"top_k": ..., "min_weight": ...}``, that
    every stored and query sparse vector was cut with (``null``: none, every weight kept;
    :mod:`m3kit.store.sparse_cut`).

    Raises:
        ValueError: ``weights`` given while the search fuses with ``rrf`` or ``dbsf``.
    """
    from m3kit.store import Fusion

    settings = index.search_settings(**given)
    cut = index.sparse_cut
    report = {
        **settings.to_dict(),
        "rerank": settings.reranks(index.store.heads),
        "defaults": index.search_source,
        "sparse_cut": cut.to_dict() if cut.cuts else None,
    }
    if settings.candidates is not None:  # as the store fetches them
        report["candidates"] = index.store.query_options.per_retriever(k, settings.candidates)
    if settings.fusion is not Fusion.M3:
        del report["weights"]  # played no part in this search
    return report


def hit_dict(hit: Hit) -> dict[str, Any]:
    """One hit of ``--json``."""
    return {
        "id": hit.id,
        "score": hit.score,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
        "text": hit.text,
        "metadata": hit.metadata,
    }


def hit_text(rank: int, hit: Hit) -> str:
    r"""One hit of the text output: rank, score, document (chunk) and a snippet, control
    characters shown escaped (:func:`shown`).

    >>> from m3kit.store import Hit
    >>> print(hit_text(1, Hit("p", 0.5, "\x1b[31mred\x1b[0m", "a\x1b]0;x\x07.md", 0)))
     1. 0.5000  a\x1b]0;x\x07.md
        \x1b[31mred\x1b[0m
    """
    snippet = " ".join(hit.text.split())
    if len(snippet) > _SNIPPET_CHARS:
        snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
    chunk = f" [chunk {hit.chunk_index}]" if hit.chunk_index else ""
    return f"{rank:>2}. {hit.score:.4f}  {shown(str(hit.doc_id))}{chunk}\n    {shown(snippet)}"


#: Characters a terminal acts on rather than shows: the C0 / C1 controls (escape sequences
#: recolour the text, retitle the window or write the clipboard) and the bidirectional
#: overrides and isolates (which reorder what is shown).
_ACTED_ON = frozenset(
    [*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), *"\u202a\u202b\u202c\u202d\u202e"]
) | frozenset("\u2066\u2067\u2068\u2069")


def shown(text: str) -> str:
    r"""``text`` for a terminal: the characters it would act on (:data:`_ACTED_ON`) written as
    Python escapes; indexed text is often scraped pages or mail.

    >>> shown("caf\u00e9 \u202egnp.exe \x07")
    'café \\u202egnp.exe \\x07'
    """
    if not any(ch in _ACTED_ON for ch in text):
        return text
    return "".join(ch.encode("unicode_escape").decode() if ch in _ACTED_ON else ch for ch in text)
