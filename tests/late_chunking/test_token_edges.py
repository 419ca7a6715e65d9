"""Chunk edges on real XLM-R (BGE-M3) tokenisations: every token inside exactly one chunk.

SentencePiece pieces may start with the ``"▁"`` of the space before a word, XLM-R's normaliser
folds full-width punctuation (``"！"`` to ``"!"``) so that one piece can cover punctuation of
two sentences, and emoji / combining characters give several pieces one offset. Whatever the
text, the built-in splitter's chunks must tile the document, each chunk with text must own at
least one token, each token's characters (but the space its ``"▁"`` stands for) must lie in
the chunk that owns it, and the spans must not depend on the window settings.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.chunk_plan import SpanPlanner, token_starts
from m3kit.late_chunking import LateChunker

_CMRC = Path(__file__).resolve().parents[3] / "shared" / "data" / "cmrc2018_zh" / "corpus.jsonl"

_FIXED = [
    "The end.Next one starts. Then end. Next! And?Yes. a.b.c. d.e. f",
    "End.  Two spaces.\n\nNew para.\r\nWindows line.\r\n\r\nAnother.   \n  Last\r\n",
    "北京是中华人民共和国的首都。上海是中国最大的城市之一！机器学习？是的。",
    "广茂铁路是中国广东省一条起自广州市广州西站，向西跨越北江、西江，经佛山、三水、肇庆、"
    "云浮、阳江至茂名市茂名站的铁路，全长364.6公里。广茂铁路在广州由广茂联络线（前称流西联络线）"
    "连接广州西站及广州站，从而与京广、广深线连接。",
    "Mixed 中文 text。English after. 日本語です。Русский текст. العربية. हिन्दी पाठ।",
    "Emoji 🙂. 👨‍👩‍👧‍👦 family! 🇩🇪🇫🇷 flags. Done 🙂🙂.🙂 Next",
    "Cafe\u0301 is nice. Nai\u0308ve. e\u0301\u0301\u0301 x.\u0301 Y",
    "Really?！? Yes！!Sure。?ok ；;fine",  # full-width and ASCII punctuation folded together
]

# pieces that tokenise across what looks like a sentence end, or into several tokens at one offset
_PIECES = [
    "end.", "Next", " ", "  ", "\n", "\r\n", "\n\n", "。", "上海", "北京", "！", "？", "!", "?",
    "🙂", "👨‍👩‍👧‍👦", "🇩🇪", "e\u0301", "\u0301", "ﬁ", "…", "Ⅻ", "ｱ", "㍿", "½", "x", "Mr.",
    "\t", "\u3000", "’", "\u200b", "\ufeff", "ß", "İ", "ا", "क्ष", "；", ";",
    # one character NFKC expands into several tokens, the first of them merged with the
    # character before it ("Oﬃ" is "▁Off" + "i...": "▁Off" ends inside "ﬃ")
    "Oﬃ", "aﬄ", "xǅ", "ﬓ", "ﷺ", "™", "㈱", "ŉ",
]  # fmt: skip


def _texts() -> list[str]:
    rng = random.Random(7)
    texts = list(_FIXED)
    texts += ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 40))) for _ in range(400)]
    if _CMRC.is_file():  # the full Chinese set beside the checkout, where it is
        with _CMRC.open(encoding="utf-8") as f:
            texts += [json.loads(line)["text"][:400] for _, line in zip(range(30), f, strict=False)]
    return texts


@pytest.fixture(scope="module")
def xlmr(tiny_m3_xlmr_path):  # type: ignore[no-untyped-def]
    return M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32", max_length=40)


def test_every_token_inside_the_chunk_that_owns_it(xlmr) -> None:  # type: ignore[no-untyped-def]
    """A sentence start inside a token (``"?！?"`` is the one token ``"?!?"``) no longer cuts it:
    the chunk ends after the token, so no chunk starts with characters of the previous chunk's
    last token."""
    tok = SpanPlanner(xlmr, chunk_size=4).tokenizer
    for chunk_size in (1, 3, 8, 64):
        planner = SpanPlanner(xlmr, chunk_size=chunk_size)
        for text in _texts():
            enc = tok.encode(text, add_special_tokens=False)
            starts = token_starts(text, enc.offsets).tolist()
            plan = planner.plan(text)
            assert plan.spans[0][0] == 0 and plan.spans[-1][1] == len(text)
            assert all(a[1] == b[0] for a, b in itertools.pairwise(plan.spans))
            owned = [k for a, b in plan.content_bounds for k in range(a, b)]
            assert owned == list(range(len(enc.ids))), (text, chunk_size)
            for (a, b), (ta, tb) in zip(plan.spans, plan.content_bounds, strict=True):
                assert tb > ta or not text.strip(), (text, chunk_size, plan.spans)
                for k in range(ta, tb):
                    end = enc.offsets[k][1]
                    assert a <= starts[k] and end <= b, (
                        f"token {k} {enc.tokens[k]!r} at {enc.offsets[k]} is owned by chunk "
                        f"{(a, b)} of {text!r} (chunk_size={chunk_size})"
                    )


def test_a_long_sentence_is_not_cut_inside_a_ligature(xlmr) -> None:  # type: ignore[no-untyped-def]
    """XLM-R reads ``"Oﬃzier"`` as ``"▁Off" "izi" "er"``: ``"▁Off"`` ends inside ``"ﬃ"``, where
    ``"izi"`` starts. A sentence cut at the token budget must not fall there (it gave the chunk
    ``"Der O"`` the token ``"▁Off"`` and the next chunk the text ``"ﬃzier"``)."""
    chunker = LateChunker(xlmr, chunk_size=2)
    for text in ("Der Oﬃzier kam heute nicht", "The aﬄuent man", "Dobar xǅ dan"):
        chunks = chunker.chunk([text])[0]
        assert "".join(c.text for c in chunks) == text
        enc = chunker._tokenizer.encode(text, add_special_tokens=False)
        for c in chunks:
            first, last = max(c.token_start - 1, 0), min(c.token_end - 1, len(enc.ids))
            for k in range(first, last):
                assert enc.offsets[k][1] <= c.end, (text, c.text, enc.tokens[k], enc.offsets[k])
    texts = [c.text for c in chunker.chunk(["Der Oﬃzier kam heute nicht"])[0]]
    assert texts[0] == "Der " and texts[1].startswith("Oﬃ"), texts


def test_spans_and_text_do_not_depend_on_windows(xlmr) -> None:  # type: ignore[no-untyped-def]
    """Chunk text is ``document[start:end]`` and spans / token ranges are the same for every
    window, overlap and placement (windows of 38 text tokens: longer texts are windowed)."""
    settings = [
        {},
        {"window": 12, "overlap": 0, "placement": "centred"},
        {"window": 12, "overlap": 6, "placement": "chunks"},
        {"window": 40, "overlap": 9, "placement": "centred"},
    ]
    texts = _texts()[:60]
    for chunk_size in (3, 8):
        got = []
        for kwargs in settings:
            chunker = LateChunker(xlmr, chunk_size=chunk_size, **kwargs)
            docs = chunker.chunk(texts)
            for text, chunks in zip(texts, docs, strict=True):
                assert "".join(c.text for c in chunks) == text
                for c in chunks:
                    assert c.text == text[c.start : c.end]
                    assert c.token_end > c.token_start
            got.append([[(c.start, c.end, c.token_start, c.token_end) for c in d] for d in docs])
        assert all(g == got[0] for g in got[1:]), chunk_size
