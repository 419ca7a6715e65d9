"""LateChunker: spans, token ownership, head pooling against independent references, windows."""

from __future__ import annotations

import numpy as np
import pytest

from m3kit import Head, HeadNotComputedError, M3Encoder
from m3kit.chunking import NaiveChunker, as_chunker, default_chunk_size
from m3kit.late_chunking import (
    ChunkingConfig,
    DensePooling,
    LateChunker,
    WindowPlacement,
    as_late_chunker,
    plan_chunk_windows,
    plan_windows,
)

ALL = ["dense", "sparse", "colbert"]  # every head pooled late


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- spans and token ownership ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["english", "chinese", "emoji", "whitespace"])
@pytest.mark.parametrize("chunk_size", [1, 5, 12, 1000])
def test_spans_tile_and_tokens_partitioned(tiny_encoder, h, name, chunk_size):  # type: ignore[no-untyped-def]
    text = h.texts[name]
    chunks = LateChunker(tiny_encoder, chunk_size=chunk_size).chunk([text])[0]
    h.assert_spans_exact(chunks, text, tiled=True)
    ids = h.document_ids(tiny_encoder, text)
    h.assert_tokens_partitioned(chunks, len(ids))
    for c in chunks[1:-1]:  # specials aside, no chunk exceeds the budget unless cut impossible
        assert c.token_end - c.token_start <= chunk_size or chunk_size == 1
    if chunk_size == 1000:
        assert len(chunks) == 1


@pytest.mark.parametrize("name", ["english", "chinese", "emoji", "whitespace"])
def test_minilm_spans_and_tokens(minilm_encoder, h, name):  # type: ignore[no-untyped-def]
    """BERT WordPiece (lower-casing, [UNK] for emoji, whitespace dropped) keeps the same rules."""
    text = h.texts[name]
    chunks = LateChunker(minilm_encoder, chunk_size=6).chunk([text])[0]
    h.assert_spans_exact(chunks, text, tiled=True)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(minilm_encoder, text)))


def test_token_belongs_to_chunk_containing_its_start(tiny_encoder, h):  # type: ignore[no-untyped-def]
    text = h.texts["english"]
    chunker = LateChunker(tiny_encoder, chunk_size=7)
    chunks = chunker.chunk([text])[0]
    enc = tiny_encoder.tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    for c in chunks:
        for t in range(c.token_start, c.token_end):
            if t in (0, len(offsets) - 1):
                continue  # CLS -> first chunk, </s> -> last chunk (checked by partition test)
            s, e = offsets[t]
            # its first non-space character: a "▁Word" piece goes with its word, not the space
            start = next((i for i in range(s, e) if not text[i].isspace()), s)
            owner = [k for k in chunks if k.start <= start < k.end]
            assert owner == [c]


def test_special_tokens_go_to_first_and_last_chunk(tiny_encoder, h):  # type: ignore[no-untyped-def]
    text = h.texts["english"]
    chunks = LateChunker(tiny_encoder, chunk_size=8).chunk([text])[0]
    ids = h.document_ids(tiny_encoder, text)
    assert ids[chunks[0].token_start] == tiny_encoder.tokenizer.cls_token_id
    assert ids[chunks[-1].token_end - 1] == tiny_encoder.tokenizer.eos_token_id
    # ColBERT: CLS has no vector; the last chunk keeps </s> (like encode()).
    assert chunks[0].colbert.shape[0] == chunks[0].token_end - 1
    assert chunks[-1].colbert.shape[0] == chunks[-1].token_end - chunks[-1].token_start


def test_empty_and_blank_documents_give_one_chunk(tiny_encoder):  # type: ignore[no-untyped-def]
    out = LateChunker(tiny_encoder).chunk(["", "   \n  "])
    assert [len(c) for c in out] == [1, 1]
    empty = out[0][0]
    assert (empty.text, empty.start, empty.end, empty.token_start, empty.token_end) == (
        "",
        0,
        0,
        0,
        2,
    )
    ref = tiny_encoder.encode([""])
    assert empty.sparse == ref.sparse[0]
    np.testing.assert_allclose(empty.colbert, ref.colbert[0], atol=1e-5)


