"""M3LateChunkingSplitter: chunk Documents with offsets, paired with their late-chunked vectors."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import BaseDocumentTransformer, Document

from langchain_m3.splitter import M3LateChunkingSplitter, late_chunk_vectors
from m3kit import Head
from m3kit.late_chunking import LateChunker

TEXT = (
    "Berlin is the capital and largest city of Germany. It has about 3.8 million inhabitants. "
    "北京是中华人民共和国的首都。上海是中国最大的城市之一！ Emoji 🙂 end."
)


@pytest.fixture(scope="module")
def splitter(tiny_encoder):  # type: ignore[no-untyped-def]
    return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=10)


def test_split_documents_with_vectors(splitter, tiny_encoder):  # type: ignore[no-untyped-def]
    docs = [Document(page_content=TEXT, metadata={"src": "a"}), Document(page_content="Short.")]
    pairs = splitter.split_documents_with_vectors(docs)
    expected = LateChunker(tiny_encoder, chunk_size=10).chunk([TEXT, "Short."])
    flat = [c for chunks in expected for c in chunks]
    assert len(pairs) == len(flat) > 3
    for (doc, chunk), ref in zip(pairs, flat, strict=True):
        source = TEXT if doc.metadata.get("src") == "a" else "Short."
        start, end = doc.metadata["start_index"], doc.metadata["end_index"]
        assert doc.page_content == chunk.text == source[start:end]
        assert doc.metadata["chunk_index"] == chunk.index == ref.index
        np.testing.assert_allclose(chunk.dense, ref.dense, atol=1e-6)
        assert chunk.sparse == ref.sparse
        assert chunk.colbert.shape == ref.colbert.shape
    assert "".join(d.page_content for d, _ in pairs if d.metadata.get("src") == "a") == TEXT


def test_transformer_interface_returns_same_chunks(splitter):  # type: ignore[no-untyped-def]
    assert isinstance(splitter, BaseDocumentTransformer)
    docs = [Document(page_content=TEXT, metadata={"src": "a"})]
    plain = splitter.transform_documents(docs)
    with_vectors = [d for d, _ in splitter.split_documents_with_vectors(docs)]
    assert [(d.page_content, d.metadata) for d in plain] == [
        (d.page_content, d.metadata) for d in with_vectors
    ]
    assert splitter.split_text(TEXT) == [d.page_content for d in plain]
    with pytest.raises(TypeError, match="unexpected"):
        splitter.transform_documents(docs, foo=1)


async def test_atransform_documents(splitter):  # type: ignore[no-untyped-def]
    docs = [Document(page_content=TEXT)]
    assert [d.page_content for d in await splitter.atransform_documents(docs)] == [
        d.page_content for d in splitter.transform_documents(docs)
    ]


def test_langchain_text_splitter_boundaries(tiny_encoder):  # type: ignore[no-untyped-def]
    splitters = pytest.importorskip("langchain_text_splitters")
    inner = splitters.RecursiveCharacterTextSplitter(chunk_size=40, chunk_overlap=0)
    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, splitter=inner)
    docs = splitter.split_documents([Document(page_content=TEXT)])
    assert [d.page_content for d in docs] == inner.split_text(TEXT)


def test_repeated_lines_keep_every_line(tiny_encoder):  # type: ignore[no-untyped-def]
    """A log with repeated lines: each piece is its own chunk, no line is in no chunk."""
    splitters = pytest.importorskip("langchain_text_splitters")
    log = (
        "connection lost, retrying\nconnection lost, retrying\n"
        "connection lost, retrying\nDISK FULL on /var/lib/postgres, database halted\nshutdown"
    )
    inner = splitters.RecursiveCharacterTextSplitter(chunk_size=55, chunk_overlap=0)
    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, splitter=inner)
    docs = splitter.split_documents([Document(page_content=log)])
    assert [d.page_content for d in docs] == inner.split_text(log)  # 4 pieces, 4 chunks
    assert [d.metadata["start_index"] for d in docs] == [0, 52, 78, 126]


def test_dense_only_checkpoint(minilm_encoder):  # type: ignore[no-untyped-def]
    splitter = M3LateChunkingSplitter.from_encoder(minilm_encoder, chunk_size=8)
    pairs = splitter.split_documents_with_vectors([Document(page_content=TEXT)])
    assert len(pairs) > 1
    for _, chunk in pairs:
        assert chunk.dense.shape == (384,)
        assert chunk.vectors.heads == {Head.DENSE}


def test_langchain_index_stores_late_chunks(tiny_encoder):  # type: ignore[no-untyped-def]
    """LangChain's index() copies every Document: the copies still carry the vectors."""
    import gc

    from langchain_core.indexing import InMemoryRecordManager, index

    from langchain_m3 import M3VectorStore
    from langchain_m3.splitter import LATE_CHUNK_KEY, carried_chunk

    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=6)
    store = M3VectorStore.open(tiny_encoder)
    manager = InMemoryRecordManager("late")
    manager.create_schema()
    kwargs: dict[str, object] = {
        "cleanup": "incremental",
        "source_id_key": "source",
        "key_encoder": "sha256",
    }
    v1 = "Alpha sentence one. Beta sentence two. Gamma sentence three. Delta four."
    v2 = "Alpha sentence one. Beta sentence TWO CHANGED."
    first = splitter.split_documents([Document(v1, metadata={"source": "a.txt"})])
    assert index(first, manager, store, **kwargs)["num_added"] == len(first)  # type: ignore[arg-type]
    assert store.index.count() == len(first)
    again = splitter.split_documents([Document(v1, metadata={"source": "a.txt"})])
    assert index(again, manager, store, **kwargs)["num_skipped"] == len(first)  # type: ignore[arg-type]
    second = splitter.split_documents([Document(v2, metadata={"source": "a.txt"})])
    result = index(second, manager, store, **kwargs)  # type: ignore[arg-type]
    # every chunk's vectors changed with its document (its context), so all are replaced
    assert (result["num_added"], result["num_deleted"]) == (len(second), len(first))
    assert store.index.count() == len(second)
    # a copy finds the vectors while the Document the splitter returned lives, not after
    copy = Document(**second[-1].model_dump())
    carried = carried_chunk(copy)
    assert carried is not None and carried.chunk.text == copy.page_content
    elsewhere = Document(**copy.model_dump())
    elsewhere.metadata[LATE_CHUNK_KEY] = {**copy.metadata[LATE_CHUNK_KEY], "carry": "0" * 32}
    with pytest.raises(ValueError, match="no longer carries its vectors"):
        store.add_documents([elsewhere])  # as rebuilt in another process
    del second, result, carried
    gc.collect()
    assert carried_chunk(copy) is None


