"""Typed, immutable results of encoding: one batch result, never dicts with holes."""

from __future__ import annotations

import enum
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from m3kit.errors import HeadNotComputedError

__all__ = ["Chunk", "Head", "M3Output", "SparseVector"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class Head(str, enum.Enum):
    """The three M3 output heads."""

    DENSE = "dense"
    SPARSE = "sparse"
    COLBERT = "colbert"

    @classmethod
    def parse(cls, heads: Iterable[Head | str] | Head | str) -> frozenset[Head]:
        """Normalise a head or a collection of heads (enum members or their names).

        >>> sorted(h.value for h in Head.parse(["dense", Head.SPARSE]))
        ['dense', 'sparse']
        """
        if isinstance(heads, (Head, str)):
            heads = [heads]
        out: set[Head] = set()
        for h in heads:
            try:
                out.add(Head(h))
            except ValueError:
                raise ValueError(
                    f"unknown head {h!r}; choose from {[m.value for m in Head]}"
                ) from None
        if not out:
            raise ValueError("ask for at least one head (dense, sparse, colbert)")
        return frozenset(out)


ALL_HEADS: frozenset[Head] = frozenset(Head)


@dataclass(frozen=True, eq=False)
class SparseVector:
    """A learned-sparse (lexical) vector: token ids ascending and unique, weights finite and
    ``>= 0`` (the encoder's are ``> 0``; a store drops zero weights, which score nothing).

    >>> v = SparseVector.from_mapping({7: 0.5, 3: 0.25})
    >>> v.indices.tolist(), v.values.tolist()
    ([3, 7], [0.25, 0.5])
    >>> v.to_dict()
    {3: 0.25, 7: 0.5}
    """

    indices: IntArray
    values: FloatArray

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        val = np.asarray(self.values, dtype=np.float32).reshape(-1)
        if idx.shape != val.shape:
            raise ValueError(
                f"SparseVector indices ({idx.shape[0]}) and values ({val.shape[0]}) differ in size"
            )
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ValueError("SparseVector indices must be strictly ascending (sorted, unique)")
        if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= 2**32):
            raise ValueError(
                f"SparseVector token ids must lie in [0, 2**32) (Qdrant's sparse indices), got "
                f"{int(idx[0]) if int(idx[0]) < 0 else int(idx[-1])}"
            )
        bad = np.flatnonzero(~np.isfinite(val) | (val < 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"SparseVector weight {float(val[i]):.6g} of token id {int(idx[i])} is not a "
                "finite number >= 0 (a sparse score sums query weight x document weight: a "
                "negative or NaN weight would make scores meaningless)"
            )
        idx.setflags(write=False)
        val.setflags(write=False)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "values", val)

    @classmethod
    def from_mapping(cls, weights: Mapping[int, float]) -> SparseVector:
        """Build from ``{token_id: weight}``; ids are sorted, zero weights kept as given.

        Raises:
            ValueError: A token id with a fraction (``1.7``), or a weight that is negative or
                not finite.
        """
        for k in weights:
            key: Any = k  # (typed int, but JSON and numpy hand over floats, numpy float32 too)
            is_real = isinstance(key, numbers.Real) and not isinstance(key, numbers.Integral)
            if is_real and not float(key).is_integer():
                raise ValueError(f"SparseVector token id {key!r} is not a whole number")
        items = sorted((int(k), float(v)) for k, v in weights.items())
        return cls(
            np.array([k for k, _ in items], dtype=np.int64),
            np.array([v for _, v in items], dtype=np.float32),
        )

    @classmethod
    def empty(cls) -> SparseVector:
        """A vector with no terms."""
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    def without_zeros(self) -> SparseVector:
        """This vector less its zero weights (itself when it has none): what a store keeps, so
        that every engine matches and scores the same terms.

        >>> SparseVector.from_mapping({3: 0.0, 7: 0.5}).without_zeros().to_dict()
        {7: 0.5}
        """
        keep = self.values > 0
        return self if bool(keep.all()) else SparseVector(self.indices[keep], self.values[keep])

    def to_dict(self) -> dict[int, float]:
        """``{token_id: weight}`` with Python ints and floats (LlamaIndex's sparse format)."""
        return {
            int(i): float(v)
            for i, v in zip(self.indices.tolist(), self.values.tolist(), strict=True)
        }

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseVector):
            return NotImplemented
        return bool(
            np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    def __hash__(self) -> int:
        return hash((self.indices.tobytes(), self.values.tobytes()))

    def __repr__(self) -> str:
        return f"SparseVector(nnz={len(self)})"


def _read_only(array: FloatArray) -> FloatArray:
    """A view of ``array`` that refuses writes (``array`` itself is left as it was)."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class M3Output:
    """The result of encoding a batch of ``n`` texts.

    Only the heads that were asked for are present (see :attr:`heads`); reading another raises
    :class:`~m3kit.errors.HeadNotComputedError` instead of returning ``None``.

    Attributes:
        heads: The heads computed for this batch.
        token_counts: Tokens per text after truncation (special tokens included).
    """

    heads: frozenset[Head]
    token_counts: tuple[int, ...]
    _dense: FloatArray | None = field(default=None, repr=False)
    _sparse: tuple[SparseVector, ...] | None = field(default=None, repr=False)
    _colbert: tuple[FloatArray, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Read-only views: a write through a result (``out.dense[0] *= 2``) would change what
        # every other holder of it reads (a chunk's vectors, hits); the caller's own arrays
        # stay writable.
        if self._dense is not None:
            object.__setattr__(self, "_dense", _read_only(self._dense))
        if self._colbert is not None:
            object.__setattr__(self, "_colbert", tuple(_read_only(m) for m in self._colbert))

    def __setstate__(self, state: dict[str, object]) -> None:
        """Unpickling and ``copy.deepcopy`` give read-only arrays too (numpy's copies are not)."""
        self.__dict__.update(state)
        self.__post_init__()

    def __len__(self) -> int:
        return len(self.token_counts)

    def _missing(self, head: Head) -> HeadNotComputedError:
        return HeadNotComputedError(
            f"this result was encoded without the {head.value} head; "
            f"pass heads including {head.value!r} to encode()"
        )

    @property
    def dense(self) -> FloatArray:
        """Dense vectors, float32 ``[n, d]``, L2-normalised."""
        if self._dense is None:
            raise self._missing(Head.DENSE)
        return self._dense

    @property
    def sparse(self) -> tuple[SparseVector, ...]:
        """One :class:`SparseVector` per text."""
        if self._sparse is None:
            raise self._missing(Head.SPARSE)
        return self._sparse

    @property
    def colbert(self) -> tuple[FloatArray, ...]:
        """One float32 ``[t_i, d]`` matrix of normalised token vectors per text (CLS dropped)."""
        if self._colbert is None:
            raise self._missing(Head.COLBERT)
        return self._colbert

    def __repr__(self) -> str:
        return f"M3Output(n={len(self)}, heads={sorted(h.value for h in self.heads)})"


@dataclass(frozen=True, eq=False)
class Chunk:
    """One chunk of a document, with the vectors late chunking gave it.

    Attributes:
        text: The chunk's text, ``document[start:end]``.
        start: Start character offset in the document.
        end: End character offset (exclusive).
        index: Position of the chunk in its document.
        token_start: First token (index into the document's tokens, specials included).
        token_end: One past the last token.
        vectors: The chunk's vectors as a one-row :class:`M3Output`.
    """

    text: str
    start: int
    end: int
    index: int
    token_start: int
    token_end: int
    vectors: M3Output

    @property
    def dense(self) -> FloatArray:
        """The chunk's dense vector ``[d]``."""
        return self.vectors.dense[0]

    @property
    def sparse(self) -> SparseVector:
        """The chunk's sparse vector."""
        return self.vectors.sparse[0]

    @property
    def colbert(self) -> FloatArray:
        """The chunk's ColBERT token vectors ``[t, d]``."""
        return self.vectors.colbert[0]
