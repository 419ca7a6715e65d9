"""``M3LateChunkingSplitter``: LangChain ``TextSplitter`` that late-chunks with BGE-M3.

Each document is encoded once and cut into chunks whose vectors carry the whole document's
context. Chunk ``Document``\\ s keep the source's metadata (a deep copy each, as LangChain's
``TextSplitter`` makes) plus ``start_index`` (LangChain's key for a chunk's offset),
``end_index``, ``chunk_index`` and ``m3_late_chunk`` (a marker: the chunker's signature and a
hash of the source text). ``split_documents`` /
``transform_documents`` run the model, and every chunk ``Document`` they return carries its
vectors in memory: ``M3VectorStore.add_documents(chunks)`` (and ``M3Retriever``) store them
without encoding again. :func:`late_chunk_vectors` reads them back as an :class:`m3kit.Chunk`;
:meth:`M3LateChunkingSplitter.split_documents_with_vectors` returns the pairs directly.

The vectors live in memory as long as the ``Document`` object the splitter returned: no
vectors are hidden in metadata. They are found by the marker (its ``carry`` key), so a copy
made in this process while that ``Document`` is alive (``model_copy``,
``Document(**doc.model_dump())``, the copies LangChain's ``index()`` makes) carries them too.
A document rebuilt in another process, or after the returned ``Document`` is gone (a
docstore, a cache), keeps the marker but not the vectors; ``M3VectorStore`` and
``M3QdrantVectorStore`` refuse such a document with an error instead of silently encoding the
chunk alone (which would drop its context). Other LangChain stores see only texts and encode
every chunk alone: use one of those two.
Run the splitter again, or delete ``metadata["m3_late_chunk"]`` to store the chunk as a plain
text. The stores refuse a chunk ``Document`` the splitter returned, its text unchanged, whose
marker was removed (:func:`lost_marker`; ``ParentDocumentRetriever``'s
``child_metadata_fields`` does that): to store such a chunk as a plain text, add a new
``Document`` of its text and metadata. :meth:`M3LateChunkingSplitter.split_text` gives the
chunk texts without running the model; ``create_documents(texts, metadatas)`` late-chunks
plain texts, as a ``TextSplitter``'s does.

It is a ``TextSplitter`` subclass, so it goes where LangChain takes one: as
``ParentDocumentRetriever``'s ``child_splitter`` over ``M3VectorStore`` or
``M3QdrantVectorStore``, the children are stored with their late-chunked vectors (with
``child_metadata_fields``, list ``"m3_late_chunk"`` among them, else adding raises). Its
chunk size counts the model's tokens, so ``TextSplitter``'s ``from_tiktoken_encoder`` /
``from_huggingface_tokenizer`` raise ``TypeError``.

Unlike LangChain's other ``TextSplitter``\\ s, by design:

- An empty or whitespace-only document gives one chunk (its text as is; LangChain's give
  none): every document keeps a chunk, so a document that became empty still replaces its
  older chunks (``index(..., cleanup="incremental")``). Drop such documents before splitting
  to store nothing for them.
- ``start_index`` is always set (no ``add_start_index``), and with the built-in sentence
  splitter chunks tile the document: a chunk's text keeps its trailing whitespace (no
  ``strip_whitespace``).
- A chunk's vectors come from its document's text (``page_content``); metadata is kept on the
  chunk, never encoded.

Example::

    from langchain_core.documents import Document
    from langchain_m3 import M3LateChunkingSplitter, M3VectorStore

    splitter = M3LateChunkingSplitter(model_name_or_path="BAAI/bge-m3", chunk_size=256)
    chunks = splitter.split_documents([Document(page_content=text)])
    store = M3VectorStore.from_documents(chunks, splitter)  # late-chunked vectors kept
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter
from pydantic import Field, PrivateAttr

from langchain_m3._encoder_model import EncoderModel
from m3kit.encoder import M3Encoder
from m3kit.field_types import WholeNumber
from m3kit.fingerprint import encoder_fingerprint
from m3kit.late_chunking import DensePooling, LateChunker, WindowPlacement
from m3kit.outputs import Chunk, Head

__all__ = [
    "CHUNK_INDEX_KEY",
    "END_INDEX_KEY",
    "LATE_CHUNK_KEY",
    "START_INDEX_KEY",
    "CarriedChunk",
    "M3LateChunkingSplitter",
    "carried_chunk",
    "is_late_chunk",
    "late_chunk_vectors",
]

START_INDEX_KEY = "start_index"
END_INDEX_KEY = "end_index"
CHUNK_INDEX_KEY = "chunk_index"
LATE_CHUNK_KEY = "m3_late_chunk"
"""Metadata key marking a late-chunked ``Document``: ``{"chunker": signature, "source": hash,
"carry": key of its vectors in memory}``."""


_NO_LENGTH_FUNCTION = (
    "M3LateChunkingSplitter.{} is not supported: the splitter counts tokens with its own "
    "model's tokenizer; build it with M3LateChunkingSplitter(model_name_or_path=..., "
    "chunk_size=...) or M3LateChunkingSplitter.from_encoder(encoder, chunk_size=...)"
)


# A TextSplitter (an ABC) so that LangChain fields typed TextSplitter accept it
# (ParentDocumentRetriever.child_splitter): pydantic's __init__ comes first in the MRO, so
# TextSplitter.__init__ never runs and its private settings (_chunk_size, _length_function...)
# are unset. Every public TextSplitter method is overridden below; only its protected helpers
# for character splitters (_merge_splits, _join_docs) are not, and nothing here calls them.
class M3LateChunkingSplitter(EncoderModel, TextSplitter):
    """Split documents into late-chunked pieces (dense, sparse and ColBERT per chunk).

    Build it from a checkpoint (``model_name_or_path`` and the other loading fields), or share a
    loaded model: ``M3LateChunkingSplitter.from_encoder(encoder, chunk_size=128)``.

    A LangChain ``TextSplitter``: it can be ``ParentDocumentRetriever``'s ``child_splitter``
    (with an ``M3VectorStore`` or ``M3QdrantVectorStore``, the children keep their vectors).
    ``TextSplitter``'s ``from_tiktoken_encoder`` / ``from_huggingface_tokenizer`` raise
    ``TypeError``: the chunk size counts the model's own tokens.
    """

    chunk_size: WholeNumber | None = Field(default=None, ge=1)
    """Token budget per chunk of the built-in sentence splitter (default: 256, or fewer when
    the model's window holds fewer text tokens, ``m3kit.chunking.default_chunk_size``)."""
    window: WholeNumber | None = Field(default=None, ge=3)
    """Most tokens per forward pass (default: ``2 * chunk_size + 2``, at most the encoder's
    ``max_length``). Smaller windows cost less (attention is quadratic)."""
    overlap: WholeNumber | None = Field(default=None, ge=0)
    """Text tokens shared by consecutive windows of a long document (default: an eighth of
    the window)."""
    placement: WindowPlacement = WindowPlacement.CENTRED
    """``centred`` (each token from the window where it sits most centrally) or ``chunks``."""
    late_heads: list[Head] | None = None
    """Heads pooled late, the others encoded from the chunk alone (default: every head of a
    multi-head model, none of a dense-only one; ``m3kit.late_chunking.default_late_heads``)."""
    dense_pooling: DensePooling | None = None
    """Older spelling: ``mean`` (dense late) or ``naive`` (dense from the chunk alone)."""
    splitter: Any = Field(default=None, exclude=True)
    """Chunk boundaries instead of the sentence splitter: a LangChain ``TextSplitter``, or a
    callable ``str -> [(start, end)]``."""

    _chunker: LateChunker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._chunker = LateChunker(
            self.encoder,
            chunk_size=self.chunk_size,
            splitter=self.splitter,
            window=self.window,
            overlap=self.overlap,
            dense_pooling=self.dense_pooling,
            placement=self.placement,
            late_heads=self.late_heads,
        )

    @classmethod
    def from_tiktoken_encoder(cls, *args: Any, **kwargs: Any) -> Any:
        """Refused: a late-chunking splitter counts its model's own tokens.

        Raises:
            TypeError: Always; build it from a checkpoint or with :meth:`from_encoder`.
        """
        raise TypeError(_NO_LENGTH_FUNCTION.format("from_tiktoken_encoder"))

    @classmethod
    def from_huggingface_tokenizer(cls, *args: Any, **kwargs: Any) -> Any:
        """Refused: a late-chunking splitter counts its model's own tokens.

        Raises:
            TypeError: Always; build it from a checkpoint or with :meth:`from_encoder`.
        """
        raise TypeError(_NO_LENGTH_FUNCTION.format("from_huggingface_tokenizer"))

    @property
    def chunker(self) -> LateChunker:
        """The :class:`~m3kit.late_chunking.LateChunker` (pass it to ``M3Retriever``)."""
        return self._chunker

    def split_text(self, text: str) -> list[str]:
        """The chunk texts of ``text`` (no model call: boundaries only)."""
        return [text[s:e] for s, e in self._chunker.spans([text])[0]]

    def split_documents_with_vectors(
        self, documents: Iterable[Document]
    ) -> list[tuple[Document, Chunk]]:
        """Chunk ``Document``\\ s paired with their :class:`m3kit.Chunk` (all vectors).

        The ``Document``\\ s are those of :meth:`split_documents` (they carry the vectors too).
        """
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, not a Document")
        per_doc = self._chunker.chunk(
            [d.page_content for d in docs], show_progress=self.show_progress
        )
        signature = self._chunker.signature
        # the identity m3kit gave before fingerprints held config.json settings: this is a
        # dedupe key only (the store checks the model), and chunks written then stay unchanged
        model = encoder_fingerprint(self.encoder).legacy_identity
        out = []
        for doc, chunks in zip(docs, per_doc, strict=True):
            source = hashlib.sha256(doc.page_content.encode()).hexdigest()[:32]
            for c in chunks:
                chunk_doc = _chunk_document(doc, c.text, c.start, c.end, c.index)
                # the same for the same chunk of the same text by the same model and settings,
                # so LangChain's index() sees an unchanged chunk as unchanged
                blob = json.dumps([model, signature, source, c.index, c.start, c.end])
                carry = hashlib.sha256(blob.encode()).hexdigest()[:32]
                chunk_doc.metadata[LATE_CHUNK_KEY] = {
                    "chunker": signature,
                    "source": source,
                    "carry": carry,
                }
                _attach(chunk_doc, carry, CarriedChunk(c, self.encoder))
                out.append((chunk_doc, c))
        return out

    def split_documents(self, documents: Iterable[Document]) -> list[Document]:
        """Late-chunk ``Document``\\ s: each is encoded once; every chunk carries its vectors.

        Store them with ``M3VectorStore.add_documents`` (or ``M3Retriever.add_documents``):
        they are written with their late-chunked vectors, not encoded again. See the module
        docstring for what a copy of a chunk loses.
        """
        return [doc for doc, _ in self.split_documents_with_vectors(documents)]

    def create_documents(
        self, texts: list[str], metadatas: Sequence[dict[str, Any] | None] | None = None
    ) -> list[Document]:
        """Late-chunk plain texts, as LangChain's ``TextSplitter.create_documents`` does.

        :meth:`split_documents` of one ``Document`` per text with its metadata (a ``None``
        entry, or no ``metadatas``: none); the chunks carry their vectors likewise.

        Raises:
            TypeError: ``texts`` is one string, or a metadata entry is not a dict (or ``None``).
            ValueError: ``metadatas`` has another length than ``texts``.
        """
        from langchain_m3._documents import documents_of  # it imports this module

        return self.split_documents(documents_of(texts, metadatas))

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> list[Document]:
        """``BaseDocumentTransformer`` entry point: :meth:`split_documents` (runs the model)."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return self.split_documents(documents)

    async def atransform_documents(
        self, documents: Sequence[Document], **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`transform_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.transform_documents, documents, **kwargs)


def _chunk_document(parent: Document, text: str, start: int, end: int, index: int) -> Document:
    # a deep copy per chunk, as LangChain's TextSplitter makes: editing one chunk's nested
    # metadata (a list of tags) must change neither its siblings nor the source document
    metadata = {
        **copy.deepcopy(parent.metadata),
        START_INDEX_KEY: start,
        END_INDEX_KEY: end,
        CHUNK_INDEX_KEY: index,
    }
    return Document(page_content=text, metadata=metadata)


class CarriedChunk:
    """The late-chunked vectors a chunk ``Document`` carries and the encoder that made them."""

    __slots__ = ("chunk", "encoder")

    def __init__(self, chunk: Chunk, encoder: M3Encoder) -> None:
        self.chunk = chunk
        self.encoder = encoder


# marker["carry"] -> [(weak reference to a Document the splitter returned, its vectors)]. Keyed
# by the marker, not the object, so a copy (LangChain's index() copies every document) finds
# them too. An entry lives as long as its Document: weakref.finalize removes it when the
# Document is collected.
_CARRIED: dict[str, list[tuple[weakref.ReferenceType[Document], CarriedChunk]]] = {}
# id() of a Document the splitter returned -> (weak reference to it, its vectors): finds such a
# Document whose marker was removed (ParentDocumentRetriever's child_metadata_fields replaces a
# child's metadata with the keys it names), which would otherwise be stored as a plain text
_RETURNED: dict[int, tuple[weakref.ReferenceType[Document], CarriedChunk]] = {}
_CARRIED_LOCK = threading.Lock()
# Entries of collected Documents, removed under the lock by the next registry operation. A
# Document's finalizer runs whenever it is collected: the cyclic GC may collect one (held in a
# reference cycle) at any allocation, also while this very thread holds _CARRIED_LOCK, so the
# finalizer must not wait for the lock (it would wait forever) and only queues its removal.
_COLLECTED: collections.deque[tuple[str, weakref.ReferenceType[Document], int]] = (
    collections.deque()
)


@contextlib.contextmanager
def _registries() -> Iterator[None]:
    """Hold ``_CARRIED_LOCK``; collected Documents' entries are removed before it is released."""
    with _CARRIED_LOCK:
        try:
            yield
        finally:
            _remove_collected()


def _remove_collected() -> None:
    # with _CARRIED_LOCK held; a finalizer running meanwhile (an allocation here) only queues
    while _COLLECTED:
        key, ref, identity = _COLLECTED.popleft()
        kept = [entry for entry in _CARRIED.get(key, []) if entry[0] is not ref]
        if kept:
            _CARRIED[key] = kept
        else:
            _CARRIED.pop(key, None)
        if _RETURNED.get(identity, (None,))[0] is ref:
            del _RETURNED[identity]


def _attach(document: Document, key: str, carried: CarriedChunk) -> None:
    ref = weakref.ref(document)
    with _registries():
        _CARRIED.setdefault(key, []).append((ref, carried))
        _RETURNED[id(document)] = (ref, carried)
    weakref.finalize(document, _detach, key, ref, id(document))


def _detach(key: str, ref: weakref.ReferenceType[Document], identity: int) -> None:
    """Finalizer of a Document the splitter returned: queue its entries' removal, and remove
    them now unless the lock is held (by another thread, or by this one: see _COLLECTED)."""
    _COLLECTED.append((key, ref, identity))
    if _CARRIED_LOCK.acquire(blocking=False):
        try:
            _remove_collected()
        finally:
            _CARRIED_LOCK.release()


def is_late_chunk(document: Document) -> bool:
    """Whether ``document`` came from :class:`M3LateChunkingSplitter` (its marker is present).

    True for a copy or a JSON round trip too, which no longer carry the vectors.
    """
    return LATE_CHUNK_KEY in document.metadata


def carried_chunk(document: Document) -> CarriedChunk | None:
    """The vectors (and encoder) ``document`` carries; ``None`` when it carries none.

    Found by its ``m3_late_chunk`` marker: a Document the splitter returned, or a copy of one
    made in this process while that Document is alive (the vectors are those of the chunk's
    text as split: a store checks that ``page_content`` is still that text).
    """
    marker = document.metadata.get(LATE_CHUNK_KEY)
    key = marker.get("carry") if isinstance(marker, dict) else None
    if not isinstance(key, str):
        return None
    with _registries():
        entries = list(_CARRIED.get(key, ()))
    alive = [(ref(), carried) for ref, carried in entries]
    for doc, carried in alive:
        if doc is document:
            return carried
    return next((carried for doc, carried in alive if doc is not None), None)


def lost_marker(document: Document) -> bool:
    """Whether ``document`` is a chunk ``Document`` the splitter returned (that very object,
    its text unchanged) whose ``m3_late_chunk`` marker was removed from its metadata.

    Stored as it is, it would be encoded on its own text: stores refuse it
    (:func:`lost_marker_message`). A new ``Document`` of its text and metadata is a plain text.
    """
    if is_late_chunk(document):
        return False
    with _registries():
        entry = _RETURNED.get(id(document))
    if entry is None or entry[0]() is not document:
        return False
    return entry[1].chunk.text == document.page_content


def refuse_lost_markers(documents: Sequence[Document]) -> None:
    """Refuse the documents :func:`lost_marker` finds (only ``add_documents`` /
    ``from_documents`` see the ``Document`` objects: ``add_texts`` and ``from_texts`` get texts
    and metadata, where a chunk whose marker was removed looks like any plain text).

    Raises:
        ValueError: Names the first such document (:func:`lost_marker_message`).
    """
    for i, doc in enumerate(documents):
        if isinstance(doc, Document) and lost_marker(doc):
            raise ValueError(lost_marker_message(f"documents[{i}]"))


def lost_marker_message(where: str) -> str:
    """The error for a document :func:`lost_marker` finds."""
    return (
        f"{where} is a chunk M3LateChunkingSplitter returned, but its metadata no longer has "
        f"the {LATE_CHUNK_KEY!r} key its late-chunked vectors are found by (LangChain's "
        "ParentDocumentRetriever(child_metadata_fields=[...]) keeps only the keys listed: add "
        f"{LATE_CHUNK_KEY!r} to them); stored as it is it would be encoded on its own text, "
        "without its document's context. To store it so on purpose, add a new Document: "
        "Document(page_content=chunk.page_content, metadata=chunk.metadata)"
    )


def late_chunk_vectors(document: Document) -> Chunk:
    """The :class:`m3kit.Chunk` (``.dense``, ``.sparse``, ``.colbert``) of a chunk ``Document``.

    Raises:
        ValueError: ``document`` is not one :class:`M3LateChunkingSplitter` returned (in this
            process; a copy or a document rebuilt from JSON has no vectors).
    """
    carried = carried_chunk(document)
    if carried is None:
        raise ValueError(lost_vectors_message(document))
    return carried.chunk


def lost_vectors_message(document: Document, where: str = "document") -> str:
    """Why ``document`` has no late-chunked vectors, and what to do (for error messages)."""
    if not is_late_chunk(document):
        return (
            f"{where} (id {document.id!r}) did not come from M3LateChunkingSplitter; it carries "
            "no late-chunked vectors"
        )
    return (
        f"{where} (id {document.id!r}, {document.page_content[:40]!r}) came from "
        "M3LateChunkingSplitter but no longer carries its vectors: the vectors live in memory "
        "only while the Document the splitter returned does (copies made in this process find "
        "them then), and this one was rebuilt in another process or after that Document was "
        "gone (a docstore, a cache). Split its source document again and add those chunks "
        "(with LangChain's index(), split right before calling it), or delete "
        f"metadata[{LATE_CHUNK_KEY!r}] to have it encoded on its own text (naive chunking, "
        "without its document's context)"
    )
