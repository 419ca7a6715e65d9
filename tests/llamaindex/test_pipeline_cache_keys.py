"""``IngestionPipeline``'s cache must never serve vectors another configuration computed.

LlamaIndex keys each transformation's cached output on the input nodes and
``str(transformation.to_dict())``: whatever changes the vectors a transformation gives
(the model's weights above all) must show in its ``to_dict``, or a re-run with the cache
silently returns the old vectors. Each test runs a first configuration with a cache, then
a second one with the same cache, and compares with the second one run fresh.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from llama_index.core import Document
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.node_parser import HierarchicalNodeParser, SentenceSplitter
from llama_index.core.schema import BaseNode, TransformComponent

from llamaindex_m3 import (
    M3Embedding,
    M3HierarchicalNodeParser,
    M3LateChunkingNodeParser,
    M3Retriever,
)
from llamaindex_m3.node_parser import SPARSE_METADATA_KEY
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

DOC_TEXT = " ".join(SAMPLE_TEXTS[:6])


def _docs() -> list[Document]:
    return [Document(text=DOC_TEXT, doc_id="d1", metadata={"src": "a"})]


def _run_cached(first: TransformComponent, second: TransformComponent) -> list[BaseNode]:
    """``second``'s pipeline output after ``first``'s filled the same cache."""
    cache = IngestionCache()
    IngestionPipeline(transformations=[first], cache=cache).run(documents=_docs())
    return list(IngestionPipeline(transformations=[second], cache=cache).run(documents=_docs()))


def _vectors(nodes: Sequence[BaseNode]) -> list[tuple[str, list[float], Any]]:
    return [
        (n.get_content(), n.embedding or [], n.metadata.get(SPARSE_METADATA_KEY)) for n in nodes
    ]


def _assert_same_vectors(got: Sequence[BaseNode], want: Sequence[BaseNode]) -> None:
    assert len(got) == len(want)
    for (text, dense, sparse), (want_text, want_dense, want_sparse) in zip(
        _vectors(got), _vectors(want), strict=True
    ):
        assert text == want_text
        np.testing.assert_allclose(dense, want_dense, atol=1e-6)
        assert sparse == want_sparse


def _assert_other_vectors(a: Sequence[BaseNode], b: Sequence[BaseNode]) -> None:
    """The two configurations do give other vectors (else a test of them proves nothing)."""
    if [n.get_content() for n in a] != [n.get_content() for n in b]:
        return
    assert any(
        not np.allclose(x.embedding or [], y.embedding or [], atol=1e-4)
        or x.metadata.get(SPARSE_METADATA_KEY) != y.metadata.get(SPARSE_METADATA_KEY)
        for x, y in zip(a, b, strict=True)
    )


@pytest.fixture()
def swap_folder(
    tiny_m3_path: Path, path_b: Path, tmp_path: Path
) -> tuple[Path, Callable[[], None]]:
    """A checkpoint folder holding model A, and a function that puts model B there instead
    (a fine-tune saved over its base): same path and settings, other weights."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_m3_path, folder)

    def swap() -> None:
        shutil.rmtree(folder)
        shutil.copytree(path_b, folder)

    return folder, swap


# -- M3LateChunkingNodeParser -----------------------------------------------------------------
PARSER_CHANGES: dict[str, dict[str, Any]] = {
    "chunk_size": {"chunk_size": 16},
    "window": {"window": 30},
    "overlap": {"overlap": 1},
    "placement": {"placement": "chunks", "window": 30},
    "late_heads": {"late_heads": ["dense"]},
    "dense_pooling": {"dense_pooling": "naive"},
    "splitter": {"splitter": SentenceSplitter(chunk_size=30, chunk_overlap=0)},
}


@pytest.mark.parametrize("change", list(PARSER_CHANGES), ids=str)
def test_parser_cache_recomputes_after_a_chunking_change(
    tiny_encoder: M3Encoder, change: str
) -> None:
    base = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    changed = M3LateChunkingNodeParser.from_encoder(
        tiny_encoder, **{"chunk_size": 24, **PARSER_CHANGES[change]}
    )
    fresh = changed.get_nodes_from_documents(_docs())
    _assert_other_vectors(base.get_nodes_from_documents(_docs()), fresh)
    _assert_same_vectors(_run_cached(base, changed), fresh)


def test_parser_cache_recomputes_after_max_length_changes(tiny_m3_path: Path) -> None:
    def parser(**kw: Any) -> M3LateChunkingNodeParser:
        return M3LateChunkingNodeParser(model_name=str(tiny_m3_path), dtype="fp32", **kw)

    # max_length bounds the default window: a shorter one cuts other windows
    base, changed = parser(chunk_size=8), parser(chunk_size=8, max_length=12)
    fresh = changed.get_nodes_from_documents(_docs())
    _assert_other_vectors(base.get_nodes_from_documents(_docs()), fresh)
    _assert_same_vectors(_run_cached(base, changed), fresh)


