"""A reindex never rebuilds a document from chunks that leave out the end of its text.

A reindex (another encoder, or another sparse cut) rebuilds each chunked document from its
stored chunk texts, joined. A splitter may leave text after the last chunk (LangChain's
splitters strip whitespace, so a document ending in a newline ends after its last piece), and
that text's tokens were part of the chunks' vectors (the last chunk owns them): rebuilt from
the joined chunks, the document lost them, and its vectors changed (a ColBERT vector fewer,
late dense moved) while its version stayed, so adding it again was skipped. Such a document is
now refused by the reindex, as one whose chunks leave a gap is, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_text_splitters import RecursiveCharacterTextSplitter

from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.late_chunking import LateChunker
from m3kit.store.filters import documents_filter
from tests.reliability.killing import assert_same_points, index_points

from .conftest import open_c

TEXT = "Alpha beta gamma delta. Epsilon zeta eta theta iota.\n\n"  # ends after the last piece
TILED = "Kappa lambda mu nu. Xi omicron pi rho."  # its one piece is the whole text


def _halves(text: str) -> list[tuple[int, int]]:
    end = len(text.rstrip())
    return [(0, end // 2), (end // 2, end)]


SPLITTERS = {
    "langchain": lambda: RecursiveCharacterTextSplitter(chunk_size=400, chunk_overlap=0),
    "spans": lambda: _halves,
}
CHUNKERS = {"late": LateChunker, "naive": NaiveChunker}


@pytest.mark.parametrize("splitter", list(SPLITTERS))
@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_a_document_with_text_after_its_last_chunk_is_not_rebuilt_without_it(
    enc_a: M3Encoder, backend: str, tmp_path: Path, kind: str, splitter: str
) -> None:
    chunker = CHUNKERS[kind](enc_a, splitter=SPLITTERS[splitter]())
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts([TEXT, TILED], doc_ids=["d", "t"], chunker=chunker)
        before = index_points(index)
        record = dict(index.store.collection_metadata())
    assert max(p["end"] for p, _ in before.values() if p["doc_id"] == "d") < len(TEXT)
    with pytest.raises(ValueError, match=r"reindex cannot rebuild 1 stored document.*'d'"):
        open_c(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)
    with open_c(enc_a, tmp_path, backend) as index:  # nothing was written
        assert index.store.collection_metadata() == record
        assert_same_points(index_points(index), before)


@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_a_document_its_chunks_tile_is_still_rebuilt(
    enc_a: M3Encoder, backend: str, tmp_path: Path, kind: str
) -> None:
    chunker = CHUNKERS[kind](enc_a, splitter=SPLITTERS["langchain"]())
    with open_c(enc_a, tmp_path / "a", backend) as index:
        index.add_texts([TILED], doc_ids=["t"], chunker=chunker)
    with open_c(enc_a, tmp_path / "b", backend, sparse_top_k=3) as fresh:
        fresh.add_texts([TILED], doc_ids=["t"], chunker=chunker)
        want = index_points(fresh)
    with open_c(enc_a, tmp_path / "a", backend, sparse_top_k=3, reindex=True) as re:
        assert_same_points(index_points(re), want)


LONG = " ".join(f"Sentence {i} tells of the Amazon river and its banks." for i in range(6))


@pytest.mark.parametrize("gone", ["last", "first"])
@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_a_document_with_a_chunk_deleted_alone_is_not_rebuilt_without_it(
    enc_a: M3Encoder, backend: str, tmp_path: Path, kind: str, gone: str
) -> None:
    """A chunk deleted alone (``M3Store.delete_points``, LlamaIndex ``delete_nodes``) leaves
    its document incomplete: ``add_texts`` writes it whole again. Its last chunk gone, the rest
    still tiled a text, so a reindex rebuilt the document from that shorter text: late vectors
    moved (even for a sparse cut change alone) and its chunk count was lowered, so the
    document looked complete and adding it again was skipped, its end lost for good."""
    chunker = CHUNKERS[kind](enc_a, chunk_size=8)
    with open_c(enc_a, tmp_path, backend) as index:
        index.add_texts([LONG, TILED], doc_ids=["d", "t"], chunker=chunker)
        stored = index.store.get(filter=documents_filter(["d"]))
        chunks = sorted(stored, key=lambda c: c.chunk_index)
        assert len(chunks) >= 3
        index.store.delete_points([(chunks[-1] if gone == "last" else chunks[0]).id])
        before = index_points(index)
        record = dict(index.store.collection_metadata())
    with pytest.raises(ValueError, match=r"reindex cannot rebuild 1 stored document.*'d'") as e:
        open_c(enc_a, tmp_path, backend, sparse_top_k=3, reindex=True)
    missing = len(chunks) - 1 if gone == "last" else 0
    assert f"chunk {missing} of its {len(chunks)} chunks is missing" in str(e.value)
    with open_c(enc_a, tmp_path, backend) as index:  # nothing was written
        assert index.store.collection_metadata() == record
        assert_same_points(index_points(index), before)
        index.add_texts([LONG], doc_ids=["d"], chunker=chunker)  # the way out: written whole
        assert index.store.count(documents_filter(["d"])) == len(chunks)
