"""Chunk spans: the sentence splitter, token-budget packing, splitter adapters, validation."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3kit import M3Encoder
from m3kit.chunk_spans import normalize_spans, pack_sentences, sentence_starts
from m3kit.late_chunking import LateChunker
from m3kit.piece_spans import as_span_splitter, piece_overlap, spans_of_pieces


def _sentences(text: str) -> list[str]:
    starts = sentence_starts(text)
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def test_sentence_starts_english_chinese_newlines() -> None:
    assert _sentences("Hi there. How are you? Fine!") == ["Hi there. ", "How are you? ", "Fine!"]
    assert _sentences('He said "stop." Then left.') == ['He said "stop." ', "Then left."]
    assert _sentences("3.14 is pi. e=2.71") == ["3.14 is pi. ", "e=2.71"]  # no space: no cut
    assert _sentences("北京很大。上海也很大！真的吗？是的") == [
        "北京很大。",
        "上海也很大！",
        "真的吗？",
        "是的",
    ]
    assert _sentences("line one\nline two\n\n\npara") == ["line one\n", "line two\n\n\n", "para"]
    assert _sentences("") == [""]
    assert _sentences("no terminator") == ["no terminator"]


def test_pack_sentences_respects_budget_and_sentences() -> None:
    # three sentences of 3, 4, 2 tokens (token starts given directly)
    sent = [0, 10, 30]
    tok = np.array([0, 3, 6, 10, 14, 18, 22, 30, 33])
    assert pack_sentences(sent, tok, 7) == [0, 30]  # 3+4 | 2
    assert pack_sentences(sent, tok, 6) == [0, 10]  # 3 | 4+2
    assert pack_sentences(sent, tok, 4) == [0, 10, 30]
    assert pack_sentences(sent, tok, 100) == [0]
    # a sentence longer than the budget is cut at token starts
    assert pack_sentences([0], np.arange(0, 20, 2), 3) == [0, 6, 12, 18]
    # never between two tokens that start at the same character
    tok_same = np.array([0, 1, 1, 1, 2, 3])
    assert pack_sentences([0], tok_same, 2) == [0, 1, 2]
    assert pack_sentences([0], np.array([], dtype=np.int64), 5) == [0]
    with pytest.raises(ValueError, match="chunk_size"):
        pack_sentences([0], tok, 0)


def test_spans_of_pieces_forward_search_and_overlap() -> None:
    text = "a b a b a b"
    assert spans_of_pieces(text, ["a b", "a b", "a b"]) == [(0, 3), (4, 7), (8, 11)]
    assert spans_of_pieces(text, ["a b a", "a b a b", ""]) == [(0, 5), (4, 11)]  # overlapping
    # pieces that cannot cover the text: an error quoting what no chunk would hold
    with pytest.raises(ValueError, match=r"leave characters 10-11 \('b'\).*in no chunk"):
        spans_of_pieces(text, ["a b a", "a b a"])
    with pytest.raises(ValueError, match="not found in the document"):
        spans_of_pieces(text, ["a  b"])
    with pytest.raises(TypeError, match="not str"):
        spans_of_pieces(text, [3])  # type: ignore[list-item]


def test_normalize_spans_sorts_trims_and_validates() -> None:
    assert normalize_spans([(5, 9), (0, 6), (9, 9)], 10) == [(0, 6), (6, 9)]
    assert normalize_spans([(0, 4), (1, 3)], 10) == [(0, 4)]
    assert normalize_spans([], 7) == [(0, 7)]
    assert normalize_spans([(np.int64(1), np.int64(3))], 5) == [(1, 3)]
    for bad, match in [
        ([(0, 11)], "outside"),
        ([(-1, 2)], "outside"),
        ([(3, 2)], "outside"),
        ([(0.0, 2)], "ints"),
        ([(True, 2)], "ints"),
        ([(1, 2, 3)], "pair"),
        ([5], "pair"),
    ]:
        with pytest.raises(ValueError, match=match):
            normalize_spans(bad, 10)


class _NodeParserLike:
    def get_nodes_from_documents(self, documents: object) -> list[object]:
        return []

    def __call__(self, nodes: object) -> list[object]:
        return []


def test_as_span_splitter_kinds() -> None:
    class HasSplitText:
        def split_text(self, text: str) -> list[str]:
            return text.split(" ")

    assert as_span_splitter(HasSplitText())("ab cd") == [(0, 2), (3, 5)]
    fn = as_span_splitter(lambda t: [(0, 1)])
    assert fn("xyz") == [(0, 1)]
    with pytest.raises(TypeError, match="node_parser_spans"):
        as_span_splitter(_NodeParserLike())
    with pytest.raises(TypeError, match="callable"):
        as_span_splitter(42)


def test_callable_splitter_gaps_and_overlaps(tiny_encoder, h):  # type: ignore[no-untyped-def]
    """Gaps between spans go to the chunk before; overlaps are trimmed; tokens stay partitioned."""
    text = h.texts["english"]
    spans = [(2, 30), (25, 60), (70, 100), (100, len(text) - 3)]
    chunks = LateChunker(tiny_encoder, splitter=lambda t: spans).chunk([text])[0]
    assert [(c.start, c.end) for c in chunks] == [
        (2, 30),
        (30, 60),
        (70, 100),
        (100, len(text) - 3),
    ]
    h.assert_spans_exact(chunks, text, tiled=False)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(tiny_encoder, text)))


def test_splitter_chunk_without_tokens_is_merged(minilm_encoder, h):  # type: ignore[no-untyped-def]
    text = "First sentence here.      Second one."
    # (20, 26) is whitespace only: WordPiece makes no token of it -> merged into the chunk before
    chunks = LateChunker(minilm_encoder, splitter=lambda t: [(0, 20), (20, 26), (26, 37)]).chunk(
        [text]
    )[0]
    assert [(c.start, c.end) for c in chunks] == [(0, 26), (26, 37)]
    h.assert_spans_exact(chunks, text, tiled=True)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(minilm_encoder, text)))
    # an empty first chunk is merged into the one after it
    first_empty = LateChunker(minilm_encoder, splitter=lambda t: [(0, 3), (3, 9)])
    assert [(c.start, c.end) for c in first_empty.chunk(["   abc  x"])[0]] == [(0, 9)]


_BODY = "北京是中华人民共和国的首都，上海是中国最大的城市之一"  # one sentence, no "。"


def test_no_whitespace_only_chunk_with_sentencepiece(tiny_m3_xlmr_path, h):  # type: ignore[no-untyped-def]
    """XLM-R (BGE-M3's tokenizer) makes a lone "▁" token of a trailing newline and of the space
    before CJK text or an emoji: the sentence packer could cut right before it and leave a
    chunk of whitespace only ("\\n") owning that token (and ``</s>``), stored as a hit with no
    text. The packer now cuts elsewhere (within the budget); a splitter's span of whitespace
    only is merged into the chunk before it, like a chunk without tokens."""
    from m3kit import M3Encoder
    from m3kit.chunking import NaiveChunker

    enc = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    body_tokens = len(enc.tokenize([_BODY])[0].input_ids) - 2  # "▁" + 11 pieces
    cases = [
        # a last sentence of exactly chunk_size tokens, then a trailing newline ("▁"): the
        # sentence is cut one token earlier, so that its last piece goes with the newline
        (_BODY + "\n", body_tokens, [_BODY[:-2], "之一\n"]),
        # a leading newline ("▁") before a first sentence that fills a chunk alone: the
        # newline rides along with the sentence (counted in the budget)
        ("\n" + _BODY, body_tokens - 1, ["\n" + _BODY[:-2], "之一"]),
        # a splitter span of one space, which owns the "▁" before the CJK text
        ("Hello. " + _BODY, [(0, 6), (6, 7), (7, 7 + len(_BODY))], ["Hello. ", _BODY]),
    ]
    for text, size, want in cases:
        splitter = (lambda t, s=size: s) if isinstance(size, list) else None
        kwargs = {"splitter": splitter} if splitter else {"chunk_size": size}
        for chunker in (LateChunker(enc, **kwargs), NaiveChunker(enc, **kwargs)):
            chunks = chunker.chunk([text])[0]
            assert [c.text for c in chunks] == want, (type(chunker).__name__, text)
            ids = h.document_ids(enc, text)
            assert [c.token_start for c in chunks] + [len(ids)] == [
                0,
                *(c.token_end for c in chunks),
            ]
    for size in range(2, 16):  # no chunk of whitespace only, and the budget kept
        for text in (_BODY + "\n", "\n" + _BODY, "One. 🙂 two. 3.8 x\n", h.texts["whitespace"]):
            plan = LateChunker(enc, chunk_size=size)._planner.plan(text)
            assert all(text[a:b].strip() for a, b in plan.spans), (size, text, plan.spans)
            assert all(b - a <= size for a, b in plan.content_bounds), (size, text)


def test_zero_width_characters_are_whitespace_at_chunk_edges(tiny_m3_xlmr_path, h):  # type: ignore[no-untyped-def]
    """XLM-R reads a zero-width space, (non-)joiner, direction mark or byte order mark as a
    space: ``"ab\u200bcd"`` is ``"▁ab" "▁cd"``, ``"▁cd"`` starting at the ``"\u200b"``. A
    splitter chunk ending with it got the next chunk's first word (``"ab\u200b"`` owned
    ``"▁cd"``, ``"cd efg"`` did not), and a trailing ``"\u200b"`` was a chunk of its own (its
    lone ``"▁"`` and ``</s>``), stored as a hit with no visible text."""
    from m3kit.chunking import NaiveChunker

    enc = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    n_body = len(enc.tokenize([_BODY])[0].input_ids) - 2
    for mark in ("\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff"):
        text = f"ab{mark}cd efg"
        chunker = LateChunker(enc, splitter=lambda t: [(0, 3), (3, len(t))])
        chunks = chunker.chunk([text])[0]
        assert [c.text for c in chunks] == [f"ab{mark}", "cd efg"]
        assert chunks[0].token_end - chunks[0].token_start == 2  # <s> "▁ab"
        h.assert_tokens_partitioned(chunks, len(h.document_ids(enc, text)))
        for chunker in (LateChunker(enc, chunk_size=n_body), NaiveChunker(enc, chunk_size=n_body)):
            got = [c.text for c in chunker.chunk([_BODY + mark])[0]]
            assert got == [_BODY[:-2], "之一" + mark], (type(chunker).__name__, mark)


def test_langchain_text_splitter(tiny_encoder, h):  # type: ignore[no-untyped-def]
    splitters = pytest.importorskip("langchain_text_splitters")
    text = " ".join(h.texts[k] for k in ("english", "chinese", "emoji"))
    splitter = splitters.RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=20)
    chunks = LateChunker(tiny_encoder, splitter=splitter).chunk([text])[0]
    assert len(chunks) > 2
    h.assert_spans_exact(chunks, text, tiled=False)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(tiny_encoder, text)))
    pieces = splitter.split_text(text)
    for c, piece in zip(chunks, pieces, strict=False):  # overlap trimmed from the front only
        assert piece.endswith(c.text) or c.text.endswith(piece.strip())


def test_llamaindex_sentence_splitter(tiny_encoder, h):  # type: ignore[no-untyped-def]
    from llama_index.core.node_parser import SentenceSplitter

    text = " ".join(h.texts[k] for k in ("english", "chinese", "whitespace"))
    splitter = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    chunks = LateChunker(tiny_encoder, splitter=splitter).chunk([text])[0]
    assert len(chunks) > 1
    h.assert_spans_exact(chunks, text, tiled=False)
    h.assert_tokens_partitioned(chunks, len(h.document_ids(tiny_encoder, text)))


LOG = (
    "connection lost, retrying\nconnection lost, retrying\n"
    "connection lost, retrying\nDISK FULL on /var/lib/postgres, database halted\nshutdown"
)


def _langchain_starts(splitter, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Offsets LangChain's own ``add_start_index`` gives (same settings, same pieces)."""
    splitter._add_start_index = True
    try:
        return [d.metadata["start_index"] for d in splitter.create_documents([text])]
    finally:
        splitter._add_start_index = False