def test_default_chunk_size_fits_a_256_token_model(minilm_encoder, minilm_path, h):  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2 (256 tokens a pass, every head from the chunk alone): the default
    chunks hold at most its 254 text tokens, through the splitter and the stores alike."""
    from langchain_m3 import M3Retriever, M3VectorStore

    text = h.long_text  # its first sentence is cut at exactly chunk_size tokens
    expected = [text[s:e] for s, e in LateChunker(minilm_encoder).spans([text])[0]]
    assert len(expected) > 2
    splitter = M3LateChunkingSplitter.from_encoder(minilm_encoder)
    assert splitter.chunker.chunk_size == 254
    docs = splitter.split_documents([Document(page_content=text)])
    assert [d.page_content for d in docs] == expected and "".join(expected) == text
    loaded = M3LateChunkingSplitter(model_name_or_path=str(minilm_path), dtype="fp32")
    assert loaded.chunk_size is None  # as given; the chunker has the model's default
    assert loaded.chunker.signature == splitter.chunker.signature
    assert (
        M3LateChunkingSplitter.from_encoder(minilm_encoder, chunk_size=64).chunker.chunk_size == 64
    )
    with pytest.raises(ValueError, match="chunk_size"):
        M3LateChunkingSplitter.from_encoder(minilm_encoder, chunk_size=0)
    with M3VectorStore.open(minilm_encoder, late_chunking=True) as store:
        assert store.add_documents([Document(page_content=text, id="long")]) == ["long"]
        assert [d.page_content for d in store.get_by_ids(["long"])] == expected
        M3Retriever(index=store.index).add_documents(
            [Document(page_content=text, id="again")], late_chunking=True
        )
        assert [d.page_content for d in store.get_by_ids(["again"])] == expected


def test_chunks_get_their_own_copy_of_nested_metadata(splitter):  # type: ignore[no-untyped-def]
    """As LangChain's ``TextSplitter`` (``copy.deepcopy``): editing one chunk's nested metadata
    changes neither its siblings nor the source document."""
    doc = Document(page_content=TEXT, metadata={"tags": ["wiki"], "author": {"name": "A"}})
    chunks = splitter.split_documents([doc])
    assert len(chunks) > 1
    chunks[0].metadata["tags"].append("edited")
    chunks[0].metadata["author"]["name"] = "B"
    assert doc.metadata == {"tags": ["wiki"], "author": {"name": "A"}}
    assert all(c.metadata["tags"] == ["wiki"] for c in chunks[1:])
    assert all(c.metadata["author"] == {"name": "A"} for c in chunks[1:])


def test_a_document_that_became_empty_replaces_its_chunks(tiny_encoder):  # type: ignore[no-untyped-def]
    """Documented difference from LangChain's splitters: an empty or whitespace-only document
    gives one chunk, so ``index(cleanup="incremental")`` deletes its older chunks."""
    from langchain_core.indexing import InMemoryRecordManager, index

    from langchain_m3 import M3VectorStore

    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=6)
    for blank in ("", " \n\t "):
        chunks = splitter.split_documents([Document(blank, metadata={"source": "a.txt"})])
        assert [(c.page_content, c.metadata["start_index"]) for c in chunks] == [(blank, 0)]
    store = M3VectorStore.open(tiny_encoder)
    manager = InMemoryRecordManager("blank")
    manager.create_schema()
    kwargs: dict[str, object] = {"cleanup": "incremental", "source_id_key": "source"}
    kwargs["key_encoder"] = "sha256"
    first = splitter.split_documents([Document(TEXT, metadata={"source": "a.txt"})])
    index(first, manager, store, **kwargs)  # type: ignore[arg-type]
    emptied = splitter.split_documents([Document(" \n", metadata={"source": "a.txt"})])
    result = index(emptied, manager, store, **kwargs)  # type: ignore[arg-type]
    assert (result["num_added"], result["num_deleted"]) == (1, len(first))
    assert store.index.count() == 1


def test_create_documents_as_a_text_splitter(splitter):  # type: ignore[no-untyped-def]
    """``create_documents(texts, metadatas)`` (LangChain's ``TextSplitter`` entry point for
    plain texts) gives the chunks ``split_documents`` gives for those texts, carrying their
    vectors; it was missing (``AttributeError``)."""
    texts = [TEXT, "Short."]
    chunks = splitter.create_documents(texts, metadatas=[{"src": "a"}, {"src": "b"}])
    want = splitter.split_documents(
        [Document(TEXT, metadata={"src": "a"}), Document("Short.", metadata={"src": "b"})]
    )
    assert [(d.page_content, d.metadata) for d in chunks] == [
        (d.page_content, d.metadata) for d in want
    ]
    assert {d.metadata["src"] for d in chunks} == {"a", "b"}
    np.testing.assert_allclose(
        late_chunk_vectors(chunks[0]).dense, late_chunk_vectors(want[0]).dense, atol=1e-6
    )
    plain = splitter.create_documents(["Short."])  # metadatas default: none
    assert [d.page_content for d in plain] == ["Short."]
    assert set(plain[0].metadata) == {"start_index", "end_index", "chunk_index", "m3_late_chunk"}
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        splitter.create_documents(texts, metadatas=[{"src": "a"}])
    with pytest.raises(TypeError, match="wrap a single text"):
        splitter.create_documents(TEXT)
