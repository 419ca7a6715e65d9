"""M3Retriever and an M3Embedding's ``text_instruction`` (the document-side prefix).

``M3Retriever.open(embedding)`` / ``from_documents(docs, embedding)`` took only the
embedding's encoder and encoded every document on its bare text: a ``text_instruction``
(``"passage: "`` for E5-style models) was accepted and silently left out of the stored
vectors, while ``M3VectorStore(embedding)`` prefixes it. The retriever now refuses such an
embedding, naming the setting and the two ways on.
"""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document

from llamaindex_m3 import M3Embedding, M3Retriever
from m3kit import M3Encoder

TEXT = "Berlin is the capital of Germany."
QUERY = "Which city is the capital of Germany?"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_prefix_changes_the_stored_vector(minilm_encoder: M3Encoder) -> None:
    """The setting matters: the prefixed and the bare text score the query differently."""
    q = minilm_encoder.encode_queries([QUERY]).dense[0]
    bare = _cosine(q, minilm_encoder.encode([TEXT]).dense[0])
    prefixed = _cosine(q, minilm_encoder.encode(["passage: " + TEXT]).dense[0])
    assert abs(bare - prefixed) > 1e-3


def test_open_refuses_an_embedding_with_a_text_instruction(minilm_encoder: M3Encoder) -> None:
    embedding = M3Embedding.from_encoder(minilm_encoder, text_instruction="passage: ")
    with pytest.raises(ValueError, match=r"text_instruction 'passage: '.*M3VectorStore"):
        M3Retriever.open(embedding)


def test_from_documents_refuses_it_before_encoding(minilm_encoder: M3Encoder) -> None:
    embedding = M3Embedding.from_encoder(minilm_encoder, text_instruction="passage: ")
    with pytest.raises(ValueError, match="text_instruction"):
        M3Retriever.from_documents([Document(text=TEXT)], embedding)


def test_an_embedding_without_one_is_taken(minilm_encoder: M3Encoder) -> None:
    """No prefix: the embedding's encoder is used, documents stored on their text."""
    embedding = M3Embedding.from_encoder(minilm_encoder)
    with M3Retriever.from_documents([Document(text=TEXT)], embedding) as retriever:
        hit = retriever.retrieve(QUERY)[0]
    q = minilm_encoder.encode_queries([QUERY]).dense[0]
    assert hit.score == pytest.approx(_cosine(q, minilm_encoder.encode([TEXT]).dense[0]), abs=1e-5)
