"""A spy on an encoder's ``encode``: the ``show_progress`` each call was given (what the
LangChain and LlamaIndex rerankers' tests check)."""

from __future__ import annotations

import pytest

from m3kit import M3Encoder


def show_progress_calls(encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``encoder.encode`` patched to record each call's ``show_progress``; the list it fills."""
    seen: list[object] = []
    encode = encoder.encode

    def spy(texts: list[str], **options: object) -> object:
        seen.append(options.get("show_progress"))
        return encode(texts, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "encode", spy)
    return seen
