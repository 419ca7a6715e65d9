"""What goes into an encoder's forward passes: texts checked, tokenised, batched, padded.

:class:`~m3kit.encoder.M3Encoder` and :class:`~m3kit.distributed.EncoderPool` both turn texts
into token ids with :func:`texts_to_input_ids` and group them into forward passes with
:func:`plan_batches`, so a pool's batches hold the same texts as a single process's.

>>> plan_batches([3, 9, 5, 9], batch_size=2, max_batch_tokens=100)
[[1, 3], [2, 0]]
>>> plan_batches([3, 9, 5, 9], batch_size=8, max_batch_tokens=20)
[[1, 3], [2, 0]]
>>> ids, mask = pad_batch([[5, 6, 7], [5]], pad_id=1)
>>> ids.tolist(), mask.tolist()
([[5, 6, 7], [5, 1, 1]], [[1, 1, 1], [1, 0, 0]])
"""

from __future__ import annotations

import enum
import logging
import numbers
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from m3kit.chunk_spans import is_blank
from m3kit.errors import CheckpointError, HeadNotAvailableError, TruncationError
from m3kit.outputs import Head

if TYPE_CHECKING:
    from m3kit.checkpoint import CheckpointInfo

__all__ = [
    "TokenizedText",
    "Truncation",
    "check_heads",
    "check_input_ids",
    "check_model_input_ids",
    "check_query",
    "check_text",
    "check_texts",
    "check_truncation",
    "checked_sizes",
    "embedding_rows",
    "load_tokenizer",
    "pad_batch",
    "plan_batches",
    "position_rows",
    "special_token_ids",
    "texts_to_input_ids",
    "tokenize_texts",
    "unpaired_surrogate",
    "whole_number",
]

logger = logging.getLogger(__name__)

_Q = TypeVar("_Q")


class Truncation(str, enum.Enum):
    """What to do with a text longer than ``max_length`` tokens."""

    WARN = "warn"  # truncate and log a warning
    ERROR = "error"  # raise TruncationError


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of one text (special tokens included) and whether it was truncated."""

    input_ids: list[int]
    truncated: bool


class _Tokenizes(Protocol):
    """What :func:`texts_to_input_ids` needs of an encoder."""

    query_instruction: str | None

    @property
    def available_heads(self) -> frozenset[Head]: ...

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = ...,
        truncation: Truncation | str = ...,
    ) -> list[TokenizedText]: ...


def unpaired_surrogate(text: str) -> int | None:
    """The position of the first unpaired surrogate in ``text`` (not UTF-8 text), or ``None``.

    >>> unpaired_surrogate("naïve café"), unpaired_surrogate("bad " + chr(0xD83D))
    (None, 4)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return int(exc.start)
    return None


def check_query(query: _Q, what: str = "the query") -> _Q:
    """``query``, refused when it is an empty or whitespace-only str (another type is left to
    the caller, which refuses it).

    Every entry point that encodes a query text for a search or a rerank runs it: the core
    (:meth:`~m3kit.store.M3Index.search` and its kin, :class:`~m3kit.rerank.M3Reranker`,
    ``m3kit search``) and the LangChain / LlamaIndex adapters.

    Args:
        query: The query.
        what: What it is, for the message (e.g. ``"queries[2]"``).

    Raises:
        ValueError: A blank query: it encodes to an empty sparse vector, which matches
            nothing, and a dense one that says nothing, so the search would quietly rank by
            noise.
    """
    # zero-width spaces and BOMs too: "\u200b" tokenises as "" does (chunk_spans.is_blank)
    if isinstance(query, str) and is_blank(query):
        raise ValueError(
            f"{what} is empty ({query!r}): M3 encodes it for the search, and a blank text "
            "gives an empty sparse vector (which matches nothing) and a dense vector that says "
            "nothing; give a query text"
        )
    return query


