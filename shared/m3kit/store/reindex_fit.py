"""Redoing stored chunkings with a reindex's encoder: the chunkers, and whether chunks fit.

Split from :mod:`m3kit.store.reindex`. :func:`check_fit` runs on a pass's documents before
the pass writes anything: a stored chunking the new encoder cannot redo (a late chunking's
``window`` past its ``max_length``; a naive chunk, or a late chunk with heads encoded from the
chunk alone, longer than its window) is refused up front, by the chunkers' own rules
(their constructors and ``oversized``, tokenising only), instead of failing part-way through
the rewrite. Whole documents are not refused: one longer than the window is cut with a
warning naming it, as :meth:`~m3kit.store.M3Index.add_texts` cuts it; nor are framework nodes
(``{"kind": "nodes"}``): one longer than the window is cut with a warning naming it, as the
LlamaIndex writers cut a node (:mod:`m3kit.store.reindex_nodes`).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.store.index import M3Index
    from m3kit.store.reindex import DocPlan

__all__ = ["Chunkers", "StoredSpans", "check_fit", "chunking_key", "rounds", "stored_chunker"]

#: Texts tokenised per call of a chunker's ``oversized`` (bounds the encodings held at once).
_TOKENISE_BATCH = 256
#: Chunkings never refused: a text longer than the window is cut with a warning, as their
#: writers cut it (a whole document, a framework node).
_CUT_WITH_A_WARNING = (("whole",), ("nodes",))
#: Refused documents (or groups of them) named in the error.
_LISTED = 5


class StoredSpans:
    """A splitter giving each document its stored spans (looked up by text)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def __call__(self, text: str) -> list[tuple[int, int]]:
        return self.spans[text]


#: The chunker of each stored chunking (:func:`chunking_key`) and the spans it cuts.
Chunkers = dict[tuple[Any, ...], tuple[Any, StoredSpans]]


def chunking_key(plan: DocPlan) -> tuple[Any, ...]:
    """What decides how a stored document is chunked again: ``("whole",)``, ``("naive",)``,
    ``("nodes",)`` or the late chunking's stored settings."""
    c = plan.chunking or {}
    if c.get("kind") != "late":
        return (str(c.get("kind")),)  # whole, naive or nodes (others are refused up front)
    heads = c.get("late_heads")
    return (
        "late",
        c.get("window"),
        c.get("overlap"),
        c.get("dense_pooling", "mean"),
        c.get("placement", "chunks"),  # recorded since issue #19; before: chunks
        None if heads is None else tuple(heads),
    )


def rounds(plans: Sequence[DocPlan]) -> list[list[DocPlan]]:
    """The documents in calls of one chunker: two with the same text but other spans go
    through separate calls (its splitter looks the spans up by text). Linear in the
    documents (a call's spans are looked up by text), since a reindex pass checks all of a
    collection's documents at once."""
    out: list[list[DocPlan]] = []
    spans_of: list[dict[str, list[tuple[int, int]]]] = []  # per call: text -> its spans
    for p in plans:
        spans = p.spans()
        for batch, seen in zip(out, spans_of, strict=True):
            if seen.get(p.text, spans) == spans:
                batch.append(p)
                seen[p.text] = spans
                break
        else:
            out.append([p])
            spans_of.append({p.text: spans})
    return out


def stored_chunker(
    index: M3Index, key: tuple[Any, ...], chunkers: Chunkers
) -> tuple[Any, StoredSpans]:
    """The chunker of a stored chunking on ``index``'s encoder (made once, kept in
    ``chunkers``) and the splitter whose spans it cuts.

    Raises:
        ValueError: The chunker refuses these settings with this encoder (e.g. a late
            chunking's ``window`` past the encoder's ``max_length``).
    """
    if key not in chunkers:
        lookup = StoredSpans()
        chunkers[key] = (_chunker(index, key, lookup), lookup)
    return chunkers[key]