def _uncovered(text: str, spans: list[tuple[int, int]]) -> str:
    covered = [False] * len(text)
    for a, b in spans:
        covered[a:b] = [True] * (b - a)
    return "".join(ch for ch, c in zip(text, covered, strict=True) if not c and not ch.isspace())


@pytest.mark.parametrize("overlap", [0, 30])
def test_repeated_lines_are_placed_where_langchain_places_them(overlap: int) -> None:
    """A piece that also occurs inside the previous piece is not taken from there.

    Searching from just after the previous piece's start found the third
    "connection lost" line inside piece 0: normalising trimmed it away, and the line after it
    was in no chunk.
    """
    splitters = pytest.importorskip("langchain_text_splitters")
    inner = splitters.RecursiveCharacterTextSplitter(chunk_size=55, chunk_overlap=overlap)
    pieces = inner.split_text(LOG)
    spans = as_span_splitter(inner)(LOG)
    assert [LOG[a:b] for a, b in spans] == pieces
    assert [a for a, _ in spans] == _langchain_starts(inner, LOG)
    assert _uncovered(LOG, normalize_spans(spans, len(LOG))) == ""
    assert piece_overlap(inner) == overlap


def test_dropped_separator_is_an_error_naming_the_text() -> None:
    splitters = pytest.importorskip("langchain_text_splitters")
    inner = splitters.CharacterTextSplitter(
        separator="|", keep_separator=False, chunk_size=5, chunk_overlap=0
    )
    with pytest.raises(ValueError, match=r"leave characters 3-4 \('\|'\).*in no chunk"):
        as_span_splitter(inner)("one|two|six")