def check_texts(texts: Sequence[str], *, method: str = "encode") -> list[str]:
    """``texts`` as a list, or an error naming ``method()`` and the bad position.

    Raises:
        TypeError: ``texts`` is a single string, bytes or no iterable, or holds a non-string.
        ValueError: A text holds an unpaired surrogate (half of an emoji from a bad decode):
            the tokenizer would fail with "TextInputSequence must be str", naming nothing.
    """
    if isinstance(texts, str):
        raise TypeError(f"{method}() takes a list of texts; wrap a single text as [text]")
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"{method}() takes a list of texts (str), not bytes; decode them first")
    try:
        out = list(texts)
    except TypeError:
        raise TypeError(f"{method}() takes a list of texts, not {type(texts).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        at = unpaired_surrogate(t)
        if at is not None:
            raise ValueError(
                f"{method}(): texts[{i}] is not valid UTF-8 text (an unpaired surrogate at "
                f"character {at}); decode the source with errors='replace' or fix it"
            )
    return out


def check_text(text: object, *, method: str) -> str:
    """``text``, or an error naming ``method()`` when it is no str (a method taking one text).

    Raises:
        TypeError: ``text`` is not a str (a list, ``None``): encoded as ``[text]``, it would
            be named ``texts[0]``, a batch position the caller never gave.
    """
    if not isinstance(text, str):
        raise TypeError(f"{method}() takes one text (a str), not {type(text).__name__}")
    return text


def texts_to_input_ids(
    encoder: _Tokenizes,
    texts: Sequence[str],
    *,
    heads: Sequence[Head | str] | Head | str | frozenset[Head] | None,
    query: bool,
    max_length: int | None,
    truncation: Truncation | str,
) -> tuple[frozenset[Head], list[list[int]]]:
    """What ``encode`` does before the forward passes: check, prefix queries, tokenise.

    Args:
        encoder: Tokenises (an :class:`~m3kit.encoder.M3Encoder`).
        texts: The texts (a list; a single ``str`` is refused).
        heads: Heads asked for (default: all the encoder has); checked before tokenising.
        query: Prefix the encoder's query instruction, if it has one.
        max_length: Truncate longer texts to this many tokens.
        truncation: ``"warn"`` (truncate and log) or ``"error"`` (raise).

    Returns:
        The heads to compute and the token ids per text (special tokens included).

    Raises:
        TypeError: ``texts`` is a string or holds a non-string.
        HeadNotAvailableError: A head the encoder does not have was asked for.
        TruncationError: A text is too long and ``truncation`` is ``"error"``.
    """
    texts = check_texts(texts)
    wanted = check_heads(encoder.available_heads, heads)
    if query and encoder.query_instruction:
        texts = [encoder.query_instruction + t for t in texts]
    tokens = encoder.tokenize(texts, max_length=max_length, truncation=truncation)
    return wanted, [t.input_ids for t in tokens]


def check_heads(
    available: frozenset[Head],
    heads: Sequence[Head | str] | Head | str | frozenset[Head] | None,
) -> frozenset[Head]:
    """The heads asked for (default: ``available``), or an error naming a missing one."""
    wanted = available if heads is None else Head.parse(heads)
    missing = wanted - available
    if missing:
        names = ", ".join(sorted(h.value for h in missing))
        raise HeadNotAvailableError(
            f"this checkpoint is dense-only and has no {names} head "
            f"(colbert_linear.pt / sparse_linear.pt missing); ask for heads=['dense']"
        )
    return wanted


def embedding_rows(model: object) -> int | None:
    """How many token ids ``model``'s input embedding has (``None`` when it does not say)."""
    try:
        rows = model.backbone.get_input_embeddings().num_embeddings  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return None
    return int(rows)


def position_rows(model: object) -> int | None:
    """The longest token sequence ``model``'s position-embedding table holds (``None``: it
    has no such table, e.g. rotary positions, or does not say). RoBERTa-style tables (XLM-R,
    RoBERTa, its variants) start positions after their padding index: the rows up to it are
    not usable."""
    backbone = getattr(model, "backbone", None)
    table = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    rows = getattr(table, "num_embeddings", None)
    if not isinstance(rows, int):
        return None
    padding = getattr(table, "padding_idx", None)
    return rows - (padding + 1 if isinstance(padding, int) else 0)


def checked_sizes(
    model: object, max_length: int | None, batch_size: int, max_batch_tokens: int
) -> int:
    """An encoder's ``max_length`` (default: the model's position table, 8192 where it names none: a
    default of 8192 over a 512-position model failed every longer text, where truncation was
    promised), with the batch sizes checked."""
    positions = position_rows(model)
    if max_length is None:
        max_length = positions or 8192
    for name, value in (
        ("max_length", max_length),
        ("batch_size", batch_size),
        ("max_batch_tokens", max_batch_tokens),
    ):
        whole_number(name, value)
    if max_length < 2:
        raise ValueError("max_length must be at least 2 (the special tokens)")
    if positions is not None and max_length > positions:
        raise ValueError(
            f"max_length={max_length} is longer than this model's {positions} positions; "
            f"give at most {positions}"
        )
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError("batch_size and max_batch_tokens must be positive")
    return max_length


def check_model_input_ids(model: object, input_ids: Sequence[Sequence[int]]) -> None:
    """:func:`check_input_ids` against ``model``'s vocabulary (:func:`embedding_rows`) and
    position table (:func:`position_rows`)."""
    check_input_ids(input_ids, embedding_rows(model), position_rows(model))


def check_input_ids(
    input_ids: Sequence[Sequence[int]], vocab_size: int | None, positions: int | None = None
) -> None:
    """Refuse token ids no forward pass can take: an empty sequence, one longer than
    ``positions`` (the model's position embeddings, :func:`position_rows`), values that are
    not integers (``5.7`` would be cast to token 5), or an id outside ``[0, vocab_size)`` (the
    model's embedding rows, :func:`embedding_rows`).

    >>> check_input_ids([[0, 7, 2]], 10)
    >>> check_input_ids([[0, 7, 2], [0, 12, 2]], 10)
    Traceback (most recent call last):
    ...
    ValueError: input_ids[1] holds token id 12, outside the vocabulary [0, 10) of this model
    >>> check_input_ids([[0, 7, 7, 7, 2]], 10, positions=4)
    Traceback (most recent call last):
    ...
    ValueError: input_ids[0] holds 5 tokens, more than the 4 this model's positions hold

    Raises:
        TypeError: ``input_ids`` is not a list of token-id lists (a flat list of ids, one
            text's, or ``None``).
        ValueError: Naming the first bad sequence.
    """
    # (a list of lists, a 2-D numpy array or torch tensor: anything with rows of a length)
    if isinstance(input_ids, (str, bytes, Mapping)) or not hasattr(input_ids, "__len__"):
        raise TypeError(
            f"input_ids must be a list of token-id lists, one per text; got "
            f"{type(input_ids).__name__}"
        )
    for i, seq in enumerate(input_ids):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise TypeError(
                f"input_ids[{i}] is {type(seq).__name__}, not a list of token ids: give one "
                "list per text (wrap one text's ids as [ids])"
            )
        if len(seq) == 0:
            raise ValueError(
                f"input_ids[{i}] is empty: a tokenised text holds at least its special tokens"
            )
        if positions is not None and len(seq) > positions:
            raise ValueError(
                f"input_ids[{i}] holds {len(seq)} tokens, more than the {positions} this "
                "model's positions hold"
            )
        _check_integer_ids(i, seq)
        if vocab_size is None:
            continue
        lo, hi = min(seq), max(seq)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"input_ids[{i}] holds token id {lo if lo < 0 else hi}, outside the vocabulary "
                f"[0, {vocab_size}) of this model"
            )