def _chunker(index: M3Index, key: tuple[Any, ...], lookup: StoredSpans) -> Any:
    """A chunker of the stored kind and settings that cuts each text at its stored spans."""
    if key[0] == "naive":  # m3kit.chunking.NaiveChunker
        return importlib.import_module("m3kit.chunking").NaiveChunker(
            index.encoder, splitter=lookup
        )
    from m3kit.late_chunking import LateChunker

    _, window, overlap, pooling, placement, heads = key
    return LateChunker(
        index.encoder,
        splitter=lookup,
        window=window,
        overlap=overlap,
        # before issue #19 every head was late but dense with dense_pooling="naive"
        dense_pooling=pooling if heads is None else None,
        late_heads=heads,
        placement=placement,
    )


def check_fit(
    index: M3Index, plans: Sequence[DocPlan], chunkers: Chunkers, *, started: bool
) -> None:
    """Refuse, before a reindex pass writes, documents whose stored chunks ``index``'s
    encoder cannot take (see the module's docstring); ``started``: earlier passes, or an
    interrupted reindex, wrote.

    Raises:
        ValueError: One error naming up to five of them (chunk, tokens and the model's
            capacity, or the chunker's refusal) and how many there are.
    """
    by_key: dict[tuple[Any, ...], list[DocPlan]] = defaultdict(list)
    for p in plans:
        by_key[chunking_key(p)].append(p)
    refused: list[tuple[list[str], str]] = []
    for key, group in by_key.items():
        if key not in _CUT_WITH_A_WARNING:
            refused.extend(_unfit(index, key, group, chunkers))
    if refused:
        raise ValueError(_message(index, refused, started))


def _unfit(
    index: M3Index, key: tuple[Any, ...], group: Sequence[DocPlan], chunkers: Chunkers
) -> list[tuple[list[str], str]]:
    """``(document ids, why)`` of the documents of one chunking that do not fit."""
    try:
        chunker, lookup = stored_chunker(index, key, chunkers)
    except ValueError as exc:  # its reason, without its advice (the error gives its own)
        reason = str(exc).split("; ")[0]
        return [([p.doc_id for p in group], f"{_describe(key)}: {reason}")]
    out: list[tuple[list[str], str]] = []
    for batch in rounds(group):
        lookup.spans = {p.text: p.spans() for p in batch}
        for at in range(0, len(batch), _TOKENISE_BATCH):
            part = batch[at : at + _TOKENISE_BATCH]
            for p, over in zip(part, chunker.oversized([p.text for p in part]), strict=True):
                if over:
                    out.append(([p.doc_id], _too_long(chunker, over, len(p.chunks))))
    return out


def _describe(key: tuple[Any, ...]) -> str:
    if key[0] != "late":
        return f"{key[0]} chunks"
    return f"late chunks (window={key[1]}, overlap={key[2]})"


def _too_long(chunker: Any, over: list[tuple[int, int]], chunks: int) -> str:
    from m3kit.chunking import text_capacity

    (i, n), *_ = over
    why = f"chunk {i} is {n} tokens, more than the model's {text_capacity(chunker.encoder)}"
    if len(over) > 1:
        why += f" ({len(over)} of its {chunks} chunks are too long)"
    alone = getattr(chunker, "naive_heads", None)  # a LateChunker's heads encoded alone
    if alone is not None:
        why += f"; its {', '.join(sorted(h.value for h in alone))} vectors are encoded alone"
    return why


def _message(index: M3Index, refused: list[tuple[list[str], str]], started: bool) -> str:
    count = sum(len(ids) for ids, _ in refused)
    listed = "; ".join(f"{_names(ids)}: {why}" for ids, why in refused[:_LISTED])
    if len(refused) > _LISTED:
        listed += f"; and {sum(len(ids) for ids, _ in refused[_LISTED:])} more document(s)"
    done = (
        "The documents re-encoded so far are kept and the reindex stays pending"
        if started
        else "Nothing was written"
    )
    return (
        f"reindex cannot re-encode {count} stored document(s) with this encoder "
        f"(max_length={index.encoder.max_length}): their chunks do not fit its window. "
        f"{listed}. {done}. Load the new encoder with a larger max_length (up to what the "
        "checkpoint allows), or index the documents into a new collection with smaller chunks"
    )


def _names(ids: list[str]) -> str:
    shown = ", ".join(repr(d) for d in ids[:3])
    return shown if len(ids) <= 3 else f"{shown} and {len(ids) - 3} more"