# -- heads against independent references -----------------------------------------------------
@pytest.mark.parametrize("name", ["english", "chinese", "emoji"])
def test_minilm_one_chunk_equals_encode(minilm_encoder, h, name):  # type: ignore[no-untyped-def]
    """MiniLM mean-pools, so a one-chunk document's late vector is its ordinary embedding."""
    text = h.texts[name]
    chunks = LateChunker(minilm_encoder, chunk_size=10_000).chunk([text])[0]
    assert len(chunks) == 1
    assert chunks[0].vectors.heads == frozenset({Head.DENSE})
    np.testing.assert_allclose(chunks[0].dense, minilm_encoder.encode([text]).dense[0], atol=2e-6)
    with pytest.raises(HeadNotComputedError):
        _ = chunks[0].sparse


def test_tiny_one_chunk_equals_mean_of_token_states(tiny_encoder, h):  # type: ignore[no-untyped-def]
    text = h.texts["english"]
    chunk = LateChunker(tiny_encoder, chunk_size=10_000, late_heads=ALL).chunk([text])[0][0]
    ids = h.document_ids(tiny_encoder, text)
    ref = h.reference_states(tiny_encoder, ids)
    np.testing.assert_allclose(chunk.dense, _normalise(ref.hidden.mean(0)), atol=1e-5)
    # sparse and ColBERT of a one-chunk document are exactly what encode() gives the text
    out = tiny_encoder.encode([text])
    assert chunk.sparse.indices.tolist() == out.sparse[0].indices.tolist()
    np.testing.assert_allclose(chunk.sparse.values, out.sparse[0].values, atol=1e-5)
    np.testing.assert_allclose(chunk.colbert, out.colbert[0], atol=1e-5)


@pytest.mark.parametrize("name", ["english", "chinese", "emoji"])
def test_every_chunk_pools_its_own_tokens(tiny_encoder, h, name):  # type: ignore[no-untyped-def]
    text = h.texts[name]
    chunker = LateChunker(
        tiny_encoder, chunk_size=6, window=tiny_encoder.max_length, late_heads=ALL
    )
    chunks = chunker.chunk([text])[0]
    assert len(chunks) > 1
    ids = np.asarray(h.document_ids(tiny_encoder, text))
    ref = h.reference_states(tiny_encoder, ids.tolist())
    tok = tiny_encoder.tokenizer  # dropped like encoder.sparse_vector does (M3 drops these too)
    special = {getattr(tok, f"{n}_token_id") for n in ("cls", "eos", "pad", "unk", "bos", "sep")}
    for c in chunks:
        ts, te = c.token_start, c.token_end
        np.testing.assert_allclose(c.dense, _normalise(ref.hidden[ts:te].mean(0)), atol=1e-5)
        expected: dict[int, float] = {}
        for tid, w in zip(ids[ts:te].tolist(), ref.sparse[ts:te].tolist(), strict=True):
            if tid not in special and w > 0:
                expected[tid] = max(w, expected.get(tid, 0.0))
        assert c.sparse.indices.tolist() == sorted(expected)
        np.testing.assert_allclose(c.sparse.values, [expected[k] for k in sorted(expected)], 1e-5)
        np.testing.assert_allclose(c.colbert, ref.colbert[max(ts, 1) - 1 : te - 1], atol=1e-5)


def test_naive_dense_pooling_encodes_chunk_alone(tiny_encoder, h):  # type: ignore[no-untyped-def]
    text = h.texts["english"]
    whole = tiny_encoder.max_length
    late = LateChunker(tiny_encoder, chunk_size=8, window=whole, late_heads=ALL).chunk([text])[0]
    naive = LateChunker(tiny_encoder, chunk_size=8, window=whole, dense_pooling="naive")
    naive = naive.chunk([text])[0]
    assert [c.text for c in late] == [c.text for c in naive]
    alone = NaiveChunker(tiny_encoder, chunk_size=8).chunk([text])[0]  # each chunk alone
    alone_dense = np.stack([c.dense for c in alone])
    np.testing.assert_allclose(np.stack([c.dense for c in naive]), alone_dense, atol=1e-6)
    assert not np.allclose(late[1].dense, naive[1].dense, atol=1e-3)  # context matters
    for a, b in zip(late, naive, strict=True):  # sparse / ColBERT stay late
        assert a.sparse == b.sparse


