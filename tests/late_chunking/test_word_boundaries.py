"""The built-in packer cuts a sentence over the budget between words, and knows the sentence
ends of the scripts BGE-M3 reads.

A sentence longer than ``chunk_size`` was cut at the token the budget reached, in the middle
of a word when a word started 1-6 tokens back (``"rain|forest"``, ``"scientist|s"``: 539 of
6,705 boundaries of 24 SQuAD articles at 32 XLM-R tokens), and through emoji joined by a
zero-width joiner; LangChain's and LlamaIndex's splitters cut none at the same budget. Hindi,
Urdu, Arabic, Armenian, Ethiopic, Myanmar, Khmer and Tibetan sentence ends were not ends.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.chunk_spans import sentence_starts
from m3kit.late_chunking import LateChunker

# an unpunctuated transcript: one "sentence" far over the budget
_TRANSCRIPT = (
    "the amazon rainforest covers most of the amazon basin of south america this basin "
    "encompasses seven million square kilometres of which five and a half million are covered "
    "by the rainforest this region includes territory belonging to nine nations the majority "
    "of the forest is contained within brazil followed by peru colombia and minor amounts in "
    "venezuela ecuador bolivia guyana suriname and french guiana"
)


def _cuts_a_word(text: str, start: int) -> bool:
    """Inside a run of non-space characters, where neither side is Han or kana (words of
    their own)."""
    before, after = text[start - 1], text[start]

    def own_word(ch: str) -> bool:
        wide = unicodedata.east_asian_width(ch) in ("W", "F")
        return wide and not unicodedata.name(ch, "").startswith("HANGUL")

    spaced = not (before.isspace() or after.isspace())
    return spaced and not (own_word(before) or own_word(after))


# Korean spaces its words (Hangul is wide, but not a word per character); numbers and
# contractions are words with punctuation inside
_KOREAN = (
    "아마존 열대우림은 남아메리카 아마존 분지의 대부분을 덮고 있으며 "
    "이 분지는 칠백만 제곱킬로미터에 이르고 그중 오백오십만 제곱킬로미터가 "
    "열대우림으로 덮여 있고 이 지역은 아홉 나라의 영토를 포함하며 "
    "숲의 대부분은 브라질에 있고 페루 콜롬비아 그리고 베네수엘라 에콰도르 볼리비아에도 조금 있다"
)
_NUMBERS = (
    "the measured constant was 3.14159265358979 and the count was 1,234,567,890 while we "
    "couldn't shouldn't haven't wouldn't seen the 2,345.678 value near 10,000,000 before "
) * 3


# (from 13 tokens: a word longer than half the budget, 5 XLM-R tokens of Korean, is cut)
@pytest.mark.parametrize("chunk_size", [13, 32])
@pytest.mark.parametrize("text", [_TRANSCRIPT, _KOREAN, _NUMBERS], ids=["en", "ko", "numbers"])
def test_an_over_budget_sentence_is_cut_between_words(
    tiny_m3_xlmr_path: Path, chunk_size: int, text: str
) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    (spans,) = LateChunker(encoder, chunk_size=chunk_size).spans([text])
    assert len(spans) > 2
    assert "".join(text[s:e] for s, e in spans) == text
    assert [text[s - 5 : s + 5] for s, _ in spans[1:] if _cuts_a_word(text, s)] == []


def test_emoji_joined_by_zero_width_joiners_stay_whole(tiny_m3_xlmr_path: Path) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    text = "Emoji 👩\u200d👩\u200d👧\u200d👦 family " * 6
    # (7 tokens, found within half the budget back from 14 tokens on; a smaller budget cuts
    # them, as it cuts a word longer than half the budget)
    for size in range(14, 22):
        (spans,) = LateChunker(encoder, chunk_size=size).spans([text])
        for s, _ in spans[1:]:
            assert text[s] != "\u200d" and text[s - 1] != "\u200d", (size, text[s - 3 : s + 3])


def test_a_word_longer_than_the_budget_is_still_cut(tiny_m3_xlmr_path: Path) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    text = "https://example.org/" + "abcdefghij" * 30
    (spans,) = LateChunker(encoder, chunk_size=8).spans([text])
    assert len(spans) > 3  # no word start: cut at tokens, within the budget
    assert "".join(text[s:e] for s, e in spans) == text


@pytest.mark.parametrize(
    "end", ["।", "॥", "۔", "؟", "։", "።", "။", "។", "།", "｡", ".", "。"], ids=repr
)
def test_sentence_ends_of_other_scripts(end: str) -> None:
    text = f"Alpha beta{end} Gamma delta{end} Epsilon zeta{end}"
    assert len(sentence_starts(text)) == 3


def test_hindi_sentences_are_packed_whole(tiny_m3_xlmr_path: Path) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32")
    text = (
        "भारत एक विशाल देश है जिसकी जनसंख्या एक अरब से अधिक है। "
        "यहाँ बहुत सी भाषाएँ बोली जाती हैं। हिमालय पर्वत भारत के उत्तर में है। "
        "गंगा नदी भारत की सबसे पवित्र नदी मानी जाती है।"
    )
    (spans,) = LateChunker(encoder, chunk_size=32).spans([text])
    assert len(spans) > 1
    for s, e in spans:
        assert text[s:e].rstrip().endswith("।")