def test_piece_overlap_only_in_characters() -> None:
    splitters = pytest.importorskip("langchain_text_splitters")
    from llama_index.core.node_parser import SentenceSplitter

    by_words = splitters.RecursiveCharacterTextSplitter(
        chunk_size=5, chunk_overlap=2, length_function=lambda t: len(t.split())
    )
    assert piece_overlap(by_words) is None  # counted in words: not a character offset
    assert piece_overlap(SentenceSplitter(chunk_size=20, chunk_overlap=5)) is None  # tokens
    assert piece_overlap(object()) is None


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(
        st.tuples(st.sampled_from(["ab", "ab", "cd", "ab."]), st.sampled_from([" ", "\n", "\n\n"])),
        min_size=1,
        max_size=40,
    ),
    chunk_size=st.integers(6, 20),
    overlap=st.integers(0, 19),
)
def test_pieces_of_repetitive_text_cover_it(words, chunk_size, overlap):  # type: ignore[no-untyped-def]
    """Pieces are found in order and cover every non-whitespace character; where LangChain's
    own offsets are in order and cover the text too, they are the same offsets."""
    splitters = pytest.importorskip("langchain_text_splitters")
    text = "".join(w + sep for w, sep in words).rstrip()
    inner = splitters.RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=min(overlap, chunk_size - 1)
    )
    pieces = inner.split_text(text)
    spans = as_span_splitter(inner)(text)
    assert [text[a:b] for a, b in spans] == pieces
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(spans))
    assert _uncovered(text, normalize_spans(spans, len(text))) == ""
    theirs = _langchain_starts(inner, text)
    their_spans = [(s, s + len(p)) for s, p in zip(theirs, pieces, strict=True)]
    in_order = all(a <= b for a, b in itertools.pairwise(theirs))
    if theirs[0] >= 0 and in_order and _uncovered(text, their_spans) == "":
        assert [a for a, _ in spans] == theirs


