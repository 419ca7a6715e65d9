"""Several :class:`M3Index` objects on one :class:`M3Store`: a refused one leaves no trace.

``M3Index(encoder, store)`` pairs an encoder with an opened store, and several indexes may
share a store. A pairing refused because the collection belongs to another encoder
(:class:`FingerprintMismatchError`) used to leave its encoder's identity and check on the
store: the index still in use then stamped its own vectors with the refused encoder's
identity (a later reindex to that encoder skipped them as done, leaving vectors of the old
model under the new one's name) and checked the refused encoder instead of its own before
each write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import EncoderChangedError, FingerprintMismatchError, M3Encoder
from m3kit.store import ChunkRecord, M3Index, M3Store
from m3kit.store.schema import DOC_ID, ENCODER_ID

BACKENDS = ["edge", "client"]


def _open_store(encoder: M3Encoder, backend: str) -> M3Store:
    return M3Store.open(
        None,
        collection="shared",
        dense_dim=encoder.dense_dim,
        colbert_dim=encoder.colbert_dim,
        sparse=True,
        backend=backend,
    )


def _stamps(store: M3Store) -> dict[str, str]:
    """``{doc_id: encoder_id}`` of every stored chunk (one chunk per document here)."""
    return {
        str(h.payload[DOC_ID]): str(h.payload[ENCODER_ID])
        for h in store._backend.scroll(None, [DOC_ID, ENCODER_ID])
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_index_leaves_the_store_to_the_index_in_use(
    tiny_m3_path: Path, other_tiny_encoder: M3Encoder, backend: str
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")  # trained below: not shared
    with _open_store(enc, backend) as store:
        index = M3Index(enc, store)
        index.add_texts(["the first document."], doc_ids=["x"])
        with pytest.raises(FingerprintMismatchError, match="another encoder"):
            M3Index(other_tiny_encoder, store)

        # the index in use still writes as itself
        index.add_texts(["the second document."], doc_ids=["y"])
        assert _stamps(store) == {"x": index.fingerprint.identity, "y": index.fingerprint.identity}

        # so a reindex to the other encoder re-encodes every document, "y" included
        other = M3Index(other_tiny_encoder, store, reindex=True)
        assert set(_stamps(store).values()) == {other.fingerprint.identity}
        want = other_tiny_encoder.encode(["the second document."]).dense[0]
        hit = store.query(dense=want, k=1)[0]
        assert hit.doc_id == "y" and hit.score == pytest.approx(1.0, abs=1e-4)


def _train_step(model: Any) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    torch.optim.AdamW(model.parameters(), lr=0.1).step()


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_a_refused_index_the_store_still_checks_the_encoder_in_use(
    tiny_m3_path: Path, other_tiny_encoder: M3Encoder, backend: str
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with _open_store(enc, backend) as store:
        index = M3Index(enc, store)
        index.add_texts(["the first document."], doc_ids=["x"])
        with pytest.raises(FingerprintMismatchError):
            M3Index(other_tiny_encoder, store)
        _train_step(enc.model)  # the index's encoder changes in memory
        text = "written through the store, as the adapters do"
        record = ChunkRecord("z", 0, text, {}, enc.encode([text]))
        with pytest.raises(EncoderChangedError, match="changed in memory"):
            store.upsert([record])
        with pytest.raises(EncoderChangedError, match="changed in memory"):
            store.query(dense=np.ones(enc.dense_dim, dtype=np.float32))
        assert store.count() == 1
