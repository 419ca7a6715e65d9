"""Which encoder made a dense vector :class:`~llamaindex_m3.M3Embedding` returned.

A node's ``embedding`` and a query's ``query_embedding`` reach
:class:`~llamaindex_m3.M3VectorStore` as bare lists of floats: ``VectorStoreIndex`` embeds
with its own ``embed_model``, which may be another model than the store's. A node's embedding
is compared with the store's own dense vector of its text (cosine below
:data:`~llamaindex_m3.node_encoding.SAME_MODEL_COSINE`: another model), but a fine-tune of the
store's model stays far above any such bound (cosine 0.9999 after a short fine-tune of a tiny
model): ``VectorStoreIndex.from_vector_store(M3VectorStore(old_embed), embed_model=new_embed)``
stored the new model's dense vectors beside the old model's sparse and ColBERT ones, stamped as
the old model's, and ranked the new model's query vectors against the old model's documents.

So each vector an ``M3Embedding`` returns is remembered with its encoder's fingerprint identity
(:func:`remember`: a digest of the vector, the last :data:`MAX_VECTORS` of them in this
process), and the store refuses one that an ``M3Embedding`` of another encoder made
(:func:`check_origin`). A vector made elsewhere (another process, another embedding class, a
mean of several queries) is not known here and is checked as before.

Every vector remembered was made from one text alone (a query, or a text ``VectorStoreIndex``
had embedded), so :func:`embedded_alone` also tells a late-chunked node whose ``embedding`` is
such a vector: LlamaIndex drops node embeddings in its docstore and query results, and
``VectorStoreIndex`` embeds such a node's text again when it is inserted again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3kit.errors import FingerprintMismatchError

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint

__all__ = ["MAX_VECTORS", "check_origin", "embedded_alone", "remember", "remember_late"]

#: Vectors remembered, at most (the oldest are forgotten first: 16 bytes of digest each).
MAX_VECTORS = 65536

_lock = threading.Lock()
_origins: OrderedDict[bytes, frozenset[str]] = OrderedDict()
#: ``identity: description`` of each encoder that made a remembered vector (for messages).
_described: dict[str, str] = {}
#: Digests of the late-chunked vectors the parser made in this process (the last
#: :data:`MAX_VECTORS`): one equal to a text-alone vector is not one made without context.
_late: OrderedDict[bytes, None] = OrderedDict()


def _key(vector: Any) -> bytes:
    """The digest of a vector as float32 (a list of floats, or LlamaIndex's mean of one)."""
    data = np.ascontiguousarray(np.asarray(vector, dtype=np.float32)).tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()


def remember(vectors: Sequence[Any], fingerprint: EncoderFingerprint) -> None:
    """Record that the encoder of ``fingerprint`` made each of ``vectors``."""
    identity = fingerprint.identity
    keys = [_key(v) for v in vectors]
    with _lock:
        _described[identity] = fingerprint.describe()
        for key in keys:
            _origins[key] = _origins.get(key, frozenset()) | {identity}
            _origins.move_to_end(key)
        while len(_origins) > MAX_VECTORS:
            _origins.popitem(last=False)


def check_origin(vector: Any, fingerprint: EncoderFingerprint, what: str) -> None:
    """Refuse ``vector`` when an ``M3Embedding`` of another encoder than ``fingerprint``'s
    (the store's) made it; a vector not remembered passes.

    Args:
        vector: A node's ``embedding`` or a query's embedding.
        fingerprint: The store's encoder (the one its collection records).
        what: What the vector is, for the message (``"the embedding of node 'n1'"``).

    Raises:
        FingerprintMismatchError: Names both encoders and the two ways out.
    """
    with _lock:
        made_by = _origins.get(_key(vector))
        if (
            made_by is None
            or fingerprint.identity in made_by
            or (fingerprint.legacy_identity in made_by)
        ):
            return
        other = sorted(made_by)[0]
        described = _described.get(other, "another model")
    raise FingerprintMismatchError(
        f"{what} was embedded by another model, M3Embedding of {described} (identity "
        f"{other!r}), not by this store's, {fingerprint.describe()} (identity "
        f"{fingerprint.identity!r}), whose vectors the collection holds: stored or searched, "
        "it would be compared with another model's vectors. Give VectorStoreIndex the "
        "store's model as embed_model (M3Embedding.from_encoder(store.client.encoder)); or, "
        "to serve the other model, re-encode the collection with it first: "
        "M3Index.open(encoder, location, reindex=True) (m3kit index --reindex --model PATH), "
        "then build the store from it"
    )


def remember_late(vector: Any) -> None:
    """Record a late-chunked vector the parser made (see :func:`embedded_alone`)."""
    key = _key(vector)
    with _lock:
        _late[key] = None
        _late.move_to_end(key)
        while len(_late) > MAX_VECTORS:
            _late.popitem(last=False)


def embedded_alone(vector: Any) -> bool:
    """Whether an ``M3Embedding`` in this process made ``vector`` from a text alone (one of the
    last :data:`MAX_VECTORS` it returned), and the parser did not make the same vector late
    (a mean-pooled model's one-chunk document: its late vector is its text's)."""
    key = _key(vector)
    with _lock:
        return key in _origins and key not in _late
