"""``add_texts`` closes a write group at a size of text as well as at ``write_group``
documents: a group's vectors (ColBERT's one per token) are held until written, and 64 long
documents held gigabytes at BGE-M3's size (measured on the tiny model: 154 MiB of ColBERT
vectors for one group of 64 documents of 20k tokens, 4.8 GiB at 1,024 dimensions)."""

from __future__ import annotations

from typing import Any

import pytest

import m3kit.store.index_writes as index_writes


def test_long_documents_are_written_in_smaller_groups(
    open_index: Any, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = open_index(tiny_encoder)
    monkeypatch.setattr(index_writes, "WRITE_GROUP_CHARS", 100)
    steps: list[int] = []
    write = index.write_records

    def spy(records: Any, empty: Any = ()) -> None:
        steps.append(len(records))
        write(records, empty)

    monkeypatch.setattr(index, "write_records", spy)
    texts = [f"Document {i} says something long enough to fill a group. " for i in range(5)]
    texts += [f"short {i}." for i in range(8)]
    assert all(len(t) > 50 for t in texts[:5])
    index.add_texts(texts)
    # two long ones pass 100 characters: each its own group, the last shared with 5 short ones
    # (about 9 characters each), the other 3 short ones a group
    assert steps == [1, 1, 1, 1, 6, 3]
    assert index.count() == 13
