"""A custom splitter is identified by all its settings (issue #14 follow-up).

``NaiveChunker.signature`` and ``LateChunker.signature`` name a splitter by its type and every
setting (:func:`m3kit.fingerprint.describe_settings`), so changing one setting of a LangChain
``RecursiveCharacterTextSplitter`` re-encodes the documents it cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_text_splitters import RecursiveCharacterTextSplitter

from m3kit.chunking import NaiveChunker
from m3kit.fingerprint import describe_settings
from m3kit.late_chunking import LateChunker
from m3kit.piece_spans import PIECE_PLACEMENT
from m3kit.store import M3Index
from m3kit.store.filters import documents_filter
from tests.store.conftest import EncodeSpy

TEXT = (
    "The Rhine flows north through six countries. It reaches the sea in the Netherlands. "
    "Barges carry coal and grain upstream. Rotterdam is the largest port on its delta. "
    "Salmon returned to the river after it was cleaned. Castles line its middle valley."
)
CHUNKERS = {"naive": NaiveChunker, "late": LateChunker}


def _splitter(chunk_size: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=0)


def _chunk_texts(index: M3Index, doc_id: str) -> list[str]:
    hits = index.store._backend.scroll(documents_filter([doc_id]), ["chunk_index", "page_content"])
    return [h.payload["page_content"] for h in sorted(hits, key=lambda h: h.payload["chunk_index"])]


@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_signature_names_every_splitter_setting(kind: str, tiny_encoder: Any) -> None:
    make = CHUNKERS[kind]
    small = make(tiny_encoder, splitter=_splitter(60))
    assert small.signature == make(tiny_encoder, splitter=_splitter(60)).signature
    assert small.signature != make(tiny_encoder, splitter=_splitter(120)).signature
    assert describe_settings(_splitter(60)) in small.signature
    assert '"_chunk_size": "60"' in small.signature and " at 0x" not in small.signature
    # how the splitter's pieces are placed in the text is part of the chunks: documents stored
    # under the earlier placement (which could leave text in no chunk) are new versions
    assert f"+{PIECE_PLACEMENT}" in small.signature
    spans = make(tiny_encoder, splitter=lambda text: [(0, len(text))])
    assert PIECE_PLACEMENT not in spans.signature  # spans given, nothing placed
    # A setting changed after the chunker was built shows too (read when asked).
    mutable = _splitter(60)
    chunker = make(tiny_encoder, splitter=mutable)
    mutable._chunk_size = 120
    assert chunker.signature == make(tiny_encoder, splitter=_splitter(120)).signature


@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_changed_splitter_setting_re_encodes(kind: str, tiny_encoder: Any, tmp_path: Path) -> None:
    spy = EncodeSpy(tiny_encoder)
    make = CHUNKERS[kind]
    index = M3Index.open(spy, tmp_path / "db", collection="c")
    try:
        index.add_texts([TEXT], doc_ids=["rhine"], chunker=make(spy, splitter=_splitter(60)))
        small = _chunk_texts(index, "rhine")
        assert len(small) > 3 and " ".join(small).split() == TEXT.split()  # all text kept
        spy.encoded.clear()
        # Same class, same settings: nothing to do.
        index.add_texts([TEXT], doc_ids=["rhine"], chunker=make(spy, splitter=_splitter(60)))
        assert spy.encoded == []
        # Only chunk_size changed: the document is re-encoded and its chunks replaced.
        index.add_texts([TEXT], doc_ids=["rhine"], chunker=make(spy, splitter=_splitter(120)))
        assert spy.encoded != []
        large = _chunk_texts(index, "rhine")
        assert " ".join(large).split() == TEXT.split() and len(large) < len(small)
        assert index.count() == len(large)
    finally:
        index.close()


@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_a_used_llamaindex_splitter_keeps_its_signature(
    kind: str, tiny_encoder: Any, tmp_path: Path
) -> None:
    """A LlamaIndex splitter's callback manager records every split in its trace map (random
    ids): it was part of the signature, so each ``add_texts`` with a splitter already used
    re-encoded every document it was given, unchanged ones included."""
    from llama_index.core.node_parser import SentenceSplitter

    spy = EncodeSpy(tiny_encoder)
    chunker = CHUNKERS[kind](spy, splitter=SentenceSplitter(chunk_size=24, chunk_overlap=0))
    fresh = CHUNKERS[kind](spy, splitter=SentenceSplitter(chunk_size=24, chunk_overlap=0))
    before = chunker.signature
    chunker.spans([TEXT])
    assert chunker.signature == before == fresh.signature
    index = M3Index.open(spy, tmp_path / "db", collection="c")
    try:
        index.add_texts([TEXT], doc_ids=["rhine"], chunker=chunker)
        spy.encoded.clear()
        index.add_texts([TEXT], doc_ids=["rhine"], chunker=chunker)
        assert spy.encoded == []
    finally:
        index.close()


def _by_character(text: str) -> list[str]:
    return list(text)


@pytest.mark.parametrize("kind", list(CHUNKERS))
def test_a_llamaindex_splitter_with_another_tokenizer_re_chunks(
    kind: str, tiny_encoder: Any, tmp_path: Path
) -> None:
    """LlamaIndex keeps a splitter's ``tokenizer=`` in a private attribute, which the
    signature did not read: the same splitter with another tokenizer (other chunks) took the
    stored chunks for current, and the document kept its old chunking."""
    from llama_index.core.node_parser import SentenceSplitter

    words = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    chars = SentenceSplitter(chunk_size=24, chunk_overlap=0, tokenizer=_by_character)
    assert CHUNKERS[kind](tiny_encoder, splitter=words).signature != (
        CHUNKERS[kind](tiny_encoder, splitter=chars).signature
    )
    with M3Index.open(tiny_encoder, tmp_path / "db", collection="c") as index:
        index.add_texts(
            [TEXT], doc_ids=["rhine"], chunker=CHUNKERS[kind](tiny_encoder, splitter=words)
        )
        by_words = _chunk_texts(index, "rhine")
        index.add_texts(
            [TEXT], doc_ids=["rhine"], chunker=CHUNKERS[kind](tiny_encoder, splitter=chars)
        )
        by_chars = _chunk_texts(index, "rhine")
    (spans,) = CHUNKERS[kind](tiny_encoder, splitter=chars).spans([TEXT])
    assert by_chars == [TEXT[a:b] for a, b in spans]  # stored as the new splitter cuts it
    assert len(by_chars) > len(by_words)
