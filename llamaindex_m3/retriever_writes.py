"""The write half of :class:`~llamaindex_m3.M3Retriever`: documents and nodes into the index.

Split from :mod:`llamaindex_m3.retriever`: :class:`RetrieverWrites` is a base class (a plain
mixin) of ``M3Retriever`` holding :meth:`~llamaindex_m3.M3Retriever.add_documents`,
:meth:`~llamaindex_m3.M3Retriever.add_nodes` and :meth:`~llamaindex_m3.M3Retriever.delete`;
``M3Retriever.__init__`` sets the ``index`` they write to. How documents and nodes become
chunk records: :mod:`llamaindex_m3.node_records`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.schema import BaseNode, Document

from llamaindex_m3.events import embedding_reports, encoder_payload
from llamaindex_m3.node_groups import check_node_types, encoded_groups
from llamaindex_m3.node_records import (
    StoredChunk,
    carried_vectors,
    embed_text,
    is_late,
    lost_vectors_message,
    node_extra,
    node_record,
    nodes_hash,
    read_back_index,
    unpack_documents,
)
from llamaindex_m3.sourceless import ref_docs_filter
from llamaindex_m3.stored_chunks import (
    DOC_BATCH,
    check_duplicate_ids,
    check_ids_elsewhere,
    check_sourceless,
    doc_id_of,
    named_chunks,
    payloads_by_doc,
    stored_payloads,
)
from m3kit.outputs import M3Output
from m3kit.store import ChunkRecord, M3Index, M3Store, point_id
from m3kit.store.cancelling import holding, in_worker, stop_if_cancelled
from m3kit.store.filters import distinct_ids, documents_filter
from m3kit.store.schema import CHUNK_ID, CHUNK_INDEX, EXTRA

if TYPE_CHECKING:
    from m3kit.chunking import Chunker
    from m3kit.late_chunking import LateChunker

__all__ = ["RetrieverWrites"]

dispatcher = get_dispatcher(__name__)


class RetrieverWrites:
    """The write methods of :class:`~llamaindex_m3.M3Retriever` (its base; it sets ``index``).

    Attributes:
        index: The encoder + store pair written to.
    """

    index: M3Index
    callback_manager: CallbackManager  # (BaseRetriever's: the embedding events' handlers)

    def _encoder_payload(self) -> dict[str, Any]:
        return encoder_payload(self.index.fingerprint.model)

    @dispatcher.span  # (the embedding events' span, as BaseEmbedding's own)
    def add_documents(
        self,
        documents: Sequence[Document],
        *,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Encode and store documents; unchanged ones are skipped, changed ones replaced.

        A document's id is its ``doc_id`` when one was given (``Document(id_=...)``, or set by
        a reader such as ``SimpleDirectoryReader(filename_as_id=True)``); otherwise LlamaIndex
        made up a random one, and a hash of the text is used instead so that adding the same
        document again does not store it twice.

        The text alone is encoded (and chunked); the metadata is stored and filterable but not
        embedded. LlamaIndex's own indexes embed a node's ``MetadataMode.EMBED`` text, the
        metadata not hidden from the embedding model included: for that, parse the documents
        into nodes and call :meth:`add_nodes` (``M3VectorStore`` does the same). The nodes
        retrieved keep each document's hidden metadata keys and templates (what a node parser
        gives its nodes: a ``SimpleDirectoryReader`` document's file size and dates stay
        hidden from the LLM); a change to them replaces the document.

        Args:
            documents: LlamaIndex documents (metadata must be JSON-serialisable).
            chunking: ``True`` cuts each document into chunks of whole sentences (256 tokens,
                or the model's window if smaller), each encoded alone, so no text past the
                model's ``max_length`` is lost (:class:`~m3kit.chunking.NaiveChunker`; pass one
                to choose the size or splitter).
            late_chunking: ``True`` splits each document into chunks embedded in the context
                of the whole document (:class:`~m3kit.late_chunking.LateChunker` with its
                defaults); pass a ``LateChunker`` to choose the chunk size or splitter.
                With ``chunking=`` too: the chunks ``chunking=`` cuts, pooled late
                (:func:`m3kit.chunking.as_chunker`). Default (neither): one chunk per
                document, cut at the encoder's ``max_length`` with a warning naming it.
            show_progress: tqdm bars.

        Returns:
            The document ids, in input order (``ref_doc_id`` of the retrieved nodes).
        """
        texts, metadatas, doc_ids, extras = unpack_documents(documents)
        with embedding_reports(self.callback_manager, self._encoder_payload()) as report:
            return self.index.add_texts(
                texts,
                metadatas,
                doc_ids,
                chunker=self._chunker(chunking, late_chunking),
                show_progress=show_progress,
                extras=extras,
                on_encode=report,
            )

    async def aadd_documents(
        self,
        documents: Sequence[Document],
        *,
        chunking: bool | Chunker = False,
        late_chunking: bool | LateChunker = False,
        show_progress: bool | None = None,
    ) -> list[str]:
        """:meth:`add_documents` in a worker thread; cancelled, it writes nothing more once it
        has raised (see :meth:`M3Index.aadd_texts <m3kit.store.M3Index.aadd_texts>`)."""
        return await in_worker(
            self.add_documents,
            documents,
            chunking=chunking,
            late_chunking=late_chunking,
            show_progress=show_progress,
        )

    def _chunker(
        self, chunking: bool | Chunker, late_chunking: bool | LateChunker
    ) -> Chunker | None:
        """The chunker ``chunking`` / ``late_chunking`` ask for (``None``: one chunk a document)."""
        from m3kit.chunking import as_chunker

        return as_chunker(self.index.encoder, chunking=chunking, late_chunking=late_chunking)

    @dispatcher.span
    def add_nodes(
        self, nodes: Sequence[BaseNode], *, show_progress: bool | None = None
    ) -> list[str]:
        """Index nodes from a node parser, each as one chunk of its source document.

        Nodes are grouped by ``node.ref_doc_id`` (the node's own id when it has no source);
        within a document, ``chunk_index`` is the node's position among its nodes. Pass all the
        nodes of a document in one call: the document's previously stored chunks are replaced
        by these. Documents whose nodes are unchanged are skipped without encoding. A node is
        encoded on the text the embedding model sees (``MetadataMode.EMBED``: its text with
        the metadata not hidden from it), its own ``embedding`` kept as its dense vector when
        it has one, as :class:`~llamaindex_m3.M3VectorStore` does. Nodes from
        :class:`~llamaindex_m3.M3LateChunkingNodeParser` (in this process) are stored with the
        late-chunked vectors they carry; other nodes are encoded here, each on its own text.
        A late-chunked node that lost its vectors (rebuilt from a docstore or an
        ``IngestionPipeline`` cache: ColBERT matrices are never serialised) is an error, not
        silently re-encoded without its document's context; an unchanged document already
        stored is skipped as usual, so re-running a cached pipeline works; its chunks take the
        nodes' ids, relationships, hidden keys and templates (a parse draws new node ids), so
        :meth:`retrieve` returns the nodes just added. The text a node
        is encoded on is part of its document's version: a change to it (a metadata key no
        longer hidden from the embedding) re-encodes the document, and documents stored by
        versions that encoded the bare text are encoded once more.

        One node id names one node: copies of a node (same id, document, text, span,
        metadata and encoded text) are stored once; one id on nodes of different content is
        refused before anything is encoded, as ``M3VectorStore.add`` does.

        Raises:
            ValueError: A late-chunked node without the vectors the store needs; a node id
                given to nodes of different content, stored in another document (or given to
                nodes of two documents); nodes read back from the store that are fewer than
                their document's stored chunks.

        Args:
            nodes: Text nodes (metadata must be JSON-serialisable).
            show_progress: tqdm bars.

        Returns:
            The nodes' ids (also the node ids :meth:`retrieve` returns), in input order.
        """
        check_node_types(nodes)
        check_duplicate_ids(nodes)  # before encoding; copies of one node remain: kept once
        groups: dict[str, list[tuple[int, BaseNode]]] = {}
        kept: set[tuple[str, str]] = set()
        for i, node in enumerate(nodes):
            key = (node.ref_doc_id or node.node_id, node.node_id)
            if key not in kept:
                kept.add(key)
                groups.setdefault(key[0], []).append((i, node))
        # the stored versions read stay true until written; an aadd_nodes cancelled while it
        # waited for the lock writes nothing
        with holding(self.index.store.write_lock):
            return self._add_node_groups(nodes, groups, show_progress)

    def _add_node_groups(
        self,
        nodes: Sequence[BaseNode],
        groups: dict[str, list[tuple[int, BaseNode]]],
        show_progress: bool | None,
    ) -> list[str]:
        store = self.index.store
        by_doc = {doc_id: [n for _, n in group] for doc_id, group in groups.items()}
        for doc_id, group_nodes in by_doc.items():
            check_sourceless(doc_id, group_nodes, None)
        check_ids_elsewhere(self.index, by_doc)
        payloads = stored_payloads(self.index, list(by_doc))
        stored_of = payloads_by_doc(payloads)
        for doc_id, group_nodes in by_doc.items():
            check_sourceless(doc_id, group_nodes, stored_of.get(doc_id, []))
        named = named_chunks(self.index, by_doc, payloads)  # the chunk a node's id names
        for doc_id, group in groups.items():
            _check_read_back(store, doc_id, group, named)
        versions = {doc_id: nodes_hash(group, named) for doc_id, group in groups.items()}
        done = store.complete_documents(versions)
        self._renew_node_fields({d: groups[d] for d in done}, versions, named)
        todo: list[tuple[str, int, BaseNode]] = []
        held: list[tuple[str, int, BaseNode, M3Output]] = []
        for doc_id, group in groups.items():
            if doc_id in done:
                continue
            for chunk_index, (_, node) in enumerate(group):
                carried = carried_vectors(node, store.heads, self.index.fingerprint)
                if carried is None and is_late(node):
                    raise ValueError(lost_vectors_message(node, store.heads))
                if carried is None:
                    todo.append((doc_id, chunk_index, node))
                else:
                    held.append((doc_id, chunk_index, node, carried))
        # encoded and written in groups of whole documents, as M3VectorStore.add writes
        # (the text the embedding model sees, MetadataMode.EMBED, as M3VectorStore encodes)
        self._write_node_groups(groups, versions, named, todo, held, show_progress)
        return [node.node_id for node in nodes]

    def _write_node_groups(
        self,
        groups: dict[str, list[tuple[int, BaseNode]]],
        versions: dict[str, str],
        named: dict[int, StoredChunk],
        todo: list[tuple[str, int, BaseNode]],
        held: list[tuple[str, int, BaseNode, M3Output]],
        show_progress: bool | None,
    ) -> None:
        # an event per group encoded (documents stored unchanged, carried vectors: none)
        with embedding_reports(self.callback_manager, self._encoder_payload()) as report:
            for part, encoded, part_held in encoded_groups(
                self.index,
                todo,
                held,
                None,
                show_progress,
                on_encode=lambda part_nodes: report([embed_text(n) for n in part_nodes]),
            ):
                self._write_node_group(
                    groups, versions, named, part, encoded, part_held, show_progress
                )

    def _write_node_group(
        self,
        groups: dict[str, list[tuple[int, BaseNode]]],
        versions: dict[str, str],
        named: dict[int, StoredChunk],
        part: list[tuple[str, int, BaseNode]],
        encoded: list[M3Output],
        part_held: list[tuple[str, int, BaseNode, M3Output]],
        show_progress: bool | None,
    ) -> None:
        records: list[ChunkRecord] = []
        for doc_id, chunk_index, node, vectors in part_held:
            chunk = named.get(id(node))
            records.append(
                node_record(doc_id, chunk_index, node, vectors, versions, groups[doc_id], chunk)
            )
        for (doc_id, chunk_index, node), vectors in zip(part, encoded, strict=True):
            chunk = named.get(id(node))
            text = embed_text(node)  # what encode_nodes encoded
            group = groups[doc_id]
            records.append(
                node_record(doc_id, chunk_index, node, vectors, versions, group, chunk, text)
            )
        if records:
            self.index.store.upsert(records, show_progress=show_progress, replace=True)

    def _renew_node_fields(
        self,
        groups: dict[str, list[tuple[int, BaseNode]]],
        versions: dict[str, str],
        named: dict[int, StoredChunk],
    ) -> None:
        """Give the chunks of documents stored unchanged their nodes' ids and node fields.

        Args:
            groups: The nodes of each document stored whole at its version (not rewritten).
            versions: Each document's version (an update holds only while it is stored).
            named: The stored chunk each node names by its id (``id(node)``).
        """
        if not groups:
            return
        stored = {
            (doc_id_of(p), int(p.get(CHUNK_INDEX) or 0)): p
            for p in stored_payloads(self.index, list(groups))
        }
        fields: dict[str, dict[str, Any]] = {}
        held: dict[str, str] = {}  # point id -> the version it is updated at
        for doc_id, group in groups.items():
            for chunk_index, (_, node) in enumerate(group):
                payload = stored.get((doc_id, chunk_index), {})
                want = {CHUNK_ID: node.node_id, EXTRA: node_extra(node, named.get(id(node)))}
                if any(payload.get(k) != v for k, v in want.items()):
                    pid = point_id(doc_id, chunk_index)
                    fields[pid], held[pid] = want, versions[doc_id]
        if fields:  # only while the chunk holds the version read (another writer may not)
            self.index.store.set_writer_fields(fields, versions=held)

    async def aadd_nodes(
        self, nodes: Sequence[BaseNode], *, show_progress: bool | None = None
    ) -> list[str]:
        """Async :meth:`add_nodes` (in a worker thread, stopped when cancelled, as
        :meth:`aadd_documents`)."""
        return await in_worker(self.add_nodes, nodes, show_progress=show_progress)

    async def adelete(self, doc_ids: Sequence[str]) -> None:
        """Async :meth:`delete` (in a worker thread; cancelled, it raises only once the delete
        under way is done, so none lands after)."""
        await in_worker(self.delete, doc_ids)

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of these documents.

        A node added without a source document belongs to none (its ``ref_doc_id`` is
        ``"None"``, as in LlamaIndex's stores: :mod:`~llamaindex_m3.sourceless`) and stays;
        a ``Document`` added whole is its own document.

        Raises:
            TypeError: ``doc_ids`` is one string (give ``[ref_doc_id]``).
        """
        ids = distinct_ids(doc_ids, "doc_ids")
        store = self.index.store
        with holding(store.write_lock):  # an adelete cancelled while it waited: not done
            for start in range(0, len(ids), DOC_BATCH):
                stop_if_cancelled()  # cancelled between batches: the rest stay
                batch = ids[start : start + DOC_BATCH]
                store.delete_points(filter=ref_docs_filter(batch))


def _check_read_back(
    store: M3Store,
    doc_id: str,
    group: list[tuple[int, BaseNode]],
    named: dict[int, StoredChunk],
) -> None:
    """Nodes read back from the store may replace their document only as a whole.

    A node was read back when its id names a stored chunk and it carries the placement keys
    the reader added (:func:`~llamaindex_m3.node_records.read_back_index`; ``named``: the
    chunk each node names, by ``id(node)``).

    ``add_nodes`` replaces a document's chunks with the nodes given; a few of its chunks read
    back, edited and added again would drop all the others.

    Raises:
        ValueError: Read-back nodes of ``doc_id`` that are fewer than its stored chunks.
    """
    if all(read_back_index(node, named.get(id(node))) is None for _, node in group):
        return
    stored = store.count(documents_filter([doc_id]))
    if len(group) < stored:
        raise ValueError(
            f"{len(group)} node(s) read back from the store for document {doc_id!r}, which has "
            f"{stored} chunks: add_nodes replaces a document with the nodes given, so the "
            "others would be deleted. Pass all of its nodes, or update single nodes with "
            "M3VectorStore.add (M3VectorStore.from_index(retriever.index))"
        )
