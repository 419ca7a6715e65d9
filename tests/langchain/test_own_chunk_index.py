"""A document whose own metadata has ``chunk_index`` is not a chunk the store returned."""

from __future__ import annotations

from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

LONG = " ".join(SAMPLE_TEXTS * 2)


def test_own_chunk_index_document_is_added_again(
    tiny_encoder: M3Encoder,
) -> None:
    # a user's own "chunk_index" (a common key in RAG code) on a document the store chunks:
    # re-adding it (unchanged, or as LangChain's index(force_update=True) does) used to be
    # refused as "chunk 0 of the stored document", though it is the whole document
    with M3VectorStore.open(tiny_encoder, chunking=True) as store:
        doc = Document(LONG, id="X", metadata={"chunk_index": 0, "src": "f"})
        store.add_documents([doc])
        stored = store.get_by_ids(["X"])
        assert len(stored) > 1
        assert store.add_documents([Document(LONG, id="X", metadata=dict(doc.metadata))]) == ["X"]
        assert store.get_by_ids(["X"]) == stored
        shorter = " ".join(SAMPLE_TEXTS)
        store.add_documents([Document(shorter, id="X", metadata={"chunk_index": 0})])
        again = store.get_by_ids(["X"])
        assert "".join(d.page_content for d in again).replace(" ", "") == shorter.replace(" ", "")
        # what the store and the retriever return are still refused
        read_back = store.get_by_ids(["X"])[1]
        retriever = M3Retriever(index=store.index, k=20)
        shown = next(d for d in retriever.invoke(SAMPLE_TEXTS[3]) if d.metadata["chunk_index"])
        for returned, add in (
            (read_back, store.add_documents),
            (read_back.model_copy(update={"page_content": "Edited."}), store.add_documents),
            (shown, retriever.add_documents),
            (shown.model_copy(update={"page_content": "Edited."}), retriever.add_documents),
        ):
            try:
                add([returned])
            except ValueError as exc:
                assert "replace the whole document" in str(exc)
            else:
                raise AssertionError(f"{returned!r} was not refused")
        assert store.get_by_ids(["X"]) == again