def _check_integer_ids(i: int, seq: Sequence[int]) -> None:
    """Refuse ``input_ids[i]`` when its values are not integers (floats, NaN, bools).

    Raises:
        ValueError: Names the sequence and the type of its values.
    """
    kind = np.asarray(seq).dtype
    if kind.kind not in "iu":
        raise ValueError(
            f"input_ids[{i}] holds {kind} values, not integer token ids: the batch would cast "
            "them to ints (5.7 to token 5); give the tokenizer's ids as ints"
        )


def tokenize_texts(
    tokenizer: object,
    texts: list[str],
    *,
    limit: int,
    truncation: Truncation | str,
    lock: threading.Lock,
) -> list[TokenizedText]:
    """Token ids per text, truncated to ``limit`` tokens (special tokens included).

    ``lock`` serialises calls into the (not thread-safe) fast tokenizer.

    Raises:
        ValueError: ``truncation`` is neither ``"warn"`` nor ``"error"`` (checked first, not
            only once a text is too long).
        TruncationError: A text is too long and ``truncation`` is ``"error"``.
    """
    mode = check_truncation(truncation)
    if not texts:
        return []
    with lock:
        enc = tokenizer(  # type: ignore[operator]
            list(texts),
            truncation=True,
            max_length=limit,
            return_overflowing_tokens=True,
            return_attention_mask=False,
        )
    out: list[TokenizedText | None] = [None] * len(texts)
    mapping = enc.get("overflow_to_sample_mapping") or list(range(len(texts)))
    for row, sample in enumerate(mapping):
        first = out[sample]
        if first is None:
            out[sample] = TokenizedText(list(enc["input_ids"][row]), truncated=False)
        else:  # an overflow row: the text was longer than the limit
            out[sample] = TokenizedText(first.input_ids, truncated=True)
    result = [t for t in out if t is not None]
    truncated = [i for i, t in enumerate(result) if t.truncated]
    if truncated:
        if mode is Truncation.ERROR:
            raise TruncationError(
                f"text(s) at position(s) {truncated[:10]} exceed max_length={limit} tokens"
            )
        logger.warning(
            "%d text(s) longer than %d tokens were truncated (positions %s)",
            len(truncated),
            limit,
            truncated[:10],
        )
    return result


