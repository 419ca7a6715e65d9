"""A write reads the stored ``extra`` of its documents only when one of them brings none.

``extra`` holds an adapter's settings of a document (a LlamaIndex node's relationships among
them, which can be large); it serves only a writer that keeps none (LangChain re-adding a
LlamaIndex document keeps its settings). Every ``add_texts`` lookup read it before.
"""

from __future__ import annotations

from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.schema import EXTRA


def test_extra_is_read_only_for_documents_without_their_own(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with M3Index.open(tiny_encoder) as index:
        backend = index.store._backend
        index.add_texts(["Apples are red."], doc_ids=["a"], extras=[{"hidden": ["k"]}])
        read: list[list[str]] = []
        scroll = backend.scroll

        def spy(condition: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
            read.append(list(keys))
            return scroll(condition, keys, *args, **kwargs)

        monkeypatch.setattr(backend, "scroll", spy)
        # its own settings, changed metadata: updated in place, the stored extra not read
        index.add_texts(["Apples are red."], [{"n": 1}], ["a"], extras=[{"hidden": ["k"]}])
        assert read and not any(EXTRA in keys for keys in read)
        read.clear()
        # none of its own (a writer that keeps none): the stored one is read, and kept
        index.add_texts(["Apples are red."], [{"n": 2}], ["a"])
        assert any(EXTRA in keys for keys in read)
        (hit,) = index.search("apples", k=1)
        assert (hit.metadata, hit.extra) == ({"n": 2}, {"hidden": ["k"]})
