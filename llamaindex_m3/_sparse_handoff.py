"""The sparse vectors :class:`~llamaindex_m3.M3Embedding` computes with its dense ones, kept
for the store's ``sparse_doc_fn`` (:func:`~llamaindex_m3.embeddings.m3_sparse_fns`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from m3kit.outputs import SparseVector

__all__ = ["HandoffKey", "SparseHandoff"]

HandoffKey = tuple[str, int | None]
"""A handed-off vector's key: the text as encoded (``text_instruction`` included) and the
``max_length`` it was cut to: what, besides the model, decides the vector."""


class SparseHandoff:
    """Sparse vectors computed with the dense ones, kept until the store's ``sparse_doc_fn``.

    ``QdrantVectorStore`` asks for a document's dense vector (``embed_model``) and its sparse
    vector (``sparse_doc_fn``) separately, on the same text. With M3 both come from one
    forward pass, so :class:`M3Embedding` leaves the sparse half here and the doc function
    takes it instead of encoding the text a second time. Entries are removed when taken; the
    oldest are dropped beyond ``max_items`` (a dropped text is simply encoded again). Entries
    are keyed by what decides the vector (:data:`HandoffKey`), not by the raw text: a copy of
    the embedding with another ``text_instruction`` shares this handoff (``model_copy``), and
    an instruction may be set after the store's functions were built; such vectors are never
    taken for the store's, which then encodes the text itself.
    Hand-written: a few lines of ``OrderedDict`` under a lock; ``functools.lru_cache`` cannot
    be filled from outside the function it wraps.
    """

    def __init__(self, max_items: int = 16384) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[HandoffKey, SparseVector] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, keys: Sequence[HandoffKey], vectors: Sequence[SparseVector]) -> None:
        """Keep ``vectors[i]`` for ``keys[i]``.

        Raises:
            TypeError: A key is not a :data:`HandoffKey` (a bare text, as keys once were).
        """
        for key in keys:
            _check_key(key)
        with self._lock:
            for key, vector in zip(keys, vectors, strict=True):
                self._items[key] = vector
                self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def take(self, key: HandoffKey) -> SparseVector | None:
        """The vector kept for ``key`` (removed), or ``None``.

        Raises:
            TypeError: ``key`` is not a :data:`HandoffKey` (a bare text, as keys once were).
        """
        _check_key(key)
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def _check_key(key: object) -> None:
    """Refuse what is no :data:`HandoffKey`: a bare text would never be found (``None``)."""
    if not (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and (key[1] is None or isinstance(key[1], int))
    ):
        raise TypeError(
            f"a sparse handoff key is (text as encoded, max_length), e.g. (text, None), not "
            f"{key!r}: vectors are kept by what decides them, not by the bare text"
        )