def test_parser_cache_tells_two_models_of_one_folder_apart(
    swap_folder: tuple[Path, Callable[[], None]],
) -> None:
    """A fine-tune saved over the checkpoint, parsed with the same settings: new vectors."""
    folder, swap = swap_folder
    cache = IngestionCache()
    first = M3LateChunkingNodeParser(model_name=str(folder), dtype="fp32", chunk_size=24)
    old = IngestionPipeline(transformations=[first], cache=cache).run(documents=_docs())
    swap()
    second = M3LateChunkingNodeParser(model_name=str(folder), dtype="fp32", chunk_size=24)
    again = IngestionPipeline(transformations=[second], cache=cache).run(documents=_docs())
    fresh = second.get_nodes_from_documents(_docs())
    _assert_other_vectors(old, fresh)
    _assert_same_vectors(again, fresh)


def test_parser_cache_tells_two_wrapped_encoders_apart(enc_a: M3Encoder, enc_b: M3Encoder) -> None:
    first = M3LateChunkingNodeParser.from_encoder(enc_a, chunk_size=24)
    second = M3LateChunkingNodeParser.from_encoder(enc_b, chunk_size=24)
    fresh = second.get_nodes_from_documents(_docs())
    _assert_other_vectors(first.get_nodes_from_documents(_docs()), fresh)
    _assert_same_vectors(_run_cached(first, second), fresh)


def _train_in_place(encoder: M3Encoder) -> None:
    """Change every weight of ``encoder``'s model in memory (as a training step would)."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in encoder.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))


def test_parser_cache_sees_weights_changed_in_memory(tiny_m3_path: Path) -> None:
    """The same parser after its model was trained in place parses anew."""
    parser = M3LateChunkingNodeParser.from_encoder(
        M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32"), chunk_size=24
    )
    cache = IngestionCache()
    old = IngestionPipeline(transformations=[parser], cache=cache).run(documents=_docs())
    _train_in_place(parser.chunker.encoder)
    again = IngestionPipeline(transformations=[parser], cache=cache).run(documents=_docs())
    fresh = parser.get_nodes_from_documents(_docs())
    _assert_other_vectors(old, fresh)
    _assert_same_vectors(again, fresh)


# -- M3Embedding ------------------------------------------------------------------------------
def _embedded(embed: M3Embedding) -> list[BaseNode]:
    return list(embed(SentenceSplitter(chunk_size=24, chunk_overlap=0)(_docs())))


def _run_embedding(first: M3Embedding, second: M3Embedding) -> list[BaseNode]:
    cache = IngestionCache()
    splitter = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    IngestionPipeline(transformations=[splitter, first], cache=cache).run(documents=_docs())
    return list(
        IngestionPipeline(transformations=[splitter, second], cache=cache).run(documents=_docs())
    )


def test_embedding_cache_tells_two_models_of_one_folder_apart(
    swap_folder: tuple[Path, Callable[[], None]],
) -> None:
    """``M3Embedding(model_name=folder)`` before and after a fine-tune was saved there: the
    cache gave the old model's vectors (its ``to_dict`` named the folder, not the weights)."""
    folder, swap = swap_folder
    cache = IngestionCache()
    splitter = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    first = M3Embedding(model_name=str(folder), dtype="fp32")
    old = IngestionPipeline(transformations=[splitter, first], cache=cache).run(documents=_docs())
    swap()
    second = M3Embedding(model_name=str(folder), dtype="fp32")
    again = IngestionPipeline(transformations=[splitter, second], cache=cache).run(
        documents=_docs()
    )
    fresh = _embedded(second)
    _assert_other_vectors(old, fresh)
    _assert_same_vectors(again, fresh)


def test_embedding_cache_sees_weights_changed_in_memory(tiny_m3_path: Path) -> None:
    """The same ``M3Embedding`` after its model was trained in place embeds anew."""
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    embed = M3Embedding.from_encoder(encoder)
    cache = IngestionCache()
    splitter = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    old = IngestionPipeline(transformations=[splitter, embed], cache=cache).run(documents=_docs())
    _train_in_place(encoder)
    again = IngestionPipeline(transformations=[splitter, embed], cache=cache).run(documents=_docs())
    fresh = _embedded(embed)
    _assert_other_vectors(old, fresh)
    _assert_same_vectors(again, fresh)


@pytest.mark.parametrize(
    "change", [{"text_instruction": "passage: "}, {"max_length": 6}], ids=lambda c: next(iter(c))
)
def test_embedding_cache_recomputes_after_a_setting_changes(
    tiny_m3_path: Path, change: dict[str, Any]
) -> None:
    base = M3Embedding(model_name=str(tiny_m3_path), dtype="fp32")
    changed = M3Embedding(model_name=str(tiny_m3_path), dtype="fp32", **change)
    fresh = _embedded(changed)
    _assert_other_vectors(_embedded(base), fresh)
    _assert_same_vectors(_run_embedding(base, changed), fresh)