def test_a_splitters_overlap_dropped_is_said_once_per_chunker(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """Overlapping chunks from a splitter (LangChain's default ``chunk_overlap=200``) are
    trimmed so every token is in one chunk: that was logged at debug level per span, so a
    user's overlap setting was dropped silently. A warning says it once per chunker."""
    text = "Berlin is the capital of Germany. Paris is the capital of France."
    cut = text.index("Paris")

    def overlapping(t: str) -> list[tuple[int, int]]:
        return [(0, min(cut + 5, len(t))), (min(cut, len(t)), len(t))]

    chunker = LateChunker(tiny_encoder, splitter=overlapping, chunk_size=64)
    with caplog.at_level(logging.WARNING, logger="m3kit.chunk_plan"):
        chunks = chunker.chunk([text, text])
    assert [c.text for c in chunks[0]] == [text[: cut + 5], text[cut + 5 :]]  # trimmed
    said = [r for r in caplog.records if "overlap is dropped" in r.getMessage()]
    assert len(said) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m3kit.chunk_plan"):
        LateChunker(tiny_encoder, chunk_size=8).chunk([text])  # its own packer: no overlap
    assert not caplog.records


def test_pack_sentences_never_cuts_before_a_token_ends() -> None:
    # "Der Oﬃzier": "▁Der" (0, 3), "▁Off" (4, 6), "izi" (5, 8), "er" (8, 10); "izi" starts
    # inside "ﬃ", before "▁Off" ends: no chunk starts there
    tok, ends = np.array([0, 4, 5, 8]), np.array([3, 6, 8, 10])
    assert pack_sentences([0], tok, 2) == [0, 5]  # without the ends: cut inside "ﬃ"
    assert pack_sentences([0], tok, 2, token_ends=ends) == [0, 4, 8]