def test_batching_documents_does_not_change_vectors(tiny_encoder, h):  # type: ignore[no-untyped-def]
    texts = [h.texts["english"], h.texts["chinese"], h.texts["emoji"]]
    chunker = LateChunker(tiny_encoder, chunk_size=9)
    together = chunker.chunk(texts)
    for text, chunks in zip(texts, together, strict=True):
        alone = chunker.chunk([text])[0]
        assert [c.text for c in alone] == [c.text for c in chunks]
        for a, b in zip(alone, chunks, strict=True):
            np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
            np.testing.assert_allclose(a.colbert, b.colbert, atol=1e-5)


# -- windows ----------------------------------------------------------------------------------
def test_plan_windows_owns_every_token_once() -> None:
    for n in range(0, 60):
        for capacity, overlap in [(1, 0), (4, 0), (4, 3), (10, 4), (16, 8)]:
            windows = plan_windows(n, capacity, overlap) if n else []
            owned = [t for w in windows for t in range(w.own_start, w.own_end)]
            assert owned == list(range(n))
            for w in windows:
                assert 0 <= w.start <= w.own_start <= w.own_end <= w.end <= n
                assert w.end - w.start <= capacity
                # a token keeps >= overlap // 2 context on each side unless at the document edge
                if w.own_start > w.start or w.start > 0:
                    assert w.own_start - w.start >= overlap // 2
                if w.end < n:
                    assert w.end - w.own_end >= overlap // 2