def check_truncation(truncation: object) -> Truncation:
    """``truncation`` as a :class:`Truncation`, or an error naming the choices.

    Raises:
        ValueError: Neither ``"warn"`` nor ``"error"``.
    """
    try:
        return Truncation(truncation)
    except ValueError:
        raise ValueError(f"truncation must be 'warn' or 'error', not {truncation!r}") from None


def special_token_ids(tokenizer: object) -> tuple[np.ndarray, int]:
    """(sorted ids of the special tokens, which sparse vectors drop; the padding id)."""
    special = {
        getattr(tokenizer, f"{n}_token_id", None)
        for n in ("cls", "eos", "pad", "unk", "bos", "sep")
    }
    unused = np.array(sorted(i for i in special if i is not None), dtype=np.int64)
    return unused, int(getattr(tokenizer, "pad_token_id", 0) or 0)


def plan_batches(
    lengths: Sequence[int], *, batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Group sequences into forward passes: longest first, so each batch pads little.

    A batch holds at most ``batch_size`` sequences and at most ``max_batch_tokens`` padded
    tokens (its longest length times its size); a sequence longer than the budget runs alone.
    Equal lengths keep their input order. Returns indices into ``lengths``, every index once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= batch_size or longest * (len(batch) + 1) > max_batch_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def pad_batch(batch_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 ``[b, longest]``, right-padded with ``pad_id``."""
    width = max(len(ids) for ids in batch_ids)
    ids = np.full((len(batch_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch_ids), width), dtype=np.int64)
    for row, seq in enumerate(batch_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def load_tokenizer(info: CheckpointInfo, *, trust_remote_code: bool) -> object:
    """The checkpoint's fast tokenizer (m3kit needs its character offsets).

    Raises:
        CheckpointError: It cannot be loaded, or it is not a fast tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(info.path), trust_remote_code=trust_remote_code)
    except Exception as e:  # any (huggingface_hub's strict config checks raise their own)
        raise CheckpointError(
            f"could not load the tokenizer from {info.path} (its tokenizer files, or "
            f"config.json, which the tokenizer reads too): {type(e).__name__}: {e}"
        ) from e
    if not getattr(tok, "is_fast", False):
        raise CheckpointError(
            f"the tokenizer in {info.path} is not a fast tokenizer; m3kit needs tokenizer.json "
            "(character offsets for late chunking)"
        )
    return tok


def whole_number(name: str, value: object, unit: str = "") -> int:
    """A size setting as an ``int``: a numpy integer is taken as its value; a bool, float or
    str is refused, not rounded (``int(2.5)`` is 2) or compared as it is (a NaN chunk size
    made one chunk per document).

    >>> whole_number("batch_size", np.int64(4))
    4

    Raises:
        ValueError: ``value`` is not an integer; the message names the setting (and its
            ``unit``, e.g. ``"tokens"``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = f"a whole number of {unit}" if unit else "a whole number"
        raise ValueError(f"{name} must be {what} (an int), got {value!r}")
    return int(value)
