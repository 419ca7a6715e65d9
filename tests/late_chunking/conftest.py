"""Helpers for late-chunking tests: token-level references computed without the chunker."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from m3kit import Chunk, M3Encoder

TEXTS = {
    "english": (
        "Late chunking embeds the whole document once. Then it pools token vectors per chunk! "
        "Does it help? Sometimes it does.\nA new line starts here. The end."
    ),
    "chinese": (
        "北京是中华人民共和国的首都。上海是中国最大的城市之一！机器学习是人工智能的一个分支？是的。"
    ),
    "emoji": "Emoji 🙂 and symbols ★ ✓ → appear. 🙂🙂🙂 Family: 👨‍👩‍👧‍👦! Flags 🇩🇪🇫🇷 end.",
    "whitespace": "  \n\n  Leading blanks.   \t Tabs\tand   spaces.\n\n\n\nParagraph  two .  \n  ",
}

_SHIPS = ["Aurora", "Bellwether", "Cormorant", "Dauntless", "Egret", "Falcon", "Gannet", "Heron"]
#: About 600 words whose first sentence is longer than a 256-token model's window, so the
#: sentence packer cuts it at exactly ``chunk_size`` tokens (a full chunk).
LONG_TEXT = (
    "The harbour log lists every ship that came in that year, "
    + ", ".join(f"the {_SHIPS[i % 8]} with {i + 3} crew on day {7 * i + 2}" for i in range(36))
    + ", and nothing else.\n\n"
    + " ".join(
        f"In week {i} the {_SHIPS[i % 8]} unloaded grain, timber and salt at the north quay "
        "before the tide turned."
        for i in range(18)
    )
)


@dataclass(frozen=True)
class Reference:
    """Per-token outputs of one unpadded forward pass, computed straight from the model."""

    hidden: np.ndarray  # [t, h]
    sparse: np.ndarray | None  # [t]
    colbert: np.ndarray | None  # [t - 1, d], normalised


def reference_states(encoder: M3Encoder, ids: list[int]) -> Reference:
    """Backbone + heads on ``ids`` directly (no chunker, no ``token_states``), fp32."""
    model = encoder.model
    with torch.inference_mode():
        t = torch.tensor([ids])
        hidden = model.backbone(input_ids=t, attention_mask=torch.ones_like(t)).last_hidden_state
        hidden = hidden.float()
        sparse = colbert = None
        if model.heads is not None:
            sparse = model.heads.sparse_weights(hidden)[0].numpy()
            colbert = torch.nn.functional.normalize(
                model.heads.colbert_vectors(hidden[:, 1:]), dim=-1
            )[0].numpy()
    return Reference(hidden[0].numpy(), sparse, colbert)


def document_ids(encoder: M3Encoder, text: str) -> list[int]:
    """The document's token ids with specials, from the encoder's own tokenizer (no truncation)."""
    return list(encoder.tokenizer(text, truncation=False)["input_ids"])  # type: ignore[operator]


def assert_tokens_partitioned(chunks: list[Chunk], n_tokens: int) -> None:
    """Every document token (specials included) is in exactly one chunk, chunks in order."""
    assert chunks, "a document always yields at least one chunk"
    assert chunks[0].token_start == 0
    assert chunks[-1].token_end == n_tokens
    for a, b in itertools.pairwise(chunks):
        assert a.token_end == b.token_start
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.token_end > c.token_start
        assert c.vectors.token_counts == (c.token_end - c.token_start,)


def assert_spans_exact(chunks: list[Chunk], text: str, *, tiled: bool) -> None:
    """``chunk.text == text[start:end]``; spans ascending and disjoint (tiling when ``tiled``)."""
    for c in chunks:
        assert c.text == text[c.start : c.end]
    for a, b in itertools.pairwise(chunks):
        assert a.end <= b.start if not tiled else a.end == b.start
    if tiled:
        assert chunks[0].start == 0 and chunks[-1].end == len(text)
        assert "".join(c.text for c in chunks) == text


class Helpers:
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""

    texts = TEXTS
    long_text = LONG_TEXT
    reference_states = staticmethod(reference_states)
    document_ids = staticmethod(document_ids)
    assert_tokens_partitioned = staticmethod(assert_tokens_partitioned)
    assert_spans_exact = staticmethod(assert_spans_exact)


@pytest.fixture(scope="session")
def h() -> type[Helpers]:
    return Helpers


@pytest.fixture(scope="session")
def tiny_small_window(tiny_m3_path):  # type: ignore[no-untyped-def]
    """The tiny M3 with max_length 64, so windows are exercised on short texts."""
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=64)