def test_plan_chunk_windows_whole_chunks_once() -> None:
    """Windows own whole chunks, tile the document, fit the capacity, keep the overlap."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 12, size=int(rng.integers(1, 15))).tolist()
        ends = np.cumsum(sizes).tolist()
        bounds = [(e - s, e) for e, s in zip(ends, sizes, strict=True)]
        n = ends[-1]
        capacity = int(rng.integers(1, 30))
        overlap = int(rng.integers(0, capacity))
        windows = plan_chunk_windows(bounds, capacity, overlap)
        owned = [t for w in windows for t in range(w.own_start, w.own_end)]
        assert owned == list(range(n))
        starts = {a for a, _ in bounds} | {n}
        for w in windows:
            assert 0 <= w.start <= w.own_start < w.own_end <= w.end <= n
            assert w.end - w.start <= max(capacity, n if n <= capacity else 0)
            whole = w.own_start in starts and w.own_end in starts
            inside_one = any(a <= w.own_start and w.own_end <= b for a, b in bounds)
            assert whole or inside_one  # whole chunks, or a piece of an oversize chunk
            if whole and n > capacity:
                room = capacity - (w.own_end - w.own_start)
                want = min(overlap // 2, w.own_start) + min(overlap - overlap // 2, n - w.own_end)
                assert (w.own_start - w.start) + (w.end - w.own_end) == min(want, room)
    # no overlap: every token goes through the model exactly once
    windows = plan_chunk_windows([(0, 5), (5, 9), (9, 17), (17, 22)], 10, 0)
    assert [(w.start, w.end) for w in windows] == [(0, 9), (9, 17), (17, 22)]
    # a chunk longer than the window is split inside itself (fixed-stride windows)
    windows = plan_chunk_windows([(0, 4), (4, 30), (30, 33)], 10, 2)
    assert (windows[0].own_start, windows[0].own_end) == (0, 4)
    assert all(w.start >= 4 and w.end <= 30 for w in windows[1:-1])


def test_window_states_match_direct_forward(tiny_small_window, h):  # type: ignore[no-untyped-def]
    """A document longer than the window: each token's state is its owning window's state."""
    enc: M3Encoder = tiny_small_window
    text = " ".join([h.texts["english"]] * 3)
    chunker = LateChunker(
        enc, chunk_size=10, window=64, overlap=16, placement="chunks", late_heads=ALL
    )
    assert chunker.window == 64 and chunker.capacity == 62
    chunks = chunker.chunk([text])[0]
    ids = h.document_ids(enc, text)
    assert len(ids) > 2 * 64
    h.assert_tokens_partitioned(chunks, len(ids))
    # rebuild per-token states from the windows, each window run on its own (no chunker)
    content = ids[1:-1]
    bounds = [(max(c.token_start - 1, 0), min(c.token_end - 1, len(content))) for c in chunks]
    windows = plan_chunk_windows(bounds, 62, 16)
    assert len(windows) >= 3
    for c in chunks:  # every chunk's states come from one window
        first, last = c.token_start - 1, c.token_end - 1
        assert sum(w.own_start < last and first < w.own_end for w in windows) == 1
    hidden = np.zeros((len(ids), enc.dense_dim), dtype=np.float32)
    for w in windows:
        ref = h.reference_states(enc, [ids[0], *content[w.start : w.end], ids[-1]])
        hidden[1 + w.own_start : 1 + w.own_end] = ref.hidden[
            1 + w.own_start - w.start : 1 + w.own_end - w.start
        ]
        if w.own_start == 0:
            hidden[0] = ref.hidden[0]
        if w.own_end == len(content):
            hidden[-1] = ref.hidden[-1]
    for c in chunks:
        mean = hidden[c.token_start : c.token_end].mean(0)
        np.testing.assert_allclose(c.dense, _normalise(mean), atol=1e-5)


def test_document_that_fits_equals_single_pass(tiny_encoder, tiny_small_window, h):  # type: ignore[no-untyped-def]
    """Fits the window: windowing changes nothing; the result equals one plain forward pass."""
    text = h.texts["chinese"]
    ids = h.document_ids(tiny_encoder, text)
    assert len(ids) <= 64
    small = LateChunker(tiny_small_window, chunk_size=5, window=64, late_heads=ALL)
    small = small.chunk([text])[0]
    big = LateChunker(tiny_encoder, chunk_size=5, window=8192, late_heads=ALL).chunk([text])[0]
    ref = h.reference_states(tiny_encoder, ids)
    for a, b in zip(small, big, strict=True):
        np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
        np.testing.assert_allclose(
            a.dense, _normalise(ref.hidden[a.token_start : a.token_end].mean(0)), atol=1e-5
        )


def test_long_document_forward_sizes_bounded(tiny_m3_path, monkeypatch):  # type: ignore[no-untyped-def]
    """~20k tokens: no forward pass ever sees more than ``window`` tokens per sequence."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_batch_tokens=4096)
    seen: list[tuple[int, int]] = []
    original = enc.model.forward

    def spy(input_ids, attention_mask, **kw):  # type: ignore[no-untyped-def]
        seen.append(tuple(input_ids.shape))
        return original(input_ids, attention_mask, **kw)

    monkeypatch.setattr(enc.model, "forward", spy)
    words = "Berlin is the capital of Germany. It has about 3.8 million inhabitants. "
    text = words * 1200
    chunker = LateChunker(enc, chunk_size=200, window=1024, overlap=0, late_heads=ALL)
    chunks = chunker.chunk([text])[0]
    n_tokens = len(chunker._tokenizer.encode(text).ids)
    assert n_tokens > 20_000
    assert chunks[-1].token_end == n_tokens
    assert seen and max(t for _, t in seen) <= 1024
    assert max(b * t for b, t in seen) <= 4096
    # overlap 0: every token through the model once (+ specials and a little padding)
    assert sum(b * t for b, t in seen) < 1.05 * n_tokens


