"""Nodes without a source document: the ``ref_doc_id`` they record, ``"None"``.

A node without a ``SOURCE`` relationship (a ``TextNode`` built by hand and given to
``insert_nodes``) belongs to no document. LlamaIndex's stores record its ``ref_doc_id`` (and
``doc_id`` / ``document_id``) as the string ``"None"`` (``SimpleVectorStore``, and
``node_to_metadata_dict`` for Qdrant, Chroma, Pinecone...), and so does ``M3VectorStore``:
``delete(ref_doc_id)``, :meth:`~llamaindex_m3.M3Retriever.delete`, a query's ``doc_ids`` and
filters on ``doc_id`` / ``ref_doc_id`` / ``document_id`` select it under ``"None"``, never
under its own id; it reads back without a source (``ref_doc_id`` ``None``). The layout needs a
``doc_id``, so it is stored alone under its own id
(:func:`~llamaindex_m3.stored_chunks.check_sourceless`), and :func:`sourceless_filter` tells
its chunk from a document's.

A ``Document`` stored whole (an ingestion without a splitter) is its own document:
``IngestionPipeline``'s upserts delete it by its id (LlamaIndex's stores record ``"None"``
for it too, and keep it: the pipeline's ``UPSERTS_AND_DELETE`` leaves a document it dropped
in them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llama_index.core.schema import BaseNode, Document, ImageDocument, NodeRelationship
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter
from qdrant_client import models

from m3kit.store.filters import documents_filter
from m3kit.store.schema import CHUNK_ID, DOC_ID, EXTRA

__all__ = [
    "DOCUMENT_CLASSES",
    "NO_DOCUMENT",
    "document_key_condition",
    "has_no_source",
    "ref_docs_filter",
    "sourceless_chunk",
    "sourceless_filter",
]

#: The ``ref_doc_id`` LlamaIndex's stores record for a node without a source document.
NO_DOCUMENT = "None"

#: ``class_name`` of the nodes that are documents themselves (stored whole).
DOCUMENT_CLASSES = (Document.class_name(), ImageDocument.class_name())
_SOURCE = NodeRelationship.SOURCE.value  # its key in a node's JSON relationships


def has_no_source(node: BaseNode) -> bool:
    """A node without a source document: no ``SOURCE`` relationship and not a ``Document``."""
    return not isinstance(node, Document) and NodeRelationship.SOURCE not in node.relationships


def sourceless_chunk(chunk_id: Any, extra: Any) -> bool:
    """A stored chunk written from a node without a source (see :func:`has_no_source`).

    Args:
        chunk_id: Its stored ``chunk_id`` (only LlamaIndex writers set one).
        extra: Its stored ``extra`` (the node's class and relationships).
    """
    if chunk_id is None:
        return False
    extra = extra if isinstance(extra, Mapping) else {}
    relationships = extra.get("relationships")
    has_source = isinstance(relationships, Mapping) and relationships.get(_SOURCE) is not None
    return not has_source and extra.get("class_name") not in DOCUMENT_CLASSES


def sourceless_filter() -> models.Filter:
    """The chunks :func:`sourceless_chunk` selects, as a store filter."""
    return models.Filter(
        must=[
            models.IsEmptyCondition(
                is_empty=models.PayloadField(key=f"{EXTRA}.relationships.{_SOURCE}")
            )
        ],
        must_not=[
            models.IsEmptyCondition(is_empty=models.PayloadField(key=CHUNK_ID)),
            models.FieldCondition(
                key=f"{EXTRA}.class_name", match=models.MatchAny(any=list(DOCUMENT_CLASSES))
            ),
        ],
    )


def ref_docs_filter(doc_ids: Sequence[str]) -> models.Filter:
    """The chunks whose recorded ``ref_doc_id`` is one of ``doc_ids``: the nodes of these
    documents, and the nodes without a source when :data:`NO_DOCUMENT` is among them."""
    of_documents = models.Filter(
        must=[documents_filter(list(doc_ids))], must_not=[sourceless_filter()]
    )
    if NO_DOCUMENT not in doc_ids:
        return of_documents
    return models.Filter(should=[of_documents, sourceless_filter()])


def document_key_condition(
    f: MetadataFilter, build: Callable[[str, MetadataFilter], models.Condition]
) -> models.Condition:
    """A filter on ``doc_id`` / ``ref_doc_id`` / ``document_id``: the store's ``doc_id`` for
    a document's chunk, :data:`NO_DOCUMENT` for a node without a source.

    Args:
        f: The filter.
        build: Its condition on a payload path.
    """
    of_documents = models.Filter(must=[build(DOC_ID, f)], must_not=[sourceless_filter()])
    if not _holds_for_no_document(f):
        return of_documents
    return models.Filter(should=[of_documents, sourceless_filter()])


def _holds_for_no_document(f: MetadataFilter) -> bool:
    """Whether ``f`` holds for the one value :data:`NO_DOCUMENT` (see
    :mod:`llamaindex_m3.filters` for what each operator means)."""
    values = f.value if isinstance(f.value, list) else [f.value]
    op = f.operator
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS, FilterOperator.NE):
        return (f.value == NO_DOCUMENT) != (op is FilterOperator.NE)
    if op in (FilterOperator.IN, FilterOperator.ANY, FilterOperator.NIN):
        return (NO_DOCUMENT in values) != (op is FilterOperator.NIN)
    if op is FilterOperator.ALL:
        return all(v == NO_DOCUMENT for v in values)
    if op is FilterOperator.TEXT_MATCH:
        return isinstance(f.value, str) and f.value in NO_DOCUMENT
    return False  # GT / GTE / LT / LTE (a string never compares), IS_EMPTY (it is a value)
