"""NaiveChunker: the late chunker's spans, each chunk encoded alone; as_chunker's meanings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.chunking import Chunker, NaiveChunker, as_chunker, default_chunk_size
from m3kit.late_chunking import LateChunker

from .conftest import TEXTS

LONG = " ".join(
    f"Sentence number {i} talks about topic {i % 7} and then some more words follow."
    for i in range(40)
)


@pytest.fixture(scope="module")
def small(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=48)


def test_same_spans_as_late_chunking(tiny_encoder: M3Encoder) -> None:
    texts = [LONG, *TEXTS.values()]
    for size in (8, 20, 256):
        naive = NaiveChunker(tiny_encoder, chunk_size=size)
        late = LateChunker(tiny_encoder, chunk_size=size)
        assert naive.spans(texts) == late.spans(texts), size
        chunks = naive.chunk(texts)
        for text, doc in zip(texts, chunks, strict=True):
            assert "".join(c.text for c in doc) == text
            assert [c.index for c in doc] == list(range(len(doc)))
        late_chunks = late.chunk(texts)
        for ours, theirs in zip(chunks, late_chunks, strict=True):
            assert [(c.start, c.end, c.token_start, c.token_end) for c in ours] == [
                (c.start, c.end, c.token_start, c.token_end) for c in theirs
            ]


def test_each_chunk_is_encoded_alone(minilm_encoder: M3Encoder) -> None:
    """WordPiece (MiniLM, real weights): a chunk's vector equals encode([chunk.text])."""
    chunks = NaiveChunker(minilm_encoder, chunk_size=40).chunk([LONG])[0]
    assert len(chunks) > 3
    ref = minilm_encoder.encode([c.text for c in chunks])
    for i, c in enumerate(chunks):
        assert c.vectors.token_counts[0] == ref.token_counts[i]
        np.testing.assert_allclose(c.dense, ref.dense[i], rtol=1e-5, atol=1e-6)


def test_sentencepiece_chunks_start_at_their_word(tiny_m3_xlmr_path: Path) -> None:
    """XLM-R's tokenizer (BGE-M3's): "▁Sent" of " Sentence" belongs to the chunk of its word.

    Its offset starts at the space that ends the previous sentence; each chunk's tokens are the
    ones the chunk's text alone tokenises to (less a trailing lone "▁" for its final space).
    """
    enc = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    naive = NaiveChunker(enc, chunk_size=40)
    chunks = naive.chunk([LONG])[0]
    plan = naive._planner.plan(LONG)
    assert len(chunks) > 3
    for c, (a, b) in zip(chunks, plan.content_bounds, strict=True):
        ours = plan.ids[1 + a : 1 + b].tolist()
        alone = enc.tokenize([c.text])[0].input_ids[1:-1]
        if enc.tokenizer.convert_ids_to_tokens(alone[-1:]) == ["▁"]:  # type: ignore[attr-defined]
            alone = alone[:-1]
        assert ours == alone, c.text
        ref = enc.encode_tokenized([[*naive._planner.prefix, *ours, *naive._planner.suffix]])
        np.testing.assert_allclose(c.dense, ref.dense[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c.colbert, ref.colbert[0], rtol=1e-5, atol=1e-6)
        assert c.sparse == ref.sparse[0]


def test_one_chunk_document_equals_encode(tiny_encoder: M3Encoder) -> None:
    text = TEXTS["chinese"]
    (chunk,) = NaiveChunker(tiny_encoder).chunk([text])[0]
    ref = tiny_encoder.encode([text])
    assert chunk.text == text
    np.testing.assert_allclose(chunk.dense, ref.dense[0], rtol=1e-5, atol=1e-6)
    assert chunk.sparse.indices.tolist() == ref.sparse[0].indices.tolist()


def test_default_size_fits_the_window(small: M3Encoder, tiny_encoder: M3Encoder) -> None:
    assert default_chunk_size(tiny_encoder) == 256
    assert default_chunk_size(small) == 46  # 48 minus <s> and </s>
    chunker = NaiveChunker(small)
    assert chunker.chunk_size == 46
    assert chunker.signature == "NaiveChunker(splitter=sentences, chunk_size=46)"
    chunks = chunker.chunk([LONG])[0]
    assert "".join(c.text for c in chunks) == LONG
    assert all(c.vectors.token_counts[0] <= small.max_length for c in chunks)
    with pytest.raises(ValueError, match=r"chunk_size=47 does not fit .* at most 46"):
        NaiveChunker(small, chunk_size=47)


def test_splitter_chunk_longer_than_the_window_is_an_error(small: M3Encoder) -> None:
    def halves(text: str) -> list[tuple[int, int]]:
        return [(0, len(text) // 2), (len(text) // 2, len(text))]

    chunker = NaiveChunker(small, splitter=halves)
    assert chunker.signature.startswith("NaiveChunker(splitter=")
    assert "halves" in chunker.signature
    with pytest.raises(ValueError, match=r"chunk 0 of text 1 is \d+ tokens, more than .* 46"):
        chunker.chunk(["Short.", LONG])


def test_as_chunker(tiny_encoder: M3Encoder) -> None:
    assert as_chunker(tiny_encoder) is None
    assert isinstance(as_chunker(tiny_encoder, chunking=True), NaiveChunker)
    assert isinstance(as_chunker(tiny_encoder, late_chunking=True), LateChunker)
    mine = NaiveChunker(tiny_encoder, chunk_size=32)
    late = LateChunker(tiny_encoder, chunk_size=32)
    assert as_chunker(tiny_encoder, chunking=mine) is mine
    assert as_chunker(tiny_encoder, chunking=late) is late  # any Chunker
    assert isinstance(mine, Chunker) and isinstance(late, Chunker)
    # Both: the chunks chunking= cuts, pooled late (late chunking is a pooling choice).
    both = as_chunker(tiny_encoder, chunking=mine, late_chunking=True)
    assert isinstance(both, LateChunker) and both.chunk_size == 32
    assert both.spans([LONG]) == mine.spans([LONG])
    default = as_chunker(tiny_encoder, chunking=True, late_chunking=True)
    assert isinstance(default, LateChunker)
    assert default.spans([LONG]) == NaiveChunker(tiny_encoder).spans([LONG])
    assert as_chunker(tiny_encoder, chunking=mine, late_chunking=late) is late  # same chunks
    assert as_chunker(tiny_encoder, chunking=late, late_chunking=True) is late
    with pytest.raises(ValueError, match="cuts other chunks than chunking=NaiveChunker"):
        as_chunker(tiny_encoder, chunking=True, late_chunking=late)
    with pytest.raises(ValueError, match="two late chunkers"):
        as_chunker(tiny_encoder, chunking=late, late_chunking=LateChunker(tiny_encoder))
    with pytest.raises(ValueError, match="pools late the chunks that chunking= cuts"):
        as_chunker(tiny_encoder, chunking=_Whole(), late_chunking=True)
    with pytest.raises(TypeError, match="late_chunking must be True, False or a LateChunker"):
        as_chunker(tiny_encoder, chunking=True, late_chunking="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunking must be True, False or a chunker"):
        as_chunker(tiny_encoder, chunking=256)  # type: ignore[arg-type]


class _Whole:
    """A chunker of its own (one chunk per text), not a NaiveChunker."""

    signature = "whole-test"

    def chunk(self, texts: Any, *, show_progress: bool | None = None) -> list[list[Any]]:
        raise AssertionError("not called")
