"""Store fixtures: every test runs on each backend (edge folder, client memory, client folder)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.outputs import Chunk, Head, M3Output, SparseVector
from m3kit.store import Backend, ChunkRecord, M3Index, M3Store, output_row
from m3kit.testing import build_random_m3_checkpoint

#: (backend, in a folder?) per parametrised id.
BACKENDS = {
    "edge": (Backend.EDGE, True),
    "client-memory": (Backend.CLIENT, False),
    "client-path": (Backend.CLIENT, True),
}
PATH_BACKENDS = [k for k, (_, on_disk) in BACKENDS.items() if on_disk]


class CachedEncoder:
    """Memoises ``encode`` per (text, heads, query) so the suite encodes each text once.

    Everything else is delegated to the wrapped :class:`~m3kit.M3Encoder`; encodings are
    deterministic, so cached rows equal fresh ones.
    """

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._cache: dict[tuple[str, frozenset[Head], bool], M3Output] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(
        self,
        texts: Sequence[str],
        *,
        heads: Any = None,
        query: bool = False,
        show_progress: bool | None = None,
    ) -> M3Output:
        wanted = frozenset(self._encoder.available_heads) if heads is None else Head.parse(heads)
        todo = [t for t in dict.fromkeys(texts) if (t, wanted, query) not in self._cache]
        if todo:
            out = self._encoder.encode(
                todo, heads=sorted(wanted), query=query, show_progress=show_progress
            )
            for i, t in enumerate(todo):
                self._cache[(t, wanted, query)] = output_row(out, i)
        rows = [self._cache[(t, wanted, query)] for t in texts]
        return M3Output(
            heads=wanted,
            token_counts=tuple(r.token_counts[0] for r in rows),
            _dense=np.concatenate([r.dense for r in rows]) if Head.DENSE in wanted else None,
            _sparse=tuple(r.sparse[0] for r in rows) if Head.SPARSE in wanted else None,
            _colbert=tuple(r.colbert[0] for r in rows) if Head.COLBERT in wanted else None,
        )


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder: Any) -> CachedEncoder:
    """The session's tiny M3 encoder, memoised (see :class:`CachedEncoder`)."""
    return CachedEncoder(tiny_encoder)


@pytest.fixture(scope="session")
def minilm_encoder(minilm_encoder: Any) -> CachedEncoder:
    """The session's MiniLM encoder, memoised."""
    return CachedEncoder(minilm_encoder)


@pytest.fixture(params=["edge", "client"])
def backend(request: pytest.FixtureRequest) -> str:
    """The engine (``M3Index.open(backend=...)``) of the reindex tests, each in a folder."""
    return str(request.param)


@pytest.fixture
def opened() -> Iterator[list[M3Index]]:
    """The indexes a test appends to it, closed after the test."""
    indexes: list[M3Index] = []
    yield indexes
    for index in indexes:
        index.close()


#: The fingerprint tests' documents (test_fingerprint.py, test_fingerprint_config.py):
#: ``fill(index, encoder, WHOLE, LONG)`` writes WHOLE whole and LONG late chunked.
WHOLE = {
    "w1": "Oxygen is a chemical element with symbol O.",
    "w2": "Berlin is the capital of Germany.",
    "w3": "Nikola Tesla was an inventor.",
}
LONG = {
    "l1": " ".join(
        f"Sentence {i} is about the Amazon rainforest and its rivers." for i in range(9)
    ),
    "l2": " ".join(f"Part {i}: late chunking pools token vectors per chunk." for i in range(7)),
}


def fill(index: M3Index, encoder: Any, whole: Mapping[str, str], long: Mapping[str, str]) -> None:
    """Add ``whole`` (``{doc_id: text}``, one chunk each, metadata ``{"k": "w"}``) and ``long``
    (late chunked, 12 tokens a chunk) to ``index``."""
    from m3kit.late_chunking import LateChunker

    index.add_texts(list(whole.values()), doc_ids=list(whole), metadatas=[{"k": "w"}] * len(whole))
    index.add_texts(
        list(long.values()),
        doc_ids=list(long),
        chunker=LateChunker(encoder, chunk_size=12, window=40),
    )


