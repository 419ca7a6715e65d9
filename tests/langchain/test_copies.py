"""pickle and copy.deepcopy of the LangChain classes that hold a loaded model.

LangChain users pickle embeddings to hand them to worker processes, and deep copies happen
in LangChain's own machinery (``model_copy(deep=True)``). Both used to fail with
``TypeError: cannot pickle '_thread.lock' object``, naming neither the class nor a way out.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Embeddings, M3LateChunkingSplitter, M3Reranker, M3SparseEmbeddings
from langchain_m3._encoder_model import EncoderModel
from langchain_m3.splitter import late_chunk_vectors
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

CLASSES: list[type[EncoderModel]] = [
    M3Embeddings,
    M3SparseEmbeddings,
    M3Reranker,
    M3LateChunkingSplitter,
]
TEXTS = list(SAMPLE_TEXTS[:3])


def _outputs(obj: Any) -> Any:
    """What the object computes, comparable between two copies."""
    if isinstance(obj, M3Embeddings):
        return np.array([*obj.embed_documents(TEXTS), obj.embed_query("capital")])
    if isinstance(obj, M3SparseEmbeddings):
        vectors = obj.embed_documents(TEXTS)
        return [(v.indices, np.round(v.values, 5).tolist()) for v in vectors]
    if isinstance(obj, M3Reranker):
        docs = obj.compress_documents([Document(t) for t in TEXTS], "capital")
        return [(d.page_content, round(d.metadata["relevance_score"], 5)) for d in docs]
    assert isinstance(obj, M3LateChunkingSplitter)
    chunks = obj.split_documents([Document(" ".join(TEXTS))])
    return [(d.page_content, np.round(late_chunk_vectors(d).dense, 5).tolist()) for d in chunks]


def _build(cls: type[EncoderModel], path: Path) -> EncoderModel:
    extra: dict[str, Any] = {"chunk_size": 8} if cls is M3LateChunkingSplitter else {}
    if cls is M3Reranker:
        extra = {"top_n": 2}
    return cls(model_name_or_path=str(path), device="cpu", dtype="fp32", batch_size=4, **extra)


def _pickled(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pickle_loads_the_checkpoint_again(cls: type[EncoderModel], tiny_m3_path: Path) -> None:
    """Pickled, an object carries its fields (no weights): unpickling loads its checkpoint
    again, and the copy computes what the original does."""
    obj = _build(cls, tiny_m3_path)
    blob = pickle.dumps(obj)
    assert len(blob) < 20_000, "the weights are not in the pickle"
    again = pickle.loads(blob)
    assert type(again) is cls and again.model_dump() == obj.model_dump()
    assert again.model_fields_set == obj.model_fields_set
    assert again.encoder is not obj.encoder
    assert str(_outputs(again)) == str(_outputs(obj))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_deepcopy_shares_the_loaded_model(cls: type[EncoderModel], tiny_m3_path: Path) -> None:
    """A deep copy has copies of the fields and shares the loaded (read-only) model, as a
    ``from_encoder`` twin would, instead of loading or copying its weights."""
    obj = _build(cls, tiny_m3_path)
    twin = copy.deepcopy(obj)
    assert type(twin) is cls and twin is not obj and twin.model_dump() == obj.model_dump()
    assert twin.encoder is obj.encoder
    assert str(_outputs(twin)) == str(_outputs(obj))
    deep = obj.model_copy(deep=True)
    assert deep.encoder is obj.encoder and str(_outputs(deep)) == str(_outputs(obj))


def test_from_encoder_pickles_by_its_folder(tiny_encoder: M3Encoder) -> None:
    """``from_encoder`` on an encoder loaded from a folder pickles too (by that folder)."""
    emb = M3Embeddings.from_encoder(tiny_encoder)
    again = _pickled(emb)
    assert again.encoder is not tiny_encoder
    np.testing.assert_allclose(again.embed_documents(TEXTS), emb.embed_documents(TEXTS), atol=1e-6)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_an_in_memory_model_is_a_clear_error(
    cls: type[EncoderModel], tiny_encoder: M3Encoder
) -> None:
    """An encoder built from an in-memory model has no folder to load again: pickling says so,
    naming the class (a deep copy, which shares the model, still works)."""
    in_memory = M3Encoder(tiny_encoder.model, tiny_encoder.tokenizer, precision="fp32")
    obj = cls.from_encoder(in_memory)
    with pytest.raises(TypeError, match=rf"cannot pickle this {cls.__name__}.*in-memory model"):
        pickle.dumps(obj)
    assert copy.deepcopy(obj).encoder is in_memory


def test_a_reloaded_model_that_differs_is_a_clear_error(tiny_m3_path: Path, tmp_path: Path) -> None:
    """An encoder loaded with a setting the class has no field for (``pooling``) would load
    again as another model: pickling refuses it, naming the setting. (Unpickling refused it,
    in the worker process that got the pickle, after ``pickle.dumps`` had succeeded.)"""
    enc = M3Encoder.from_pretrained(tiny_m3_path, device="cpu", dtype="fp32", pooling="mean")
    emb = M3Embeddings.from_encoder(enc)
    with pytest.raises(TypeError, match=r"pickle this M3Embeddings.*pooling='mean'.*'cls'"):
        pickle.dumps(emb)
    # the way out the message gives: a folder whose own pooling is the encoder's
    saved = enc.model.save(tmp_path / "mean_pooled", enc.tokenizer)
    again = pickle.loads(pickle.dumps(M3Embeddings(model_name_or_path=str(saved), dtype="fp32")))
    assert again.encoder.model.pooling.value == "mean"


def test_objects_holding_an_open_index_refuse_copies_saying_why(tiny_encoder: M3Encoder) -> None:
    """``M3Retriever``, ``M3VectorStore`` and its retrievers (and LlamaIndex's retriever) hold
    an ``M3Index``: pickle and deepcopy failed with ``cannot pickle '_thread.lock' object``."""
    from langchain_m3 import M3Retriever, M3VectorStore

    with M3VectorStore.open(tiny_encoder) as store:
        store.add_texts(["Oxygen is a gas."], ids=["ox"])
        holders = [store, store.as_retriever(), M3Retriever(index=store.index), store.index]
        for held in holders:
            with pytest.raises(TypeError, match="cannot deep-copy an M3Index"):
                copy.deepcopy(held)
            with pytest.raises(pickle.PicklingError, match="cannot pickle or copy an M3Index"):
                pickle.dumps(held)
        assert [d.id for d in store.similarity_search("oxygen", k=1)] == ["ox"]  # still works