def test_config_validation(tiny_encoder, minilm_encoder):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="chunk_size"):
        LateChunker(tiny_encoder, chunk_size=0)
    with pytest.raises(ValueError, match="max_length"):
        LateChunker(minilm_encoder, window=512)
    with pytest.raises(ValueError, match="overlap"):
        LateChunker(minilm_encoder, window=64, overlap=62)
    with pytest.raises(ValueError, match="dense_pooling|naive|mean"):
        LateChunker(tiny_encoder, dense_pooling="cls")
    with pytest.raises(ValueError, match="placement"):
        LateChunker(tiny_encoder, placement="middle")
    with pytest.raises(ValueError, match="unknown head"):
        LateChunker(tiny_encoder, late_heads=["dense", "splade"])
    with pytest.raises(ValueError, match="contradicts late_heads"):
        LateChunker(tiny_encoder, late_heads=["sparse"], dense_pooling="mean")
    with pytest.raises(TypeError, match="list of texts"):
        LateChunker(tiny_encoder).chunk("one text")
    with pytest.raises(TypeError, match="not str"):
        LateChunker(tiny_encoder).chunk(["ok", 3])  # type: ignore[list-item]
    assert ChunkingConfig().dense_pooling is None
    assert ChunkingConfig().placement is WindowPlacement.CENTRED
    assert as_late_chunker(tiny_encoder, False) is None
    assert as_late_chunker(tiny_encoder, True).signature == LateChunker(tiny_encoder).signature  # type: ignore[union-attr]
    mine = LateChunker(tiny_encoder, chunk_size=7)
    assert as_late_chunker(tiny_encoder, mine) is mine
    with pytest.raises(TypeError, match="late_chunking must be True, False or a LateChunker"):
        as_late_chunker(tiny_encoder, "yes")  # type: ignore[arg-type]
    chunker = LateChunker(minilm_encoder)  # chunks of 254: what one pass of 256 holds
    assert chunker.chunk_size == chunker.config.chunk_size == 254
    assert (chunker.window, chunker.capacity, chunker.overlap) == (256, 254, 31)
    assert chunker.signature == (
        "LateChunker(splitter=sentences, chunk_size=254, window=256, overlap=31, "
        "windows=centred, tokens=word-start, late_heads=none)"
    )
    assert ChunkingConfig().chunk_size is None  # the chunker's default
    small = LateChunker(minilm_encoder, chunk_size=96)
    assert (small.window, small.capacity, small.overlap) == (194, 192, 24)
    m3 = LateChunker(tiny_encoder)  # BGE-M3 sizes: 2 * 256 + 2 of 8192
    assert (m3.chunk_size, m3.window, m3.capacity, m3.overlap) == (256, 514, 512, 64)
    # unchanged since the default was a fixed 256: stored documents keep their version
    assert m3.signature == (
        "LateChunker(splitter=sentences, chunk_size=256, window=514, overlap=64, "
        "windows=centred, tokens=word-start, late_heads=colbert+dense+sparse)"
    )
    assert m3.late_heads == set(Head)  # multi-head: every head from the document pass
    assert m3.dense_pooling is DensePooling.MEAN
    assert m3.signature.endswith(
        "windows=centred, tokens=word-start, late_heads=colbert+dense+sparse)"
    )
    other = LateChunker(minilm_encoder, chunk_size=64, splitter=lambda t: [(0, len(t))])
    assert other.signature != chunker.signature and "<lambda>" in other.signature
    same = LateChunker(minilm_encoder, chunk_size=64, splitter=lambda t: [(0, len(t))])
    assert same.signature == other.signature  # stable across instances (no object addresses)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("chunk_size", 2.5),
        ("chunk_size", float("nan")),  # was: one chunk per document, silently
        ("chunk_size", True),  # was: chunks of 1 token, signature "chunk_size=True"
        ("window", 40.5),
        ("window", "514"),
        ("overlap", 2.5),  # was: accepted, then a bare TypeError on the first long document
        ("overlap", True),  # was: overlap 1
    ],
)
def test_token_settings_must_be_whole_numbers(tiny_encoder, h, name, value):  # type: ignore[no-untyped-def]
    """A chunk size, window or overlap that is not an int is refused when the chunker is
    built, naming the setting; a numpy integer is the same setting as the int."""
    with pytest.raises(ValueError, match=f"{name} must be a whole number of tokens"):
        LateChunker(tiny_encoder, **{name: value})
    if name == "chunk_size":
        with pytest.raises(ValueError, match="chunk_size must be a whole number of tokens"):
            NaiveChunker(tiny_encoder, chunk_size=value)
    numpy_ints = LateChunker(
        tiny_encoder, chunk_size=np.int64(8), window=np.int64(20), overlap=np.int64(4)
    )
    plain = LateChunker(tiny_encoder, chunk_size=8, window=20, overlap=4)
    assert numpy_ints.signature == plain.signature
    text = h.long_text  # longer than one window: every setting is used
    got, want = numpy_ints.chunk([text])[0], plain.chunk([text])[0]
    assert [(c.start, c.end) for c in got] == [(c.start, c.end) for c in want]
    np.testing.assert_array_equal([c.dense for c in got], [c.dense for c in want])


