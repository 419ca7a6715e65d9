"""``add_texts(truncation="error")`` refuses a too-long text before it writes any group.

The length was checked as each group of documents was encoded: the groups before the one
holding the long text were stored, then the call raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.errors import TruncationError


def test_a_too_long_text_in_a_later_group_writes_nothing(
    open_index: Any, tiny_m3_path: Path
) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    index = open_index(encoder)
    index.write_group = 2  # three groups: the long text is in the last
    texts = ["one.", "two.", "three.", "four.", " ".join(["word"] * 40)]
    with pytest.raises(TruncationError, match="tokens; the model takes"):
        index.add_texts(texts, doc_ids=list("abcde"), truncation="error")
    assert index.count() == 0
    assert index.add_texts(texts[:4], doc_ids=list("abcd"), truncation="error") == list("abcd")
    assert index.count() == 4


def test_a_too_long_text_after_groups_closed_by_size_writes_nothing(
    open_index: Any, tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups also close at a size of text (``WRITE_GROUP_CHARS``): fewer documents than
    ``write_group`` may take several groups, which the check skipped as one."""
    import m3kit.store.index_writes as index_writes

    monkeypatch.setattr(index_writes, "WRITE_GROUP_CHARS", 8)
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    index = open_index(encoder)
    texts = ["one two.", "three four.", " ".join(["word"] * 40)]
    with pytest.raises(TruncationError, match="tokens; the model takes"):
        index.add_texts(texts, doc_ids=list("abc"), truncation="error")
    assert index.count() == 0
