"""A ``VectorStoreIndex`` embedding with a fine-tune of its ``M3VectorStore``'s model is refused.

After fine-tuning, an application that gives ``VectorStoreIndex`` the new model as
``embed_model`` while its ``M3VectorStore`` is still built on the old one (the collection's)
had the new model's dense vectors stored beside the old model's sparse and ColBERT vectors,
stamped as the old model's, and its query vectors ranked against the old model's documents:
a fine-tune's vectors stay far above the cosine bound that catches another model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import QueryBundle

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from llamaindex_m3.node_encoding import SAME_MODEL_COSINE
from m3kit import FingerprintMismatchError, M3Encoder

#: The start of the refusal.
OTHER = "embedded by another model, M3Embedding of "
DOCS = ["The Rhine flows to the North Sea.", "Oxygen has the atomic number 8."]


@pytest.fixture(scope="module")
def tuned_embedding(tiny_m3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> M3Embedding:
    """The tiny model after a small weight update, saved to its own folder (a fine-tune)."""
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    out = tmp_path_factory.mktemp("tuned") / "model"
    encoder.model.save(out, encoder.tokenizer, max_length=encoder.max_length)
    return M3Embedding.from_encoder(M3Encoder.from_pretrained(out, dtype="fp32"))


def test_a_fine_tuned_embed_model_is_refused_by_the_old_models_store(
    tiny_embedding: M3Embedding, tuned_embedding: M3Embedding
) -> None:
    new, old = (e.get_text_embedding(DOCS[0]) for e in (tuned_embedding, tiny_embedding))
    assert not np.array_equal(new, old)
    assert float(np.dot(new, old)) > SAME_MODEL_COSINE  # the cosine bound lets it through
    with M3VectorStore(tiny_embedding) as store:
        storage = StorageContext.from_defaults(vector_store=store)
        docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(DOCS)]
        VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=tiny_embedding)
        stored = store.client.count()
        index = VectorStoreIndex.from_vector_store(store, embed_model=tuned_embedding)
        with pytest.raises(FingerprintMismatchError, match=OTHER + ".*reindex"):
            index.insert(Document(text="Warsaw is the capital of Poland.", id_="new"))
        assert store.client.count() == stored  # nothing written
        with pytest.raises(FingerprintMismatchError, match="query_embedding was " + OTHER):
            index.as_retriever(similarity_top_k=1).retrieve("atomic number")
        # the store's own model, and the same weights in another precision, are served
        same = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
        assert len(same.as_retriever(similarity_top_k=1).retrieve("atomic number")) == 1
        bf16 = M3Embedding.from_encoder(
            M3Encoder.from_pretrained(tiny_embedding.encoder.info.path, dtype="bf16")
        )
        again = VectorStoreIndex.from_vector_store(store, embed_model=bf16)
        assert len(again.as_retriever(similarity_top_k=1).retrieve("atomic number")) == 1


def test_the_retriever_refuses_a_query_bundle_embedded_by_a_fine_tune(
    tiny_encoder: M3Encoder, tuned_embedding: M3Embedding
) -> None:
    with M3Retriever.open(tiny_encoder) as retriever:
        retriever.index.add_texts(DOCS)
        bundle = QueryBundle("atomic number", embedding=tuned_embedding.get_query_embedding("x"))
        with pytest.raises(FingerprintMismatchError, match="QueryBundle.embedding was " + OTHER):
            retriever.retrieve(bundle)
