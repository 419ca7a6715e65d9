"""M3VectorStore and the other writers of the layout: late-chunked nodes, the CLI, LangChain.

One collection serves both stores, both retrievers and the ``m3kit`` command (issue #16
point 3): what one writes, the others find under the same ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

import langchain_m3
from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = REPO / "examples" / "sample_docs"
TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
]
IDS = ["berlin", "oxygen", "amazon"]
LONG = (
    "Honeybees live in colonies. A colony has one queen and many workers. Workers forage for "
    "nectar. They dance to share where flowers are. The waggle dance encodes direction. "
    "Its length encodes distance. Drones mate with queens. Winter bees live longer."
)


def test_late_chunked_nodes_are_stored_without_encoding(
    tiny_encoder: M3Encoder, tiny_embedding: M3Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)
    nodes = parser.get_nodes_from_documents([Document(text=LONG, id_="bees")])
    assert len(nodes) > 2
    encoded: list[str] = []
    real = tiny_encoder.encode

    def spy(texts: Any, **kwargs: Any) -> Any:
        if not kwargs.get("query"):
            encoded.extend(texts)
        return real(texts, **kwargs)

    monkeypatch.setattr(tiny_encoder, "encode", spy)
    with M3VectorStore(tiny_embedding) as store:
        index = VectorStoreIndex(
            nodes,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=tiny_embedding,
        )
        assert encoded == [] and store.client.count() == len(nodes)
        for node in nodes:  # each point holds its node's late-chunked dense vector
            hit = store.query(VectorStoreQuery(query_embedding=node.embedding, similarity_top_k=1))
            assert hit.nodes and hit.nodes[0].get_content() == node.get_content()
            assert hit.similarities == [pytest.approx(1.0, abs=1e-5)]
        hits = index.as_retriever(vector_store_query_mode="hybrid").retrieve("waggle dance")
        assert hits and all(h.node.ref_doc_id == "bees" for h in hits)
        # rebuilt from JSON (no ColBERT): already stored, so skipped; a fresh store refuses them
        rebuilt = [TextNode.from_json(n.to_json()) for n in nodes]
        assert store.add(rebuilt) == store.add(nodes)
    with M3VectorStore(tiny_embedding) as fresh:
        with pytest.raises(ValueError, match="rebuilt from JSON.*colbert"):
            fresh.add(rebuilt)
        assert fresh.client.count() == 0
    assert encoded == []


def _cli(store: Path, model: Path, *args: str) -> None:
    base = ["--path", str(store), "--model", str(model), "--dtype", "fp32", "--quiet"]
    assert cli([*args, "--collection", "docs", *base]) == 0


def _cli_search(
    capsys: pytest.CaptureFixture[str], store: Path, model: Path, query: str
) -> list[dict[str, Any]]:
    capsys.readouterr()
    _cli(store, model, "search", query, "-k", "3", "--json")
    hits: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["hits"]
    return hits


def test_cli_collection_is_served_by_the_store(
    tmp_path: Path, tiny_m3_path: Path, tiny_embedding: M3Embedding, capsys: Any
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)
    store_path = tmp_path / "store"
    _cli(store_path, tiny_m3_path, "index", str(docs))
    question = (docs / "honeybees.txt").read_text(encoding="utf-8")[:200]
    cli_hits = _cli_search(capsys, store_path, tiny_m3_path, question)
    with M3VectorStore(tiny_embedding, location=str(store_path), collection_name="docs") as store:
        index = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
        hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3).retrieve(
            question
        )
        assert [h.node.ref_doc_id for h in hits] == [h["doc_id"] for h in cli_hits]
        assert [h.score for h in hits] == pytest.approx([h["score"] for h in cli_hits], abs=1e-4)
        assert hits[0].node.metadata["file_name"] == "honeybees.txt"
        doc_id = str(hits[0].node.ref_doc_id)
        of_doc = MetadataFilters(filters=[MetadataFilter(key="doc_id", value=doc_id)])
        before, chunks = store.client.count(), len(store.get_nodes(filters=of_doc))
        index.delete_ref_doc(doc_id)  # every chunk of the file
        assert store.client.count() == before - chunks and store.get_nodes(filters=of_doc) == []
    assert all(
        h["doc_id"] != cli_hits[0]["doc_id"]
        for h in _cli_search(capsys, store_path, tiny_m3_path, question)
    )


def test_store_collection_is_read_by_langchain_and_the_cli(
    tmp_path: Path, tiny_m3_path: Path, tiny_encoder: M3Encoder, capsys: Any
) -> None:
    store_path = tmp_path / "store"
    pairs = enumerate(zip(TEXTS, IDS, strict=True))
    docs = [Document(text=t, id_=i, metadata={"n": n}) for n, (t, i) in pairs]
    embed = M3Embedding.from_encoder(tiny_encoder)
    with M3VectorStore(embed, location=str(store_path), collection_name="docs") as store:
        VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed,
        )
    for text, doc_id in zip(TEXTS, IDS, strict=True):
        assert _cli_search(capsys, store_path, tiny_m3_path, text)[0]["doc_id"] == doc_id
    reader = langchain_m3.M3Retriever.from_documents(
        [], tiny_encoder, location=store_path, collection="docs", k=1
    )
    try:
        for n, (text, doc_id) in enumerate(zip(TEXTS, IDS, strict=True)):
            (doc,) = reader.invoke(text)
            assert doc.page_content == text and doc.metadata["doc_id"] == doc_id
            assert doc.metadata["n"] == n
    finally:
        reader.index.close()


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_langchain_collection_ranks_like_both_retrievers(
    tmp_path: Path, tiny_encoder: M3Encoder, tiny_embedding: M3Embedding, backend: str
) -> None:
    lc_docs = [LCDocument(t, id=i) for t, i in zip(TEXTS, IDS, strict=True)]
    lc = langchain_m3.M3Retriever.from_documents(
        lc_docs, tiny_encoder, location=tmp_path, collection="shared", backend=backend, k=3
    )
    try:
        store = M3VectorStore.from_index(lc.index)
        li = M3Retriever(lc.index, similarity_top_k=3)
        index = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
        retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3)
        for text, doc_id in zip(TEXTS, IDS, strict=True):
            hits = retriever.retrieve(text)
            assert hits[0].node.ref_doc_id == doc_id
            assert [h.node.ref_doc_id for h in hits] == [d.id for d in lc.invoke(text)]
            assert [h.node.node_id for h in hits] == [n.node.node_id for n in li.retrieve(text)]
        q = VectorStoreQuery(query_str=TEXTS[1], mode=VectorStoreQueryMode.SPARSE)
        assert (store.query(q).nodes or [])[0].ref_doc_id == "oxygen"
        store.close()  # from_index: the shared index stays open
        assert lc.index.count() == 3
    finally:
        lc.index.close()


def test_nodes_late_chunked_by_an_earlier_m3kit_are_this_models(
    tiny_encoder: M3Encoder, tiny_embedding: M3Embedding
) -> None:
    """Nodes stamped with the identity m3kit gave before fingerprints held config.json
    settings (an ingestion cache, a docstore) are the same model's: stored, not refused."""
    from llamaindex_m3.node_parser import LATE_METADATA_KEY
    from m3kit.fingerprint import encoder_fingerprint

    fp = encoder_fingerprint(tiny_encoder)
    assert fp.legacy_identity != fp.identity
    late = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=12)
    nodes = late.get_nodes_from_documents([Document(text=LONG, id_="bees")])
    assert len(nodes) > 1
    for node in nodes:
        assert node.metadata[LATE_METADATA_KEY]["encoder"] == fp.identity
        node.metadata[LATE_METADATA_KEY]["encoder"] = fp.legacy_identity
    with M3VectorStore(tiny_embedding) as store:
        store.add(nodes)
        assert store.client.count() == len(nodes)
    with M3Retriever.open(tiny_encoder) as retriever:
        retriever.add_nodes(nodes)
        assert retriever.index.count() == len(nodes)


def test_vectors_of_another_model_are_refused(
    tiny_encoder: M3Encoder, other_tiny_encoder: M3Encoder, tiny_embedding: M3Embedding
) -> None:
    # they would be stored under this store's fingerprint, next to sparse / ColBERT vectors of
    # this model, and searched with this model's query vectors
    docs = [Document(text=LONG, id_="bees")]
    late = M3LateChunkingNodeParser.from_encoder(other_tiny_encoder, chunk_size=12)
    with M3VectorStore(tiny_embedding) as store:
        storage = StorageContext.from_defaults(vector_store=store)
        with pytest.raises(ValueError, match="late-chunked by another model"):
            store.add(late.get_nodes_from_documents(docs))
        with (
            M3Retriever.open(tiny_encoder) as retriever,
            pytest.raises(ValueError, match="late-chunked by another model"),
        ):
            retriever.add_nodes(late.get_nodes_from_documents(docs))
        with pytest.raises(ValueError, match="embedded by another model"):
            VectorStoreIndex.from_documents(
                docs,
                storage_context=storage,
                embed_model=M3Embedding.from_encoder(other_tiny_encoder),
            )
        assert store.client.count() == 0
        VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=tiny_embedding)
        assert store.client.count() > 0
