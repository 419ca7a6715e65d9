"""``M3Index.open`` on a collection an adapter's ``M3QdrantVectorStore`` recorded.

m3kit's own record was the only one ``M3Index`` read: a stock-layout collection the LangChain
store recorded as model A's (a dense-only model, whose layout ``M3Index`` opens too) was opened
with model B "as written before m3kit recorded encoders", took B's vectors beside A's, and
left two records naming different models.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from langchain_qdrant import RetrievalMode

from langchain_m3 import M3Embeddings, M3QdrantVectorStore
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index
from m3kit.testing import SAMPLE_TEXTS, build_tiny_m3_checkpoint


def _dense_only(path: Path, seed: int) -> M3Encoder:
    built = build_tiny_m3_checkpoint(path, seed=seed)
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        (built / head).unlink()
    return M3Encoder.from_pretrained(built, dtype="fp32")


def test_the_model_the_stock_store_recorded_is_checked_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enc_a, enc_b = _dense_only(tmp_path / "a", 0), _dense_only(tmp_path / "b", 1)
    folder = tmp_path / "q"
    stock = M3QdrantVectorStore.from_texts(
        list(SAMPLE_TEXTS[:2]),
        embedding=M3Embeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.DENSE,
        path=str(folder),
        collection_name="docs",
        vector_name="dense",
    )
    stock.client.close()
    with pytest.raises(FingerprintMismatchError, match="M3QdrantVectorStore recorded"):
        M3Index.open(enc_b, folder, collection="docs", backend="client")
    with (
        caplog.at_level(logging.WARNING, logger="m3kit.store.collection_record"),
        M3Index.open(enc_a, folder, collection="docs", backend="client") as index,
    ):
        assert index.count() == 2
    assert "no record of the encoder" not in caplog.text  # it has one: the stock store's
    with pytest.raises(FingerprintMismatchError, match="M3QdrantVectorStore recorded"):
        # once adopted: a reindex found none of the stock points (no m3kit document), so it
        # re-encoded nothing and recorded B over A's vectors
        M3Index.open(enc_b, folder, collection="docs", backend="client", reindex=True)
    with M3Index.open(enc_a, folder, collection="docs", backend="client") as index:
        assert index.count() == 2
