"""``M3VectorStore.add`` shows no bars unless asked (``show_progress``), as LlamaIndex's
stores: ``VectorStoreIndex(show_progress=False)`` and every ``IngestionPipeline`` run printed
the core's ``encode`` and ``upsert`` bars (on when the nodes take more than one batch), and
nothing could turn them off (``add`` refuses keywords it does not know)."""

from __future__ import annotations

import pytest
from llama_index.core.schema import TextNode

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS
from tests.encode_spy import show_progress_calls


def test_add_shows_bars_only_when_asked(
    tiny_embedding: M3Embedding, tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = show_progress_calls(tiny_encoder, monkeypatch)  # (tiny_embedding's encoder)
    nodes = [TextNode(text=f"{SAMPLE_TEXTS[i % 7]} ({i})", id_=f"n{i}") for i in range(40)]
    for given, want in ((None, False), (True, True)):
        seen.clear()
        chosen = {} if given is None else {"show_progress": given}
        with M3VectorStore(tiny_embedding, **chosen) as store:  # type: ignore[arg-type]
            assert len(store.add(nodes)) == 40
        assert seen == [want]