@pytest.fixture(params=list(BACKENDS))
def backend_id(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_index(backend_id: str, tmp_path: Path) -> Iterator[Callable[..., M3Index]]:
    """Factory: ``open_index(encoder, collection=...)`` on the current backend (closed after)."""
    kind, on_disk = BACKENDS[backend_id]
    opened: list[M3Index] = []

    def make(encoder: Any, collection: str = "m3kit", location: Path | None = None) -> M3Index:
        loc = location if location is not None else (tmp_path / "db" if on_disk else None)
        index = M3Index.open(encoder, loc, collection=collection, backend=kind)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()  # idempotent


@pytest.fixture(scope="session")
def corpus(squad_sample_dir: Path) -> list[dict[str, Any]]:
    """40 SQuAD paragraphs of the shipped sample (first 400 characters) with metadata."""
    rows = []
    with open(squad_sample_dir / "corpus.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 40:
                break
            row = json.loads(line)
            rows.append(
                {
                    "id": row["_id"],
                    "text": row["text"][:400],
                    "metadata": {"title": row["title"], "n": i, "group": ["a", "b", "c"][i % 3]},
                }
            )
    return rows


def add_corpus(index: M3Index, corpus: Sequence[dict[str, Any]]) -> list[str]:
    return index.add_texts(
        [r["text"] for r in corpus],
        metadatas=[r["metadata"] for r in corpus],
        doc_ids=[r["id"] for r in corpus],
    )


def open_shared_store(encoder: Any, backend: str) -> M3Store:
    """An in-memory store (collection ``shared``) sized for ``encoder``'s dense, sparse and
    ColBERT vectors, to pair with one :class:`M3Index` after another."""
    return M3Store.open(
        None,
        collection="shared",
        dense_dim=encoder.dense_dim,
        colbert_dim=encoder.colbert_dim,
        sparse=True,
        backend=backend,
    )


def same_sparse(a: SparseVector, b: SparseVector) -> bool:
    """Whether two sparse vectors hold the same token ids with the same weights (close)."""
    return a.indices.tolist() == b.indices.tolist() and np.allclose(a.values, b.values)


def record_upserts(index: M3Index, monkeypatch: pytest.MonkeyPatch) -> list[ChunkRecord]:
    """Every :class:`ChunkRecord` ``index`` writes to its store from now on (appended as they
    go; the writes still happen)."""
    written: list[ChunkRecord] = []
    upsert = index.store.upsert

    def spy(records, *args, **kwargs):  # type: ignore[no-untyped-def]
        records = list(records)
        written.extend(records)
        return upsert(records, *args, **kwargs)

    monkeypatch.setattr(index.store, "upsert", spy)
    return written


def count_encoded(index: M3Index, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many texts each pass of ``index``'s encoder through the model takes from now on
    (``M3Encoder.encode`` and the index both end in ``encode_tokenized``)."""
    encoded: list[int] = []
    encoder = index.encoder
    encode_tokenized = encoder.encode_tokenized

    def spy(ids, **kwargs):  # type: ignore[no-untyped-def]
        encoded.append(len(ids))
        return encode_tokenized(ids, **kwargs)

    monkeypatch.setattr(encoder, "encode_tokenized", spy)
    return encoded


def written_docs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents every later ``M3Store.upsert`` writes, in order (each once per call)."""
    upsert = M3Store.upsert
    docs: list[str] = []

    def recording(self: M3Store, records: Any, *args: Any, **kwargs: Any) -> Any:
        records = list(records)
        docs.extend(dict.fromkeys(r.doc_id for r in records))
        return upsert(self, records, *args, **kwargs)

    monkeypatch.setattr(M3Store, "upsert", recording)
    return docs


def stored_texts(index: M3Index) -> dict[str, list[str]]:
    """``{doc_id: [chunk texts in chunk order]}`` of every stored point."""
    rows = sorted(
        (str(h.payload["doc_id"]), int(h.payload["chunk_index"]), str(h.payload["page_content"]))
        for h in index.store._backend.scroll(None, ["doc_id", "chunk_index", "page_content"])
    )
    out: dict[str, list[str]] = {}
    for doc_id, _, text in rows:
        out.setdefault(doc_id, []).append(text)
    return out


class SentenceChunker:
    """Test chunker: one chunk per sentence, each encoded on its own (not late chunking)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        out = []
        for text in texts:
            spans = [(m.start(), m.end()) for m in re.finditer(r"[^.!?]+[.!?]?", text)]
            spans = [(s, e) for s, e in spans if text[s:e].strip()]
            if not spans:
                out.append([])
                continue
            vectors = self.encoder.encode([text[s:e] for s, e in spans])
            out.append(
                [
                    Chunk(text[s:e], s, e, i, 0, 0, output_row(vectors, i))
                    for i, (s, e) in enumerate(spans)
                ]
            )
        return out


class EncodeSpy:
    """Wraps an encoder, recording the texts it encodes (queries excluded; late windows too)."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.encoded: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        if not kwargs.get("query"):
            self.encoded.extend(texts)
        return self._encoder.encode(texts, **kwargs)

    def encode_tokenized(self, input_ids: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        """Documents indexed whole arrive as token ids: record the text they decode to."""
        tok = self._encoder.tokenizer
        self.encoded.extend(tok.decode(list(ids), skip_special_tokens=True) for ids in input_ids)
        return self._encoder.encode_tokenized(input_ids, **kwargs)

    def token_states(self, input_ids: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        """Late chunking's document pass: record the windows it encodes (decoded)."""
        tok = self._encoder.tokenizer
        self.encoded.extend(tok.decode(list(ids), skip_special_tokens=True) for ids in input_ids)
        return self._encoder.token_states(input_ids, **kwargs)

    def decoded(self, texts: Sequence[str]) -> list[str]:
        """``texts`` as :meth:`encode_tokenized` records them (tokenised, then decoded)."""
        tok = self._encoder.tokenizer
        return [tok.decode(t.input_ids, skip_special_tokens=True) for t in self.tokenize(texts)]


#: Ten short documents of the sparse cut change tests (:func:`interrupt_cut_change`).
CUT_TEXTS = [f"document {i} is about topic {i % 3} and its many details." for i in range(10)]
CUT_IDS = [f"d{i}" for i in range(10)]


def open_c(encoder: Any, where: Path, backend: str, **options: Any) -> M3Index:
    """``M3Index.open`` of collection ``"c"`` in ``where`` on ``backend``."""
    return M3Index.open(encoder, where, collection="c", backend=backend, **options)


def interrupt_cut_change(
    encoder: Any, where: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:data:`CUT_TEXTS` stored uncut in ``where / "crashed"`` and with ``sparse_top_k=2`` in
    ``where / "fresh"``; then a change of ``crashed`` to ``sparse_top_k=2`` in groups of 4,
    interrupted at its second write (the first group written). ``M3Store.upsert`` is restored
    after; ``M3Index.write_group`` stays 4."""
    for name, cut in (("crashed", {}), ("fresh", {"sparse_top_k": 2})):
        with open_c(encoder, where / name, backend, **cut) as index:
            index.add_texts(CUT_TEXTS, doc_ids=CUT_IDS)
    with second_write_fails(monkeypatch):
        open_c(encoder, where / "crashed", backend, sparse_top_k=2, reindex=True)


@contextlib.contextmanager
def second_write_fails(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside: writes go in groups of 4 (``M3Index.write_group``, left so after) and the
    second ``M3Store.upsert`` raises ``RuntimeError("write interrupted")``, which the block
    must raise; ``M3Store.upsert`` is restored after."""
    monkeypatch.setattr(M3Index, "write_group", 4)
    upsert = M3Store.upsert
    calls = []

    def failing(self: M3Store, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("write interrupted")
        return upsert(self, *args, **kwargs)

    monkeypatch.setattr(M3Store, "upsert", failing)
    with pytest.raises(RuntimeError, match="write interrupted"):
        yield
    monkeypatch.setattr(M3Store, "upsert", upsert)


@contextlib.contextmanager
def checked_against(store: M3Store, record: Mapping[str, Any]) -> Iterator[None]:
    """Inside: ``store``'s writes check the collection's record as ``record`` (read before
    another writer changed it), as a write whose check raced that change does: the check and
    the write are two requests (:mod:`m3kit.store.record_check`). For the tests of what such
    a late writer leaves behind; ``store`` reads the real record again after."""
    store.collection_metadata = lambda: dict(record)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del store.collection_metadata


def named_call(message: str) -> str:
    """The ``M3Store.delete_documents_unopened`` call a refusal names, as written in it."""
    found = re.search(r"M3Store\.delete_documents_unopened\(.*?\]\)", message)
    assert found is not None, message
    return found.group(0)


# -- the fusion calibration tests (test_calibration.py, test_calibration_encoder.py) --------
@pytest.fixture(scope="module")
def spread_m3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint whose dense scores differ visibly between texts.

    The session's tiny checkpoint (BERT's 0.02 initialisation, 2 layers) gives every pair of
    texts a dense cosine above 0.99999, so its dense ranks are float-rounding ties, and
    Qdrant's RRF orders tied prefetch hits by its internal point order: a calibration
    measured in one in-memory collection did not always repeat in another.
    """
    return build_random_m3_checkpoint(
        tmp_path_factory.mktemp("spread_m3"),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        initializer_range=0.2,
    )


@pytest.fixture()
def model_dir(spread_m3_path: Path, tmp_path: Path) -> Path:
    """A private copy of the checkpoint (calibration files are written into it)."""
    return Path(shutil.copytree(spread_m3_path, tmp_path / "model"))


@pytest.fixture()
def encoder(model_dir: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(model_dir, dtype="fp32")
