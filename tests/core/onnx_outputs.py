"""What the ONNX backend tests share: the texts they encode, an output comparison, a spy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

TEXTS = [
    "Berlin is the capital and largest city of Germany by both area and population.",
    "What is the capital of Germany?",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Late chunking embeds the whole document once and pools token vectors per chunk. " * 12,
    "short",
    "",
    "Emoji 🙂 and symbols ★ ✓ → mixed with 中文 and English.",
]


def _assert_outputs_close(a, b, atol: float = 1e-4) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(a.dense, b.dense, atol=atol)
    assert a.token_counts == b.token_counts
    for sa, sb in zip(a.sparse, b.sparse, strict=True):
        np.testing.assert_array_equal(sa.indices, sb.indices)
        np.testing.assert_allclose(sa.values, sb.values, atol=atol)
    for ca, cb in zip(a.colbert, b.colbert, strict=True):
        assert ca.shape == cb.shape
        np.testing.assert_allclose(ca, cb, atol=atol)


def _spy(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, pick: Callable[..., object]
) -> list:
    """Replace ``module.name`` by a pass-through that records ``pick(*args, **kwargs)`` per call."""
    seen: list = []
    real = getattr(module, name)

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(pick(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen
