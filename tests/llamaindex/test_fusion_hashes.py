"""The README's way to fuse ``M3VectorStore`` results with another retriever over the same
chunks: LlamaIndex's ``QueryFusionRetriever`` merges by ``node.hash`` (text and metadata), so
the other retriever is built from ``store.get_nodes()``, whose nodes hash as the queried ones.
"""

from __future__ import annotations

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from llamaindex_m3 import M3Embedding, M3VectorStore

TEXTS = ["Berlin is in Germany.", "The Rhine is a river.", "Oxygen is element 8."]


def test_nodes_listed_by_the_store_hash_as_the_queried_ones(tiny_embedding: M3Embedding) -> None:
    from llama_index.core.retrievers import BaseRetriever

    with M3VectorStore(tiny_embedding) as store:
        docs = [Document(text=t, id_=f"d{i}", metadata={"k": i}) for i, t in enumerate(TEXTS)]
        index = VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=tiny_embedding,
        )
        listed = store.get_nodes()

        class Listed(BaseRetriever):
            def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                return [NodeWithScore(node=n, score=1.0) for n in listed]

        vector = index.as_retriever(similarity_top_k=3)
        assert {n.node.hash for n in vector.retrieve("river")} == {n.hash for n in listed}
        fused = QueryFusionRetriever(
            [vector, Listed()],
            llm=MockLLM(),
            similarity_top_k=3,
            num_queries=1,
            mode="reciprocal_rerank",
            use_async=False,
        ).retrieve("river")
        assert len(fused) == 3  # each chunk once, found by both: its scores summed
        assert all(n.score is not None and n.score > 1 / 61 for n in fused)