def test_default_chunks_fit_a_256_token_model(minilm_encoder, h):  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2 (max_length 256, every head encoded from the chunk alone by default):
    the default chunks hold at most the 254 text tokens of one pass, a full chunk included."""
    text = h.long_text  # its first sentence is cut at exactly chunk_size tokens
    chunker = LateChunker(minilm_encoder)
    assert chunker.chunk_size == default_chunk_size(minilm_encoder) == 254
    chunks = chunker.chunk([text])[0]
    assert len(chunks) > 2
    h.assert_spans_exact(chunks, text, tiled=True)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(minilm_encoder, text)))
    assert chunks[0].token_end - chunks[0].token_start == 1 + 254  # CLS + a full chunk
    # nothing late on a dense-only model: exactly the naive chunks (which were 254 already)
    naive = NaiveChunker(minilm_encoder).chunk([text])[0]
    assert [(c.start, c.end) for c in chunks] == [(c.start, c.end) for c in naive]
    for late, alone in zip(chunks, naive, strict=True):
        np.testing.assert_allclose(late.dense, alone.dense, atol=1e-6)
    # both defaults cut the same chunks, so they combine
    both = as_chunker(minilm_encoder, chunking=True, late_chunking=chunker)
    assert both is chunker
    # an explicit size is used as given
    explicit = LateChunker(minilm_encoder, chunk_size=256)
    assert explicit.chunk_size == explicit.config.chunk_size == 256
    with pytest.raises(
        ValueError, match="chunk 0 of text 0 is 256 tokens, more than the model's 254"
    ):
        explicit.chunk([text])
    assert len(LateChunker(minilm_encoder, chunk_size=100).chunk([text])[0]) > len(chunks)


@pytest.mark.parametrize("group_batches", [0, 4], ids=["one-text-groups", "one-group"])
def test_a_chunk_too_long_to_encode_alone_names_its_text(  # type: ignore[no-untyped-def]
    minilm_encoder, h, monkeypatch, group_batches
):
    """Among many documents, the one whose chunk a naive head cannot encode is named, as
    NaiveChunker names it (was: only the chunk's index within its unnamed document), whether
    the documents are encoded in one group or each in its own."""
    monkeypatch.setattr("m3kit.late_chunking._GROUP_BATCHES", group_batches)
    texts = ["Short.", "Also short.", h.long_text, "Short again."]
    late = LateChunker(minilm_encoder, chunk_size=256)  # dense only: encoded from the chunk
    with pytest.raises(ValueError, match="chunk 0 of text 2 is 256 tokens") as caught:
        late.chunk(texts)
    assert "late_heads" in str(caught.value)  # and how to pool it late instead
    same_spans = NaiveChunker(minilm_encoder, splitter=lambda t: late.spans([t])[0])
    with pytest.raises(ValueError, match="chunk 0 of text 2 is 256 tokens"):
        same_spans.chunk(texts)
    assert late.oversized(texts) == [[], [], [(0, 256)], []]
    # a dry run (force_recreate's rehearsal) refuses with chunk()'s own message, unencoded
    for chunker in (late, same_spans):
        with pytest.raises(ValueError) as by_chunk:
            chunker.chunk(texts)
        with pytest.raises(ValueError) as dry:
            chunker.refuse_oversized(texts)
        assert str(dry.value) == str(by_chunk.value)


async def test_achunk_matches_chunk(tiny_encoder, h):  # type: ignore[no-untyped-def]
    chunker = LateChunker(tiny_encoder, chunk_size=8)
    sync = chunker.chunk([h.texts["english"]])[0]
    got = (await chunker.achunk([h.texts["english"]]))[0]
    assert [c.text for c in got] == [c.text for c in sync]
    np.testing.assert_allclose(got[0].dense, sync[0].dense, atol=1e-6)