def test_embedding_round_trips_with_its_identity(tiny_encoder: M3Encoder, path_b: Path) -> None:
    """``to_dict`` names the model's weights; ``from_dict`` checks the folder still holds them."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    data = embed.to_dict()
    assert M3Embedding.from_dict(data).to_dict() == data
    with pytest.raises(ValueError, match="checkpoint at .* is another one"):
        M3Embedding.from_dict({**data, "model_name": str(path_b)})
    assert M3Embedding.from_dict(data, model_name=str(path_b)).model_name == str(path_b)


# -- HierarchicalNodeParser with a late-chunking leaf -----------------------------------------
def _levels(parent_size: int, leaf: M3LateChunkingNodeParser) -> dict[str, Any]:
    return {
        "node_parser_ids": ["parent", "leaf"],
        "node_parser_map": {
            "parent": SentenceSplitter(chunk_size=parent_size, chunk_overlap=0),
            "leaf": leaf,
        },
    }


def test_llamaindex_hierarchy_key_misses_its_levels(enc_a: M3Encoder, enc_b: M3Encoder) -> None:
    """Upstream (llama-index-core 0.14): ``HierarchicalNodeParser.to_dict`` shows each level's
    ``NodeParser`` base fields only, so two hierarchies of other models and sizes share cache
    entries (why :class:`M3HierarchicalNodeParser` exists; if this fails, LlamaIndex fixed it:
    update the README)."""
    a = HierarchicalNodeParser.from_defaults(
        **_levels(40, M3LateChunkingNodeParser.from_encoder(enc_a, chunk_size=12))
    )
    b = HierarchicalNodeParser.from_defaults(
        **_levels(80, M3LateChunkingNodeParser.from_encoder(enc_b, chunk_size=8))
    )
    assert a.to_dict() == b.to_dict()


HIERARCHY_CHANGES: dict[str, tuple[int, str, int]] = {
    "leaf chunk_size": (40, "a", 8),
    "leaf model": (40, "b", 12),
    "parent chunk_size": (80, "a", 12),
}


@pytest.mark.parametrize("change", list(HIERARCHY_CHANGES), ids=str)
def test_m3_hierarchy_cache_recomputes_after_a_level_changes(
    enc_a: M3Encoder, enc_b: M3Encoder, change: str
) -> None:
    def hierarchy(parent_size: int, model: str, leaf_size: int) -> M3HierarchicalNodeParser:
        encoder = enc_a if model == "a" else enc_b
        leaf = M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=leaf_size)
        return M3HierarchicalNodeParser.from_defaults(**_levels(parent_size, leaf))

    base, changed = hierarchy(40, "a", 12), hierarchy(*HIERARCHY_CHANGES[change])
    fresh = changed.get_nodes_from_documents(_docs())
    _assert_other_vectors(base.get_nodes_from_documents(_docs()), fresh)
    _assert_same_vectors(_run_cached(base, changed), fresh)


def test_m3_hierarchy_makes_the_nodes_hierarchical_node_parser_makes(enc_a: M3Encoder) -> None:
    leaf = M3LateChunkingNodeParser.from_encoder(enc_a, chunk_size=12)
    ours = M3HierarchicalNodeParser.from_defaults(**_levels(40, leaf))
    theirs = HierarchicalNodeParser.from_defaults(**_levels(40, leaf))
    _assert_same_vectors(
        ours.get_nodes_from_documents(_docs()), theirs.get_nodes_from_documents(_docs())
    )
    levels = ours.to_dict()["node_parser_map"]
    assert levels["parent"]["chunk_size"] == 40
    assert levels["leaf"] == leaf.to_dict()


# -- what to do when cached nodes lack ColBERT ------------------------------------------------
def test_the_advice_for_cached_nodes_without_colbert_reparses(tiny_encoder: M3Encoder) -> None:
    """A ColBERT store refuses nodes rebuilt from a cache, saying how to parse them again.

    It said ``IngestionPipeline(..., cache=None)``, which still caches (``None`` gives the
    pipeline a new in-memory cache, kept across its ``run`` calls); ``disable_cache=True``
    re-runs the parser every time.
    """
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=24)
    cached = IngestionPipeline(transformations=[parser], cache=None)
    cached.run(documents=_docs())
    rebuilt = cached.run(documents=_docs())  # the pipeline's own cache answered
    live = IngestionPipeline(transformations=[parser], disable_cache=True)
    live.run(documents=_docs())
    again = live.run(documents=_docs())
    with M3Retriever.open(tiny_encoder, collection="colbert") as store:
        with pytest.raises(ValueError, match=r"rebuilt from JSON.*disable_cache=True") as err:
            store.add_nodes(rebuilt)
        assert "IngestionPipeline(..., cache=None)" not in str(err.value)
        assert store.index.count() == 0
        store.add_nodes(again)
        assert store.index.count() == len(again)
